"""Running a job: the one loop every job kind and front end shares (local, Ray actors).

`run_job(predictor, items, step)` skips items found done (`skip_existing`), makes the
predictor on first need (from a factory), groups items by image, loads `batch_size`
images per chunk, hands each chunk to the task `step` (masks: `MaskStep`; label maps:
`batch.labels.LabelStep`), writes each result's files, logs its results row and counts
it, with one progress bar. A failing item (unreadable image, empty expression, a write
error) is reported and the run goes on; finished work is on disk (atomic files) and in
the log as each item ends. Items may also stream in from an iterator (video frames, whose
count may be unknown): then each is checked for done as it comes, and results come out in
item order, the done ones included. `predict_items` is the mask step without writing, for callers
that keep masks in memory; `run_batch` is `run_job` with a MaskStep.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Generator, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unilseg.batch.plan import Item, OutputOptions
from unilseg.batch.results import RESULT_ROW, ResultsLog, by_output, results_row, row_of
from unilseg.batch.sinks import AnnotateOptions, AnnotationLog, failed_record, make_record
from unilseg.errors import UnilsegError
from unilseg.inference.predictor import ImageEmbedding, Predictor
from unilseg.inference.transforms import read_image
from unilseg.io.paths import check_regular, shown
from unilseg.io.progress import progress_bar, progress_write
from unilseg.io.writers import write_prediction

Loader = Callable[[Hashable], np.ndarray]  # an item's `image` -> BGR uint8 (H, W, 3)
PredictorSource = Predictor | Callable[[], Predictor]  # a Predictor, or a factory called on first need


@dataclass
class ItemResult:
    """What became of one item."""

    item: Any  # an Item (masks), a LabelItem (label maps), ...: what the step plans
    prediction: Any  # the step's result (masks: a Prediction; label maps: (labels, legend)); None when it failed
    error: str | None
    seconds: float  # its share of encode + decode (+ write, in run_job)
    image: np.ndarray | None = None  # BGR (H, W, 3), for overlays
    row: dict[str, Any] | None = None  # its results row, once run_job has written it
    skipped: bool = False  # a streamed item found done (prediction None)
    record: dict[str, Any] | None = None  # its annotations for the job's sinks (batch.sinks), once written


class StopJob(Exception):
    """Raised by a step's `write` to stop the whole job with `error` (run_job raises it) instead of
    failing one item: for outputs that later items build on (a video's overlay, its frames file)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class BatchReport:
    """What a run did: items done, skipped (already there) and failed (with the reason)."""

    done: int = 0
    skipped: int = 0
    failed: list[tuple[Any, str]] = field(default_factory=list)
    results: Path | None = None


class Step(Protocol):
    """A task step of the job loop: what one kind of job does with a chunk of loaded images.

    An item has `image` (the loader's key), `error` (a planning failure, or None), `output`
    and `is_done()`. `prepare` runs once the predictor is made (e.g. encodes the texts
    every image shares); `predict` turns a chunk of (BGR image, its items) into one
    ItemResult per item; `write` writes a result's files (raising on failure: the item
    fails; raising StopJob: the job stops); `row` is a result's results row, `skipped_row`
    the row of an item found done; `failure` the line that tells an item failed. With
    streamed items, `write` also gets each item found done (`skipped`, prediction None), for
    files that follow every item (a video's overlay). Optional: `row_schema` (what a
    resumed run relies on in a row; default RESULT_ROW), `row_key` (a row's identity;
    default its output), and `annotate` (AnnotateOptions or None) with `record(r)`: a
    written result's annotations for the job's sinks (COCO, Label Studio).
    """

    unit: str  # what the progress bar counts

    def prepare(self, predictor: Predictor) -> None: ...

    def predict(self, predictor: Predictor, chunk: list[tuple[np.ndarray, list[Any]]]) -> Iterator[ItemResult]: ...

    def write(self, r: ItemResult) -> None: ...

    def row(self, r: ItemResult) -> dict[str, Any]: ...

    def skipped_row(self, item: Any) -> dict[str, Any]: ...

    def failure(self, item: Any, error: str) -> str: ...


@dataclass
class MaskStep:
    """Masks: each (image, expression) item -> a Prediction, written as its mask (+ soft map, overlay) files."""

    options: OutputOptions = field(default_factory=OutputOptions)
    annotate: AnnotateOptions | None = None  # make each result's record for the job's sinks (COCO, ...)
    unit: str = "item"
    min_score: float | None = None  # presence below it: an empty mask (None: the predictor's; 0: off)

    def prepare(self, predictor: Predictor) -> None:
        pass

    def predict(self, predictor: Predictor, chunk: list[tuple[np.ndarray, list[Item]]]) -> Iterator[ItemResult]:
        """Encode the chunk's images as one batch, decode its pairs in batches of predictor.max_batch."""
        embeddings, encode_share = yield from embed_chunk(predictor, chunk)
        if embeddings is None:
            return
        pairs = [(emb, bgr, item) for emb, (bgr, todo) in zip(embeddings, chunk) for item in todo]
        for start in range(0, len(pairs), predictor.max_batch):
            part = pairs[start : start + predictor.max_batch]
            t1 = time.perf_counter()
            try:
                preds = predictor.predict_pairs([emb for emb, _, _ in part], [item.expression for _, _, item in part],
                                                min_score=self.min_score)
            except Exception as e:
                for _, bgr, item in part:
                    yield ItemResult(item, None, describe(e), encode_share, bgr)
                continue
            share = encode_share + (time.perf_counter() - t1) / len(part)
            for (_, bgr, item), pred in zip(part, preds):
                yield ItemResult(item, pred, None, share, bgr)

    def write(self, r: ItemResult) -> None:
        if r.item.output is None or r.prediction is None:
            return
        r.item.check_confined()  # again: a symlink may have appeared since planning
        write_prediction(r.item.output, r.prediction.mask, self.options.fmt, prob=r.prediction.prob,
                         prob_path=r.item.prob_path, image_bgr=r.image, overlay_path=r.item.overlay_path)

    def record(self, r: ItemResult) -> dict[str, Any]:
        pred = r.prediction
        return make_record(r.item, pred.mask.shape, [(r.item.expression, pred.mask, pred.prob, pred.presence)],
                           self.annotate or AnnotateOptions())

    def row(self, r: ItemResult) -> dict[str, Any]:
        return result_row(r)

    def skipped_row(self, item: Item) -> dict[str, Any]:
        return row_of(item)

    def failure(self, item: Item, error: str) -> str:
        return f"failed: {item.image} {item.expression!r}: {error}"


def embed_chunk(predictor: Predictor, chunk: list[tuple[np.ndarray, list[Any]]]
                ) -> Generator[ItemResult, None, tuple[list[ImageEmbedding] | None, float]]:
    """Run Swin once on a chunk's images -> (their embeddings, each item's share of the seconds).

    If that fails (e.g. out of memory) it yields a failed ItemResult per item and returns
    (None, 0): these items fail, the run goes on. Use with `yield from` in a step's predict.
    """
    t0 = time.perf_counter()
    pending = [item for _, todo in chunk for item in todo]
    try:
        embeddings = predictor.embed([bgr for bgr, _ in chunk])
    except Exception as e:
        for item in pending:
            yield ItemResult(item, None, describe(e), 0.0)
        return None, 0.0
    return embeddings, (time.perf_counter() - t0) / len(pending)


def chunks(items: Sequence[Any], batch_size: int, load: Loader) -> Iterator[ItemResult | list[tuple[np.ndarray, list]]]:
    """Group items by image (in order of first appearance), `batch_size` images a chunk, each image loaded
    once -> a chunk [(BGR image, its items)] at a time, or an ItemResult for an item that failed already
    (planning) or whose image could not be read."""
    groups: dict[Hashable, list[Any]] = {}
    for item in items:
        groups.setdefault(item.image, []).append(item)
    images = list(groups)
    for start in range(0, len(images), batch_size):
        chunk: list[tuple[np.ndarray, list[Any]]] = []
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
            yield chunk


def step_results(predictor: Predictor, items: Sequence[Any], step: Step, batch_size: int = 1,
                 load: Loader = read_image) -> Iterator[ItemResult]:
    """Run `step` over every item (prepared already) -> one ItemResult each, as they finish; nothing written."""
    for part in chunks(items, batch_size, load):
        if isinstance(part, ItemResult):
            yield part
        else:
            yield from step.predict(predictor, part)


def stream_results(predictor: Predictor, items: Iterable[Any], step: Step, batch_size: int = 1,
                   load: Loader = read_image, skip_existing: bool = False) -> Iterator[ItemResult]:
    """Run `step` over streamed items (prepared already) -> one ItemResult each, in item order; nothing written.

    Items of one image come one after another; `batch_size` images with work make a chunk.
    With skip_existing an item whose outputs all exist gets a `skipped` result in its place.
    """
    pending: list[tuple[Any, str]] = []  # the chunk's items in order: (item, "todo" | "done" | "failed")
    groups: dict[Hashable, list[Any]] = {}  # the chunk's images -> their items with work

    def flush() -> Iterator[ItemResult]:
        found: dict[int, ItemResult] = {}
        chunk = []
        for key, todo in groups.items():
            t0 = time.perf_counter()
            try:
                chunk.append((load(key), todo))
            except UnilsegError as e:
                for item in todo:
                    found[id(item)] = ItemResult(item, None, str(e), time.perf_counter() - t0)
        if chunk:
            for r in step.predict(predictor, chunk):
                found[id(r.item)] = r
        for item, state in pending:
            if state == "todo":
                yield found[id(item)]
            else:
                yield ItemResult(item, None, item.error, 0.0, skipped=state == "done")
        pending.clear()
        groups.clear()

    for item in items:
        if item.error is not None:
            pending.append((item, "failed"))
        elif skip_existing and item.is_done():
            pending.append((item, "done"))
        else:
            if item.image not in groups and len(groups) >= batch_size:
                yield from flush()
            groups.setdefault(item.image, []).append(item)
            pending.append((item, "todo"))
    yield from flush()


def predict_items(
    predictor: Predictor, items: Sequence[Item], batch_size: int = 1, load: Loader = read_image,
    min_score: float | None = None,
) -> Iterator[ItemResult]:
    """Predict every mask item (images in order of first appearance) -> one ItemResult each, as they finish.
    min_score: presence below it empties a mask (None: the predictor's; 0: off)."""
    return step_results(predictor, items, MaskStep(min_score=min_score), batch_size, load)


def run_job(
    predictor: PredictorSource,
    items: Iterable[Any],
    step: Step,
    *,
    results: str | Path | None = None,
    skip_existing: bool = False,
    batch_size: int | None = None,
    load: Loader = read_image,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
    annotations: AnnotationLog | None = None,
) -> BatchReport:
    """The job loop: run `step` over `items`, write each one's outputs -> what was done, skipped, failed.

    predictor: a Predictor, or a function making one; it is called only if some item has
    work left, so a finished run loads no model. results: path of a `results.jsonl` to
    keep (one row per item). skip_existing: items whose outputs all exist are skipped.
    batch_size: images per Swin batch (default 1 on CPU, 4 on a GPU). report: where
    per-item failures are told (default: stderr). on_result: called with each ItemResult
    (its `row` set). A failing item is reported and the run goes on; finished work is on
    disk (atomic files) and in the log as each item ends. items: a Sequence (planned), or an
    iterator streaming them (the predictor is then made first; see `stream_results`).
    annotations: the job's annotation log (`batch.sinks`; the step must have `annotate`
    set): each written item's record goes in it, an item counts as done only once it is
    there, and its sinks' files are written when the job ends.
    """
    say = report or (lambda line: print(line, file=sys.stderr))
    streamed = not isinstance(items, Sequence)
    if annotations is not None and (streamed or getattr(step, "annotate", None) is None):
        raise ValueError("annotations need planned items and a step with `annotate` set")
    skipped, todo = ([], items) if streamed else split_done(items, skip_existing, annotations)
    out = BatchReport(skipped=len(skipped), results=Path(results) if results is not None else None)
    if results is not None and skip_existing and os.path.lexists(results):
        check_regular(results, "results log")  # before the model loads: a FIFO there would block the run
    if not isinstance(predictor, Predictor) and (streamed or any(item.error is None for item in todo)):
        predictor = predictor()
    log = open_log(results, skipped, skip_existing, step)
    if isinstance(predictor, Predictor):
        step.prepare(predictor)
    if batch_size is None:
        batch_size = 4 if isinstance(predictor, Predictor) and predictor.device.type != "cpu" else 1
    tell = progress_write if progress and report is None else say
    found = (stream_results(predictor, todo, step, batch_size, load, skip_existing) if streamed
             else step_results(predictor, todo, step, batch_size, load))  # type: ignore[arg-type]
    try:
        with progress_bar(None if streamed else len(todo), step.unit, enabled=progress) as bar:
            for r in found:
                if r.prediction is not None or r.skipped:
                    t0 = time.perf_counter()
                    try:
                        step.write(r)
                        if r.prediction is not None and getattr(step, "annotate", None) is not None:
                            r.record = step.record(r)
                    except StopJob as e:
                        raise e.error from e.error.__cause__
                    except Exception as e:
                        r.error, r.prediction, r.skipped = describe(e), None, False
                    r.seconds += time.perf_counter() - t0
                if annotations is not None and not r.skipped:
                    annotations.add(r.record if r.error is None else failed_record(r.item, r.error))
                if r.error is not None:
                    out.failed.append((r.item, r.error))
                    tell(shown(step.failure(r.item, r.error)))
                elif r.skipped:
                    out.skipped += 1
                else:
                    out.done += 1
                r.row = step.skipped_row(r.item) if r.skipped else step.row(r)
                if r.record is not None and step.annotate.instances:  # type: ignore[attr-defined]
                    r.row = results_row(**r.row, instances=len(r.record["annotations"]),
                                        instances_cut=r.record["dropped"])
                if log is not None and r.skipped:
                    log.note_skipped(r.row)  # unless a row already says so
                elif log is not None:
                    log.append(r.row)
                if on_result is not None:
                    on_result(r)
                bar.update(1)
    finally:
        if log is not None:
            log.close()
        if annotations is not None:
            annotations.close()
    if log is not None:
        log.finish(() if streamed else items)
    if annotations is not None:
        annotations.finish(items)  # type: ignore[arg-type]
    return out


def run_batch(
    predictor: PredictorSource,
    items: Sequence[Item],
    options: OutputOptions | None = None,
    annotate: AnnotateOptions | None = None,
    **job: Any,
) -> BatchReport:
    """Segment mask `items` (see `plan_items`) and write each one's outputs -> what was done, skipped, failed.

    `run_job` with a MaskStep (annotate: how its results become records for the job's
    sinks); its keywords (results, skip_existing, batch_size, load, progress, report,
    on_result, annotations) pass through.
    """
    return run_job(predictor, items, MaskStep(options or OutputOptions(), annotate), **job)


def open_log(results: str | Path | None, skipped: Sequence[Any], keep_existing: bool, step: Step) -> ResultsLog | None:
    """The job's results log (None: no log), with a row for each skipped item that has none yet."""
    if results is None:
        return None
    log = ResultsLog(results, keep_existing=keep_existing, schema=getattr(step, "row_schema", RESULT_ROW),
                     key=getattr(step, "row_key", by_output))
    for item in skipped:
        log.note_skipped(step.skipped_row(item))
    return log


def split_done(items: Sequence[Any], skip_existing: bool,
               annotations: AnnotationLog | None = None) -> tuple[list[Any], list[Any]]:
    """-> (skipped, todo): with skip_existing, items whose outputs all exist (and, with `annotations`, whose
    record is in that log) are skipped."""
    done = [skip_existing and item.error is None and item.is_done()
            and (annotations is None or annotations.has(item)) for item in items]
    return [i for i, d in zip(items, done) if d], [i for i, d in zip(items, done) if not d]


def result_row(r: ItemResult) -> dict[str, Any]:
    """The results row of a finished item: score, presence, present and foreground share (rounded) when it has a
    mask."""
    pred = r.prediction
    if pred is None:
        return row_of(r.item, seconds=r.seconds, error=r.error)
    return row_of(r.item, round(pred.score, 6), round(float(pred.mask.mean()), 6), r.seconds, r.error,
                  round(pred.presence, 6), bool(pred.present))


def describe(e: BaseException) -> str:
    """An exception -> one line for a results row."""
    if isinstance(e, UnilsegError):
        return str(e)
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
