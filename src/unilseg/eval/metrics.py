"""Referring-segmentation metrics: mIoU, oIoU and Prec@X, overall and by granularity and source.

Definitions (per evaluated text, masks at the original image size):
  IoU      = |pred & gt| / |pred | gt|; 1.0 when both masks are empty (nothing to find, nothing found)
  mIoU     = mean of the per-sample IoUs
  oIoU     = sum of intersections / sum of unions over all samples (large objects weigh more)
  Prec@X   = fraction of samples with IoU >= X, for X in 0.5 ... 0.9
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts |pred & gt| and |pred | gt| of two bool masks of the same shape."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    pred, gt = pred.astype(bool), gt.astype(bool)
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def iou(inter: int, union: int) -> float:
    return 1.0 if union == 0 else inter / union


@dataclass(frozen=True)
class Record:
    """One evaluated (image, text) pair."""

    inter: int
    union: int
    granularity: str = "object"
    source: str = ""

    @property
    def iou(self) -> float:
        return iou(self.inter, self.union)


def stats(records: list[Record]) -> dict[str, float]:
    """{'count', 'mIoU', 'oIoU', 'prec@0.5', ..., 'prec@0.9'} of a list of records (IoUs as fractions)."""
    if not records:
        return {"count": 0}
    ious = np.array([r.iou for r in records])
    inter = sum(r.inter for r in records)
    union = sum(r.union for r in records)
    out = {"count": len(records), "mIoU": float(ious.mean()), "oIoU": iou(inter, union)}
    for t in THRESHOLDS:
        out[f"prec@{t}"] = float(np.mean(ious >= t - 1e-12))  # an IoU of exactly t counts as a hit
    return out


def summarize(records: Iterable[Record]) -> dict[str, Any]:
    """{'overall': stats, 'granularity': {name: stats}, 'source': {name: stats}}."""
    records = list(records)
    out: dict[str, Any] = {"overall": stats(records), "granularity": {}, "source": {}}
    for key in ("granularity", "source"):
        for name in sorted({getattr(r, key) for r in records}):
            out[key][name] = stats([r for r in records if getattr(r, key) == name])
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table, percentages with two decimals, one row per group."""
    cols = ["count", "mIoU", "oIoU", *(f"prec@{t}" for t in THRESHOLDS)]
    rows = [("overall", summary["overall"])]
    for key in ("granularity", "source"):
        if len(summary[key]) > 1 or key == "granularity":
            rows += [(f"{key}={name}", s) for name, s in summary[key].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    for name, s in rows:
        cells = [f"{s.get('count', 0):>8}"]
        cells += [f"{100 * s[c]:>8.2f}" if c in s else f"{'-':>8}" for c in cols[1:]]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)
