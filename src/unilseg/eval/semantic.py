"""Semantic evaluation: a label map per image (`tasks.labelmap.label_map`) against a ground-truth label map.

Definitions, over all pixels of all images (indices: 0 background, 1..K the classes):
  IoU_c          = |pred == c & gt == c| / |pred == c | gt == c|, summed over the data set first
  mIoU           = mean of IoU_c over the classes that occur (in the ground truth or the prediction)
  pixel accuracy = fraction of pixels whose predicted index equals the ground truth's
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unilseg.batch.labels import LabelStep
from unilseg.batch.run import step_results
from unilseg.errors import UnilsegError
from unilseg.eval.metrics import fraction
from unilseg.inference.predictor import Predictor
from unilseg.io.progress import progress_bar
from unilseg.tasks.labelmap import ClassSpec


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) int64 pixel counts, rows = ground-truth index, columns = predicted index."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    n = num_classes + 1
    flat = gt.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=n * n).reshape(n, n)


def semantic_summary(matrix: np.ndarray, classes: Sequence[ClassSpec], images: int) -> dict[str, Any]:
    """A confusion matrix -> {'images', 'pixels', 'mIoU', 'pixel_accuracy', 'classes': [{name, instruction,
    iou (None if the class never occurs), inter, union}]}."""
    inter = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - inter
    rows = []
    for k, c in enumerate(classes, start=1):
        iou = float(inter[k] / union[k]) if union[k] else None
        rows.append({"name": c.name, "instruction": c.instruction, "iou": iou, "inter": int(inter[k]),
                     "union": int(union[k])})
    ious = [r["iou"] for r in rows if r["iou"] is not None]
    total = int(matrix.sum())
    return {"images": images, "pixels": total, "mIoU": float(np.mean(ious)) if ious else None,
            "pixel_accuracy": float(inter.sum() / total) if total else None, "classes": rows}


def evaluate_semantic(
    predictor: Predictor, items: Sequence[tuple[np.ndarray, np.ndarray, str]], classes: Sequence[ClassSpec],
    batch_size: int = 8, limit: int | None = None, progress: bool = False,
) -> dict[str, Any]:
    """Score label maps over `items` (image RGB uint8 (H, W, 3), ground-truth indices (H, W), id) -> summary.

    Runs the label-map step of a batch job (`LabelStep`, label maps kept in memory): Swin
    once per image (batch_size images at a time); the classes' instructions encoded once.
    """
    count = len(items) if limit is None else min(limit, len(items))
    matrix = np.zeros((len(classes) + 1,) * 2, np.int64)
    step = LabelStep(list(classes))
    step.prepare(predictor)
    scenes = [_Scene(i) for i in range(count)]
    bar = progress_bar(count, "image", desc="eval", enabled=progress)
    try:
        for r in step_results(predictor, scenes, step, batch_size,
                              load=lambda i: np.ascontiguousarray(items[i][0][:, :, ::-1])):  # RGB -> BGR
            if r.error is not None:
                raise UnilsegError(r.error)
            matrix += confusion(items[r.item.image][1], r.prediction[0], len(classes))
            bar.update(1)
    finally:
        bar.close()
    return semantic_summary(matrix, classes, count)


@dataclass
class _Scene:
    """An image of the set as a label-map step's item (kept in memory: no files)."""

    image: int  # its position in `items`
    error: str | None = None


def format_semantic_table(summary: dict[str, Any]) -> str:
    """Plain text: one row per class (its IoU), then mIoU and pixel accuracy; fractions (`metrics.fraction`)."""
    rows = [(r["name"], r["instruction"], fraction(r["iou"])) for r in summary["classes"]]
    w_name = max(5, *(len(n) for n, _, _ in rows))
    w_inst = max(11, *(len(i) for _, i, _ in rows))
    lines = [f"{'class':<{w_name}}  {'instruction':<{w_inst}}  {'IoU':>6}"]
    lines += [f"{n:<{w_name}}  {i:<{w_inst}}  {v:>6}" for n, i, v in rows]
    lines.append(f"{'mIoU':<{w_name}}  {'':<{w_inst}}  {fraction(summary['mIoU'], 6)}")
    lines.append(f"{'pixel accuracy':<{w_name + w_inst + 2}}  {fraction(summary['pixel_accuracy'], 6)}")
    return "\n".join(lines)
