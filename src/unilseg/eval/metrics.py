"""Referring-segmentation metrics: mIoU, oIoU and Prec@X, overall and by granularity and source.

Definitions (per evaluated text, masks at the original image size):
  IoU      = |pred & gt| / |pred | gt|; 1.0 when both masks are empty (nothing to find, nothing found)
  mIoU     = mean of the per-sample IoUs
  oIoU     = sum of intersections / sum of unions over all samples (large objects weigh more)
  Prec@X   = fraction of samples with IoU >= X, for X in 0.5 ... 0.9

When some ground truth is empty (a text naming nothing in its image), the summary adds an
"absent" section with gRefCOCO's metrics (GRES, Liu et al., CVPR 2023):
  N-acc    = share of empty-target samples whose prediction is empty
  T-acc    = share of samples with a target whose prediction is not empty
  gIoU     = mean per-sample IoU (= mIoU: empty vs empty counts 1); cIoU = cumulative IoU (= oIoU)
and, for the presence score: its ROC AUC for target vs empty target (ties counted half), and
the min score (present = presence >= it) maximising N-acc + T-acc of the evaluated masks.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
DECIMALS = 4  # every quality figure eval prints is a fraction in [0, 1] with this many decimals, as --json holds it


def fraction(value: float | None, width: int = 0) -> str:
    """A quality figure as the tables print it: `value` with DECIMALS decimals ("-" when None), right-aligned
    to `width` characters."""
    text = "-" if value is None else f"{value:.{DECIMALS}f}"
    return f"{text:>{width}}"


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
    """One evaluated (image, text) pair: pixel counts, groups, and the prediction's presence score.

    gt_pixels / pred_pixels (|gt|, |pred|) tell empty masks apart; without them only a union of 0
    is known to be two empty masks."""

    inter: int
    union: int
    granularity: str = "object"
    source: str = ""
    presence: float = 1.0
    gt_pixels: int | None = None
    pred_pixels: int | None = None

    @property
    def iou(self) -> float:
        return iou(self.inter, self.union)

    @property
    def target_empty(self) -> bool:
        return self.union == 0 if self.gt_pixels is None else self.gt_pixels == 0

    @property
    def pred_empty(self) -> bool:
        return self.union == 0 if self.pred_pixels is None else self.pred_pixels == 0


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


def presence_auc(target: np.ndarray, empty: np.ndarray) -> float | None:
    """ROC AUC of scores (N,) with a target against scores (M,) of empty targets: P(a target's score >
    an empty one's), ties counted half (Mann-Whitney U from average ranks). None if either is empty."""
    target, empty = np.asarray(target, float).ravel(), np.asarray(empty, float).ravel()
    if not target.size or not empty.size:
        return None
    values, inverse, counts = np.unique(np.concatenate([target, empty]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, a tie's ranks averaged
    u = ranks[: target.size].sum() - target.size * (target.size + 1) / 2.0
    return float(u / (target.size * empty.size))


def best_min_score(
    scores: np.ndarray, has_target: np.ndarray, found: np.ndarray | None = None
) -> tuple[float, float | None, float | None]:
    """The min score t maximising N-acc + T-acc -> (t, N-acc, T-acc) at t (None: no such samples).

    scores (N,) presence scores; has_target (N,) bool; found (N,) bool: the prediction is not empty
    (None: all). At t a sample counts as found iff found and score >= t (what `min_score` t does to the
    masks); t is 0 (off) or an observed score, the smallest of equally good ones."""
    scores, has_target = np.asarray(scores, float).ravel(), np.asarray(has_target, bool).ravel()
    found = np.ones_like(has_target) if found is None else np.asarray(found, bool).ravel()
    cuts = np.unique(np.concatenate([[0.0], scores]))
    hit_target = np.sort(scores[has_target & found])  # targets found at t: score >= t
    false_alarm = np.sort(scores[~has_target & found])  # empty targets found at t: score >= t
    n_target, n_empty = int(has_target.sum()), int((~has_target).sum())
    t_hits = hit_target.size - np.searchsorted(hit_target, cuts, "left")
    n_hits = n_empty - (false_alarm.size - np.searchsorted(false_alarm, cuts, "left"))
    t_acc = t_hits / n_target if n_target else np.zeros(cuts.size)
    n_acc = n_hits / n_empty if n_empty else np.zeros(cuts.size)
    k = int(np.argmax(t_acc + n_acc))  # the first maximum: the smallest such t
    return (float(cuts[k]), float(n_acc[k]) if n_empty else None, float(t_acc[k]) if n_target else None)


def absent_stats(records: list[Record]) -> dict[str, Any]:
    """gRefCOCO's metrics of records some of which have empty targets (see the module docstring)."""
    empty = np.array([r.target_empty for r in records], bool)
    found = np.array([not r.pred_empty for r in records], bool)
    scores = np.array([r.presence for r in records], float)
    overall = stats(records)
    cut, cut_n, cut_t = best_min_score(scores, ~empty, found)
    return {
        "empty_targets": int(empty.sum()), "targets": int((~empty).sum()),
        "N-acc": float((~found[empty]).mean()) if empty.any() else None,
        "T-acc": float(found[~empty].mean()) if (~empty).any() else None,
        "gIoU": overall["mIoU"], "cIoU": overall["oIoU"],
        "presence_auc": presence_auc(scores[~empty], scores[empty]),
        "best_min_score": cut, "best_N-acc": cut_n, "best_T-acc": cut_t,
    }


def summarize(records: Iterable[Record]) -> dict[str, Any]:
    """{'overall': stats, 'granularity': {name: stats}, 'source': {name: stats}}, and 'absent' (`absent_stats`)
    when some target is empty."""
    records = list(records)
    out: dict[str, Any] = {"overall": stats(records), "granularity": {}, "source": {}}
    for key in ("granularity", "source"):
        for name in sorted({getattr(r, key) for r in records}):
            out[key][name] = stats([r for r in records if getattr(r, key) == name])
    if any(r.target_empty for r in records):
        out["absent"] = absent_stats(records)
    return out


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table, one row per group: the count, then fractions (`fraction`)."""
    cols = ["count", "mIoU", "oIoU", *(f"prec@{t}" for t in THRESHOLDS)]
    rows = [("overall", summary["overall"])]
    for key in ("granularity", "source"):
        if len(summary[key]) > 1 or key == "granularity":
            rows += [(f"{key}={name}", s) for name, s in summary[key].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    for name, s in rows:
        cells = [f"{s.get('count', 0):>8}"]
        cells += [fraction(s.get(c), 8) for c in cols[1:]]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def format_absent_table(summary: dict[str, Any]) -> str:
    """The "absent" section as plain text (fractions, `fraction`; "" when the summary has none)."""
    a = summary.get("absent")
    if a is None:
        return ""

    cols = ["empty", "target", "N-acc", "T-acc", "gIoU", "cIoU", "AUC"]
    head = f"{'':<6}  " + "  ".join(f"{c:>8}" for c in cols)
    row = "absent  " + "  ".join([f"{a['empty_targets']:>8}", f"{a['targets']:>8}",
                                   *(fraction(a[k], 8) for k in ("N-acc", "T-acc", "gIoU", "cIoU", "presence_auc"))])
    cut = a["best_min_score"]
    best = (f"best min score {cut:.4f} " + ("(off; " if cut == 0 else "(a presence below it empties the mask; ")
            + f"N-acc {fraction(a['best_N-acc'])}, T-acc {fraction(a['best_T-acc'])} there)")
    return "\n".join([head, row, best])
