"""Presence scores: how sure the model is that what an instruction names is in the image at all.

UniLSeg-20 has no presence head, so the score is a statistic of the soft map. The
candidates below were compared on generated scenes with no-target instructions
(`scripts/presence_scores.py`, table in docs/absent-targets.md); `PRESENCE` names the one kept.
Each takes the soft map (H, W) float32 and the mask (H, W) bool, and returns a number in
[0, 1]: pixel values are clipped to [0, 1] (the cubic warp can overshoot). The peak clips
only its result (the same number), so the kept statistic copies no map per prediction.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

MIN_TOP_PIXELS = 16  # a top-k mean never averages fewer pixels than this


def _top_mean(prob: np.ndarray, share: float) -> float:
    flat = np.clip(prob.ravel(), 0.0, 1.0)
    k = min(flat.size, max(MIN_TOP_PIXELS, int(round(share * flat.size))))
    return float(np.partition(flat, flat.size - k)[flat.size - k:].mean())


STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "peak": lambda prob, mask: float(np.clip(prob.max(), 0.0, 1.0)),  # the most confident pixel
    "top1%": lambda prob, mask: _top_mean(prob, 0.01),  # mean of the top 1% of pixels
    "top5%": lambda prob, mask: _top_mean(prob, 0.05),
    "mask mean": lambda prob, mask: float(np.clip(prob[mask], 0.0, 1.0).mean()) if mask.any() else 0.0,  # `score`
}
PRESENCE = "peak"  # best ROC AUC with the shipped demo (docs/absent-targets.md)


def presence_score(prob: np.ndarray, mask: np.ndarray, statistic: str = PRESENCE) -> float:
    """The presence score (in [0, 1]) of a soft map (H, W) and its mask (H, W) bool."""
    if prob.size == 0:
        return 0.0
    return STATISTICS[statistic](prob, mask)
