"""Run a model over Samples and score its masks the way the inference CLI makes them.

Each text is letterboxed and predicted at the config's input size; its logits are
mapped back to the original image (`postprocess`, threshold from the config) and
compared there with the ground-truth mask.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data.dataset import EvalDataset, InputSpec, collate_eval
from ..data.manifest import Sample
from ..transforms import postprocess
from .metrics import Record, intersection_union, summarize


@torch.no_grad()
def evaluate(
    model: nn.Module, samples: Sequence[Sample], spec: InputSpec, threshold: float, device: torch.device | str = "cpu",
    batch_size: int = 8, workers: int = 0, limit: int | None = None, progress: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Score every (sample, text) pair (the first `limit` of them if given) -> `summarize` output.

    on_record, if given, receives each per-text result: id, text, granularity, source, inter, union, iou.
    """
    dataset = EvalDataset(samples, spec)
    if limit is not None:
        dataset.items = dataset.items[:limit]
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_eval)
    was_training = model.training
    model.eval()
    records = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset), desc="eval", unit="text", dynamic_ncols=True)
    try:
        for batch in loader:
            logits = model(batch["image"].to(device), batch["tokens"].to(device)).float().cpu()
            for i, gt in enumerate(batch["gt"]):
                pred, _ = postprocess(logits[i : i + 1], batch["inverse"][i], gt.shape, threshold)
                inter, union = intersection_union(pred, gt)
                rec = Record(inter, union, batch["granularity"][i], batch["source"][i])
                records.append(rec)
                if on_record is not None:
                    on_record({"id": batch["id"][i], "text": batch["text"][i], "granularity": rec.granularity,
                               "source": rec.source, "inter": inter, "union": union, "iou": rec.iou})
            if bar is not None:
                bar.update(len(batch["gt"]))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    return summarize(records)
