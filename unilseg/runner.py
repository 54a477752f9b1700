"""Running a planned batch: read images, encode them in groups, decode all their pairs, write.

Each image is encoded once for all its expressions; `batch_size` images share one Swin
batch. A failing item (unreadable image, empty expression, a write error) is logged and
the run goes on; finished work is on disk (atomic files) and in `results.jsonl` as soon
as each item ends.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .batch import PROB_SUFFIX, Item, ResultsLog
from .errors import UnilsegError
from .outputs import write_prediction
from .predictor import Predictor, to_prediction
from .transforms import read_image


@dataclass
class BatchOptions:
    fmt: str = "png"  # png | npy | rle-json
    save_prob: bool = False
    overlay_ext: str | None = None  # 'jpg' | 'png' | None
    batch_size: int = 1  # images per Swin batch
    threshold: float | None = None  # None: the predictor's


def run_items(
    predictor: Predictor, items: Sequence[Item], options: BatchOptions, results: ResultsLog,
    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr), progress: Any = None,
) -> int:
    """Process `items` (grouped by image, in order of first appearance) -> number of failed items."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.image, []).append(item)
    images = list(groups)
    failed = 0

    def finish(item: Item, seconds: float, pred=None, error: str | None = None) -> None:
        nonlocal failed
        row: dict[str, Any] = {
            "image": item.image, "expression": item.expression, "output": str(item.output),
            "score": None if pred is None else round(pred.score, 6),
            "foreground": None if pred is None else round(float(pred.mask.mean()), 6),
            "seconds": round(seconds, 4), "error": error,
        }
        if error is not None:
            failed += 1
            report(f"failed: {item.image} {item.expression!r}: {error}")
        results.append(row)
        if progress is not None:
            progress.update(1)

    for start in range(0, len(images), options.batch_size):
        chunk: list[tuple[np.ndarray, list[Item]]] = []
        for image in images[start : start + options.batch_size]:
            todo = []
            for item in groups[image]:
                if item.error is not None:
                    finish(item, 0.0, error=item.error)
                else:
                    todo.append(item)
            if not todo:
                continue
            t0 = time.perf_counter()
            try:
                bgr = read_image(image)
            except UnilsegError as e:
                for item in todo:
                    finish(item, time.perf_counter() - t0, error=str(e))
                continue
            chunk.append((bgr, todo))
        if chunk:
            _run_chunk(predictor, chunk, options, finish)
    return failed


def _run_chunk(predictor: Predictor, chunk: list[tuple[np.ndarray, list[Item]]], options: BatchOptions,
               finish: Callable[..., None]) -> None:
    """Encode the chunk's images as one batch, decode its pairs in batches of predictor.max_batch, write."""
    t0 = time.perf_counter()
    pending = [item for _, todo in chunk for item in todo]
    try:
        embeddings = predictor.embed([bgr for bgr, _ in chunk])
    except Exception as e:  # e.g. out of memory: these items fail, the run goes on
        for item in pending:
            finish(item, 0.0, error=_describe(e))
        return
    encode_share = (time.perf_counter() - t0) / len(pending)
    pairs = [(emb, bgr, item) for emb, (bgr, todo) in zip(embeddings, chunk) for item in todo]
    threshold = predictor.threshold if options.threshold is None else options.threshold
    for start in range(0, len(pairs), predictor.max_batch):
        part = pairs[start : start + predictor.max_batch]
        t1 = time.perf_counter()
        try:
            logits = predictor.pair_logits([emb for emb, _, _ in part], [item.expression for _, _, item in part])
        except Exception as e:
            for _, _, item in part:
                finish(item, encode_share, error=_describe(e))
            continue
        decode_share = (time.perf_counter() - t1) / len(part)
        for (emb, bgr, item), lg in zip(part, logits):
            t2 = time.perf_counter()
            try:
                pred = to_prediction(item.expression, lg, emb, threshold)
                write_prediction(
                    item.output, pred.mask, options.fmt,
                    prob=pred.prob, prob_path=item.sidecar(PROB_SUFFIX) if options.save_prob else None,
                    image_bgr=bgr,
                    overlay_path=item.sidecar(f".overlay.{options.overlay_ext}") if options.overlay_ext else None,
                )
            except Exception as e:
                finish(item, encode_share + decode_share + time.perf_counter() - t2, error=_describe(e))
                continue
            finish(item, encode_share + decode_share + time.perf_counter() - t2, pred=pred)


def _describe(e: BaseException) -> str:
    if isinstance(e, UnilsegError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
