"""The job loop on Ray Data, on one machine or a cluster (`unilseg ray`, `cli/ray.py`).

The same plan (`plan_items`, `plan_label_items`), the same loop (`run_job`) and task steps
(`MaskStep`, `LabelStep`), the same writers and results rows as `unilseg segment`; Ray only
moves the work:

    plan (driver) -> one row per image, its items (pickled)
      -> decode_images: read + decode the image file (tasks, any node)
      -> Segmenter: a Predictor built once per actor; run_job runs the step over the
         batch's items, writes their files into --sp and returns their results rows
      -> driver: appends each row to results.jsonl as it arrives, orders it at the end

Every file is written by the workers (atomic, the main output last), so `--sp` must be a
path every node sees. Ray restarts a dead actor and re-runs its unfinished batch
(`max_restarts` / `max_task_retries`); a killed driver loses only unfinished items, which
`--skip-existing` then does.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from unilseg.io.paths import json_text, shown

DECODE_CPUS = 0.5  # what a decode task asks for; also left free on every node by the default actor size


# ---------------------------------------------------------------- workers


def decode_images(batch: dict[str, Any], names: dict[str, str] | None = None) -> dict[str, Any]:
    """Read the images of a batch of rows, in a Ray task.

    In: `image` (paths as JSON text), `items` (each image's planned items, pickled). Adds
    `pixels`: BGR uint8 (H, W, 3) per row, (0, 0, 3) when unreadable or not needed, and
    `error`: '' or why the image could not be read (the message the local runner gives, its fields
    called by `names`: the driver's front end's).
    """
    import numpy as np

    from unilseg.errors import UnilsegError, worded_as
    from unilseg.inference.transforms import read_image

    pixels, errors = [], []
    for key, items in zip(batch["image"], batch["items"]):
        bgr, error = np.zeros((0, 0, 3), np.uint8), ""
        if any(item.error is None for item in pickle.loads(items)):  # as the loop: no read if all items failed
            try:
                bgr = read_image(json.loads(key))
            except UnilsegError as e:
                with worded_as(names or {}):
                    error = json_text(str(e))
        pixels.append(bgr)
        errors.append(error)
    return {"image": batch["image"], "items": batch["items"], "pixels": pixels, "error": np.array(errors, object)}


class Segmenter:
    """A Ray Data callable class: one Predictor per actor; each call runs the job loop over a batch of images.

    make_predictor: builds the Predictor (called once, in the actor). step: the task step
    (`MaskStep`, `LabelStep`). threads: torch threads (the actor's CPUs). names: what the driver's
    front end calls error fields (failed items' text is worded so, as a local run's). A call takes rows
    of `decode_images` and returns `index` (int64, the items' plan positions), `row`
    (their results rows as JSON) and `record` (their annotations for the job's sinks as
    JSON, '' when the step makes none or the item failed), one entry per item.
    """

    def __init__(self, make_predictor: Callable[[], Any], step: Any, threads: int,
                 batch_size: int | None = None, names: dict[str, str] | None = None) -> None:
        import sys

        self.predictor = make_predictor()
        if "torch" in sys.modules:  # a torch network (ONNX Runtime takes its threads when it loads, without torch)
            sys.modules["torch"].set_num_threads(threads)
        self.step = step
        self.batch_size = batch_size
        self.names = names or {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from unilseg.batch.run import run_job
        from unilseg.errors import UnilsegError, worded_as

        items: list[Any] = []
        images: dict[Any, tuple[Any, str]] = {}
        for fields, bgr, error in zip(batch["items"], batch["pixels"], batch["error"]):
            mine = pickle.loads(fields)
            images[mine[0].image] = (bgr, json.loads(error) if error else "")
            items += mine

        def load(key: Any) -> Any:
            bgr, error = images[key]
            if error:
                raise UnilsegError(error)
            return bgr

        done: list[tuple[int, dict[str, Any], dict[str, Any] | None]] = []
        with worded_as(self.names):
            run_job(self.predictor, items, self.step, load=load, report=lambda line: None,
                    on_result=lambda r: done.append((r.item.index, r.row, r.record)),
                    batch_size=self.batch_size or len(images))
        return {"index": np.array([index for index, _, _ in done], np.int64),
                "row": np.array([json_text(row) for _, row, _ in done], object),
                "record": np.array(["" if rec is None else json_text(rec) for _, _, rec in done], object)}


# ---------------------------------------------------------------- driver


def default_cpus_per_actor(node_cpus: Sequence[float], actors: int, reserve: float = DECODE_CPUS) -> float:
    """The most CPUs (in steps of 0.05) each of `actors` actors can take so all fit, leaving `reserve` per node.

    Actors that take every CPU would leave none for the decode tasks, and the job would
    wait forever (2 actors x 1 CPU on a 2-CPU machine).
    """
    free = [c - reserve for c in node_cpus if c > reserve]
    fits = [f / k for f in free for k in range(1, actors + 1)]
    best = max((c for c in fits if sum(int(f / c + 1e-9) for f in free) >= actors), default=0.0)
    step = math.floor(best * 20) / 20
    if step <= 0:
        raise ValueError(f"{actors} actors do not fit on nodes with {list(node_cpus)} CPUs; pass --cpus-per-actor")
    return step


def run_ray(
    make_predictor: Callable[[], Any],
    items: Sequence[Any],
    step: Any = None,
    *,
    results: str | Path | None = None,
    skip_existing: bool = False,
    actors: int = 2,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float = 0,
    batch_size: int | None = None,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    address: str | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    annotations: Any = None,
) -> Any:  # -> BatchReport
    """`run_job` on Ray Data: run `step` (`MaskStep(options)`, `LabelStep(classes)`) over `items` (from
    `plan_items` / `plan_label_items`, `image` = a path) in `actors` actors.

    make_predictor: a picklable function building the Predictor (called once per actor);
    step: picklable too (OutputOptions or None: a MaskStep of them, 0.1.0's call).
    cpus_per_actor: CPUs (and torch threads, at least 1) per actor; default: all but
    DECODE_CPUS per node, shared out. batch_size: images per actor call (one Swin batch;
    default 1, 4 with GPUs). on_row: called with each results row as it reaches the
    driver. address: the cluster to join if Ray is not initialised yet (None: $RAY_ADDRESS,
    else a new local cluster, shut down at the end). ray_remote_args: more actor options
    (default: restart forever, retry the batch of a dead actor). annotations: the job's
    annotation log (`batch.sinks`, the step's `annotate` set), fed on the driver as records
    arrive, its files written at the end. Ray is started only if some item has work left.
    Returns a BatchReport; results.jsonl holds the local runner's rows, in plan order.
    """
    import ray.data

    from unilseg.batch.plan import OutputOptions
    from unilseg.batch.run import BatchReport, MaskStep, open_log, run_job, split_done
    from unilseg.batch.sinks import failed_record

    if step is None or isinstance(step, OutputOptions):
        step = MaskStep(step or OutputOptions())
    say = report or (lambda line: print(line, file=sys.stderr))
    skipped, todo = split_done(items, skip_existing, annotations)
    if not any(item.error is None for item in todo):  # nothing for a model: the local loop logs it all
        return run_job(make_predictor, items, step, results=results, skip_existing=skip_existing, report=say,
                       annotations=annotations)
    for item in todo:
        if not isinstance(item.image, (str, Path)):
            raise TypeError(f"run_ray reads images from paths; item {item.index} has image={item.image!r}")
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"include_dashboard": False} if address == "local" else {}
        ray.init(address=address, logging_level="WARNING", **kwargs)
    out = BatchReport(skipped=len(skipped), results=Path(results) if results is not None else None)
    log = open_log(results, skipped, skip_existing, step)
    by_index = {item.index: item for item in todo}
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        ds = _dataset(todo, make_predictor, step, actors, cpus_per_actor, gpus_per_actor, batch_size,
                      ray_remote_args)
        for rec in ds.iter_rows():  # as the actors finish batches, in no particular order
            row = json.loads(rec["row"])
            if annotations is not None:
                item = by_index[int(rec["index"])]
                annotations.add(json.loads(rec["record"]) if rec["record"] else failed_record(item, row["error"]))
            if log is not None:
                log.append(row)
            if row["error"]:
                item = by_index[int(rec["index"])]
                out.failed.append((item, row["error"]))
                say(shown(step.failure(item, row["error"])))
            else:
                out.done += 1
            if on_row is not None:
                on_row(row)
    finally:
        if log is not None:
            log.finish(items)
        if annotations is not None:
            annotations.close()
        if started:
            ray.shutdown()
    if annotations is not None:
        annotations.finish(items)
    return out


def _dataset(todo: Sequence[Any], make_predictor: Callable[[], Any], step: Any, actors: int,
             cpus_per_actor: float | None, gpus_per_actor: float, batch_size: int | None,
             ray_remote_args: dict[str, Any] | None) -> Any:  # -> ray.data.Dataset
    """The pipeline: one row per image (its items pickled) -> decode_images (tasks) -> Segmenter (actors)."""
    import ray

    from unilseg.errors import current_names

    names = current_names()  # the driver's front end's words for error fields, for the workers' rows
    if cpus_per_actor is None:
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        cpus_per_actor = default_cpus_per_actor(nodes, actors)
    if batch_size is None:
        batch_size = 4 if gpus_per_actor else 1
    groups: dict[Any, list[Any]] = {}
    for item in todo:  # in order of first appearance, all items of an image together: it is encoded once
        groups.setdefault(item.image, []).append(item)
    # the path as JSON text: Arrow holds UTF-8 only, and json_text keeps a file name that is not UTF-8 (lossless)
    rows = [{"image": json_text(str(key)), "items": pickle.dumps(mine)} for key, mine in groups.items()]
    remote = {"max_restarts": -1, "max_task_retries": -1, **(ray_remote_args or {})}
    threads = max(1, int(cpus_per_actor))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    ds = ds.map_batches(decode_images, fn_kwargs={"names": names}, batch_size=batch_size, num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():  # Ray >= 2.51 sets these restarts itself and deprecates passing them
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(Segmenter, fn_constructor_args=(make_predictor, step, threads, batch_size, names),
                              batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                              num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None, batch_format="numpy",
                              **remote)
