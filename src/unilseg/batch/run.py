"""Running a batch: the one loop every front end shares.

`predict_items` groups items by image, encodes `batch_size` images per Swin batch, decodes
their (image, text) pairs in batches of the predictor's `max_batch` and yields one
`ItemResult` per item. `run_batch` adds resume, writing and the results log on top.
A failing item (unreadable image, empty expression, a write error) is reported and the
run goes on; finished work is on disk (atomic files) and in the log as each item ends.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.batch.plan import Item, OutputOptions
from unilseg.batch.results import ResultsLog, row_of
from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Prediction, Predictor, to_prediction
from unilseg.inference.transforms import read_image
from unilseg.io.paths import check_regular, shown
from unilseg.io.writers import write_prediction

Loader = Callable[[Hashable], np.ndarray]  # an item's `image` -> BGR uint8 (H, W, 3)


@dataclass
class ItemResult:
    """What became of one item."""

    item: Item
    prediction: Prediction | None  # None when it failed
    error: str | None
    seconds: float  # its share of encode + decode (+ write, in run_batch)
    image: np.ndarray | None = None  # BGR (H, W, 3), for overlays


@dataclass
class BatchReport:
    """What a run did: items done, skipped (already there) and failed (with the reason)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Item, str]] = field(default_factory=list)
    results: Path | None = None


def predict_items(
    predictor: Predictor, items: Sequence[Item], batch_size: int = 1, load: Loader = read_image
) -> Iterator[ItemResult]:
    """Predict every item (images in order of first appearance) -> one ItemResult each, as they finish."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(item.image, []).append(item)
    images = list(groups)
    for start in range(0, len(images), batch_size):
        chunk: list[tuple[np.ndarray, list[Item]]] = []
        for key in images[start : start + batch_size]:
            todo = []
            for item in groups[key]:
                if item.error is not None:
                    yield ItemResult(item, None, item.error, 0.0)
                else:
                    todo.append(item)
            if not todo:
                continue
            t0 = time.perf_counter()
            try:
                bgr = load(key)
            except UnilsegError as e:
                for item in todo:
                    yield ItemResult(item, None, str(e), time.perf_counter() - t0)
                continue
            chunk.append((bgr, todo))
        if chunk:
            yield from _predict_chunk(predictor, chunk)


def _predict_chunk(predictor: Predictor, chunk: list[tuple[np.ndarray, list[Item]]]) -> Iterator[ItemResult]:
    """Encode the chunk's images as one batch, decode its pairs in batches of predictor.max_batch."""
    t0 = time.perf_counter()
    pending = [item for _, todo in chunk for item in todo]
    try:
        embeddings = predictor.embed([bgr for bgr, _ in chunk])
    except Exception as e:  # e.g. out of memory: these items fail, the run goes on
        for item in pending:
            yield ItemResult(item, None, describe(e), 0.0)
        return
    encode_share = (time.perf_counter() - t0) / len(pending)
    pairs = [(emb, bgr, item) for emb, (bgr, todo) in zip(embeddings, chunk) for item in todo]
    for start in range(0, len(pairs), predictor.max_batch):
        part = pairs[start : start + predictor.max_batch]
        t1 = time.perf_counter()
        try:
            logits = predictor.pair_logits([emb for emb, _, _ in part], [item.expression for _, _, item in part])
        except Exception as e:
            for _, bgr, item in part:
                yield ItemResult(item, None, describe(e), encode_share, bgr)
            continue
        decode_share = (time.perf_counter() - t1) / len(part)
        for (emb, bgr, item), lg in zip(part, logits):
            t2 = time.perf_counter()
            pred = to_prediction(item.expression, lg, emb, predictor.threshold)
            yield ItemResult(item, pred, None, encode_share + decode_share + time.perf_counter() - t2, bgr)


def run_batch(
    predictor: Predictor | Callable[[], Predictor],
    items: Sequence[Item],
    options: OutputOptions | None = None,
    *,
    results: str | Path | None = None,
    skip_existing: bool = False,
    batch_size: int | None = None,
    load: Loader = read_image,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchReport:
    """Segment `items` (see `plan_items`) and write each one's outputs -> what was done, skipped, failed.

    predictor: a Predictor, or a function making one; it is called only if some item has
    work left, so a finished run loads no model. results: path of a `results.jsonl` to
    keep (one row per item). skip_existing: items whose outputs all exist are skipped.
    batch_size: images per Swin batch (default 1 on CPU, 4 on a GPU). report: where
    per-item failures are told (default: stderr). on_result: called with each ItemResult.
    """
    options = options or OutputOptions()
    say = report or (lambda line: print(line, file=sys.stderr))
    skipped, todo = split_done(items, skip_existing)
    out = BatchReport(skipped=len(skipped), results=Path(results) if results is not None else None)
    if results is not None and skip_existing and os.path.lexists(results):
        check_regular(results, "results log")  # before the model loads: a FIFO there would block the run
    if any(item.error is None for item in todo) and not isinstance(predictor, Predictor):
        predictor = predictor()
    log = open_results(results, skipped, skip_existing)
    if batch_size is None:
        batch_size = 4 if isinstance(predictor, Predictor) and predictor.device.type != "cpu" else 1
    from tqdm import tqdm

    with tqdm(total=len(todo), unit="item", file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
        tell = (lambda line: tqdm.write(line, file=sys.stderr)) if progress and report is None else say
        for r in predict_items(predictor, todo, batch_size, load):  # type: ignore[arg-type]
            if r.prediction is not None and r.item.output is not None:
                t0 = time.perf_counter()
                try:
                    r.item.check_confined()  # again: a symlink may have appeared since planning
                    write_prediction(r.item.output, r.prediction.mask, options.fmt, prob=r.prediction.prob,
                                     prob_path=r.item.prob_path, image_bgr=r.image, overlay_path=r.item.overlay_path)
                except Exception as e:
                    r.error, r.prediction = describe(e), None
                r.seconds += time.perf_counter() - t0
            if r.error is not None:
                out.failed.append((r.item, r.error))
                tell(shown(f"failed: {r.item.image} {r.item.expression!r}: {r.error}"))
            else:
                out.done += 1
            if log is not None:
                log.append(result_row(r))
            if on_result is not None:
                on_result(r)
            bar.update(1)
    if log is not None:
        log.finish(items)
    return out


def split_done(items: Sequence[Item], skip_existing: bool) -> tuple[list[Item], list[Item]]:
    """-> (skipped, todo): with skip_existing, items whose outputs all exist are skipped."""
    done = [skip_existing and item.error is None and item.is_done() for item in items]
    return [i for i, d in zip(items, done) if d], [i for i, d in zip(items, done) if not d]


def open_results(results: str | Path | None, skipped: Sequence[Item], keep_existing: bool) -> ResultsLog | None:
    """The run's results log (None: no log), with a row for each skipped item that has none yet."""
    if results is None:
        return None
    log = ResultsLog(results, keep_existing=keep_existing)
    for item in skipped:
        log.note_skipped(row_of(item))
    return log


def result_row(r: ItemResult) -> dict[str, Any]:
    """The results row of a finished item: score and foreground share (rounded) when it has a mask."""
    pred = r.prediction
    return row_of(r.item, None if pred is None else round(pred.score, 6),
                  None if pred is None else round(float(pred.mask.mean()), 6), r.seconds, r.error)


def describe(e: BaseException) -> str:
    """An exception -> one line for a results row."""
    if isinstance(e, UnilsegError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
