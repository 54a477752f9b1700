"""Masks: the task step from image embeddings and texts to one Prediction per (image, text) pair.

The batch job, the evaluation and the video task all run masks through `segment_pairs`;
pairs of several images share the predictor's decoder batches (`max_batch` pairs each).
"""
from __future__ import annotations

from collections.abc import Sequence

from unilseg.inference.predictor import EncodedTexts, ImageEmbedding, Prediction, Predictor, to_prediction


def segment_pairs(
    predictor: Predictor, embeddings: Sequence[ImageEmbedding], texts: Sequence[str] | EncodedTexts,
    threshold: float | None = None,
) -> list[Prediction]:
    """P (image, text) pairs -> P Predictions (mask = soft map > threshold, default the predictor's)."""
    threshold = predictor.threshold if threshold is None else threshold
    logits = predictor.pair_logits(embeddings, texts)
    names = texts.texts if isinstance(texts, EncodedTexts) else list(texts)
    return [to_prediction(t, lg, e, threshold) for t, lg, e in zip(names, logits, embeddings)]
