"""Score a predictor's masks against ground truth, made exactly as the inference CLI makes them.

Evaluation goes through the one inference path (`unilseg.batch.predict_items` over a
`Predictor`): letterbox, logits, inverse warp to the original image, soft map > threshold;
each mask is compared there with the ground-truth mask.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from unilseg.batch import Item, predict_items
from unilseg.data.manifest import Sample, load_image, load_mask
from unilseg.errors import UnilsegError
from unilseg.eval.metrics import Record, intersection_union, summarize
from unilseg.inference.predictor import Predictor
from unilseg.io.progress import progress_bar


def evaluate(
    predictor: Predictor, samples: Sequence[Sample], batch_size: int = 8, limit: int | None = None,
    progress: bool = False, on_record: Callable[[dict[str, Any]], None] | None = None,
    min_score: float | None = None,
) -> dict[str, Any]:
    """Score every (sample, text) pair (the first `limit` of them if given) -> `summarize` output.

    batch_size: images per Swin batch. on_record, if given, receives each per-text result:
    id, text, granularity, source, inter, union, iou, presence (rounded to 6 places), present (the
    min score let the mask stand), target_empty. min_score: presence below it empties a mask (None: the
    predictor's; 0: off).
    """
    items: list[Item] = []
    for i, sample in enumerate(samples):
        if limit is not None and len(items) >= limit:
            break
        items += [Item(len(items) + j, i, text) for j, text in enumerate(sample.expressions)]
    items = items[:limit]
    records = []
    bar = None
    if progress:
        bar = progress_bar(len(items), "text", desc="eval")
    try:
        for r in predict_items(predictor, items, batch_size, load=lambda i: load_image(samples[i]),
                               min_score=min_score):
            if r.error is not None:
                raise UnilsegError(r.error)
            sample = samples[r.item.image]
            pred = r.prediction
            gt = load_mask(sample, pred.mask.shape)
            inter, union = intersection_union(pred.mask, gt)
            rec = Record(inter, union, sample.granularity, sample.source, pred.presence,
                         int(np.count_nonzero(gt)), int(np.count_nonzero(pred.mask)))
            records.append(rec)
            if on_record is not None:
                on_record({"id": sample.id, "text": r.item.expression, "granularity": rec.granularity,
                           "source": rec.source, "inter": inter, "union": union, "iou": rec.iou,
                           "presence": round(pred.presence, 6), "present": bool(pred.present),
                           "target_empty": rec.target_empty})
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return summarize(records)
