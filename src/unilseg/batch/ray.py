"""`unilseg ray`: the batch job on Ray Data, on one machine or a cluster.

The same plan (`plan_items`), the same loop (`run_batch` over `predict_items`), the same
writers and results rows as `unilseg segment`; Ray only moves the work:

    plan (driver) -> one row per image, its items as JSON
      -> decode_images: read + decode the image file (tasks, any node)
      -> Segmenter: a Predictor built once per actor; run_batch writes each item's files
         into --sp and returns its results row
      -> driver: appends each row to results.jsonl as it arrives, orders it at the end

Every file is written by the workers with `write_prediction` (atomic, mask last), so
`--sp` must be a path every node sees. Ray restarts a dead actor and re-runs its
unfinished batch (`max_restarts` / `max_task_retries`); a killed driver loses only
unfinished items, which `--skip-existing` then does.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from unilseg.cli.args import add_job_args, add_progress_arg, check_job_args, finite_float, guarded_main, show_progress
from unilseg.cli.segment import plan_batch
from unilseg.io.paths import json_text, shown

INSTALL_HINT = "Ray is not installed: pip install 'unilseg[ray]'"
DECODE_CPUS = 0.5  # what a decode task asks for; also left free on every node by the default actor size
CRASH_ENV = "UNILSEG_RAY_CRASH_ONCE"  # test hook: a file path; the actor that removes it exits mid-batch


# ---------------------------------------------------------------- workers


def decode_images(batch: dict[str, Any]) -> dict[str, Any]:
    """Read the images of a batch of rows, in a Ray task.

    In: `image` (paths), `items` (JSON lists of item fields). Adds `pixels`: BGR uint8
    (H, W, 3) per row, (0, 0, 3) when unreadable or not needed, and `error`: '' or why the
    image could not be read (the message the local runner gives).
    """
    import numpy as np

    from unilseg.errors import UnilsegError
    from unilseg.inference.transforms import read_image

    pixels, errors = [], []
    for key, items in zip(batch["image"], batch["items"]):
        bgr, error = np.zeros((0, 0, 3), np.uint8), ""
        if any(d["error"] is None for d in json.loads(items)):  # as predict_items: no read if all items failed
            try:
                bgr = read_image(json.loads(key))
            except UnilsegError as e:
                error = json_text(str(e))
        pixels.append(bgr)
        errors.append(error)
    return {"image": batch["image"], "items": batch["items"], "pixels": pixels, "error": np.array(errors, object)}


class Segmenter:
    """A Ray Data callable class: one Predictor per actor; each call segments and writes a batch of images.

    make_predictor: builds the Predictor (called once, in the actor). threads: torch threads
    (the actor's CPUs). A call takes rows of `decode_images` and returns `index` (int64, the
    items' plan positions) and `row` (their results rows as JSON), one entry per item.
    """

    def __init__(self, make_predictor: Callable[[], Any], options: Any, threads: int,
                 batch_size: int | None = None) -> None:
        import torch

        torch.set_num_threads(threads)
        self.predictor = make_predictor()
        self.options = options
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from unilseg.batch import Item, result_row, run_batch
        from unilseg.errors import UnilsegError

        items: list[Item] = []
        images: dict[str, tuple[Any, str]] = {}
        for key, fields, bgr, error in zip(batch["image"], batch["items"], batch["pixels"], batch["error"]):
            images[json.loads(key)] = (bgr, json.loads(error) if error else "")
            items += [_item(d) for d in json.loads(fields)]

        def load(key: Any) -> Any:
            bgr, error = images[str(key)]
            if error:
                raise UnilsegError(error)
            return bgr

        done: list[tuple[int, dict[str, Any]]] = []

        def collect(result: Any) -> None:
            done.append((result.item.index, result_row(result)))
            _maybe_crash()

        run_batch(self.predictor, items, self.options, load=load, report=lambda line: None, on_result=collect,
                  batch_size=self.batch_size or len(images))
        return {"index": np.array([index for index, _ in done], np.int64),
                "row": np.array([json_text(row) for _, row in done], object)}


def _fields(item: Any) -> dict[str, Any]:
    """An Item -> plain JSON fields (paths as text) that `_item` turns back into it."""
    def text(path: Path | None) -> str | None:
        return None if path is None else str(path)

    return {"index": item.index, "image": str(item.image), "expression": item.expression,
            "output": text(item.output), "prob_path": text(item.prob_path), "overlay_path": text(item.overlay_path),
            "error": item.error, "explicit": item.explicit, "root": text(item.root)}


def _item(d: dict[str, Any]) -> Any:
    from unilseg.batch import Item

    def path(text: str | None) -> Path | None:
        return None if text is None else Path(text)

    return Item(d["index"], d["image"], d["expression"], path(d["output"]), path(d["prob_path"]),
                path(d["overlay_path"]), d["error"], d["explicit"], root=path(d["root"]))


def _maybe_crash() -> None:
    """Test hook: with UNILSEG_RAY_CRASH_ONCE=FILE, the one process that removes FILE dies at once.

    os._exit (no clean-up, like a kill or an out-of-memory end) after an item is written,
    so its batch is left half done. Removing a file succeeds for exactly one process.
    """
    flag = os.environ.get(CRASH_ENV)
    if flag:
        try:
            os.unlink(flag)
        except FileNotFoundError:
            return
        os._exit(1)


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
    options: Any = None,
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
) -> Any:  # -> BatchReport
    """`run_batch` on Ray Data: segment `items` (from `plan_items`, `image` = a path) in `actors` actors.

    make_predictor: a picklable function building the Predictor (called once per actor).
    cpus_per_actor: CPUs (and torch threads, at least 1) per actor; default: all but
    DECODE_CPUS per node, shared out. batch_size: images per actor call (one Swin batch;
    default 1, 4 with GPUs). on_row: called with each results row as it reaches the
    driver. address: the cluster to join if Ray is not initialised yet (None: $RAY_ADDRESS,
    else a new local cluster, shut down at the end). ray_remote_args: more actor options
    (default: restart forever, retry the batch of a dead actor). Ray is started only if
    some item has work left.
    Returns a BatchReport; results.jsonl holds the local runner's rows, in plan order.
    """
    import ray.data

    from unilseg.batch import BatchReport, OutputOptions, open_results, run_batch, split_done

    options = options or OutputOptions()
    say = report or (lambda line: print(line, file=sys.stderr))
    skipped, todo = split_done(items, skip_existing)
    if not any(item.error is None for item in todo):  # nothing for a model: the local runner logs it all
        return run_batch(make_predictor, items, options, results=results, skip_existing=skip_existing, report=say)
    for item in todo:
        if not isinstance(item.image, (str, Path)):
            raise TypeError(f"run_ray reads images from paths; item {item.index} has image={item.image!r}")
    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"include_dashboard": False} if address == "local" else {}
        ray.init(address=address, logging_level="WARNING", **kwargs)
    out = BatchReport(skipped=len(skipped), results=Path(results) if results is not None else None)
    log = open_results(results, skipped, skip_existing)
    by_index = {item.index: item for item in todo}
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        ds = _dataset(todo, make_predictor, options, actors, cpus_per_actor, gpus_per_actor, batch_size,
                      ray_remote_args)
        for rec in ds.iter_rows():  # as the actors finish batches, in no particular order
            row = json.loads(rec["row"])
            if log is not None:
                log.append(row)
            if row["error"]:
                out.failed.append((by_index[int(rec["index"])], row["error"]))
                say(shown(f"failed: {row['image']} {row['expression']!r}: {row['error']}"))
            else:
                out.done += 1
            if on_row is not None:
                on_row(row)
    finally:
        if log is not None:
            log.finish(items)
        if started:
            ray.shutdown()
    return out


def _dataset(todo: Sequence[Any], make_predictor: Callable[[], Any], options: Any, actors: int,
             cpus_per_actor: float | None, gpus_per_actor: float, batch_size: int | None,
             ray_remote_args: dict[str, Any] | None) -> Any:  # -> ray.data.Dataset
    """The pipeline: one row per image (its items as JSON) -> decode_images (tasks) -> Segmenter (actors)."""
    import ray

    if cpus_per_actor is None:
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        cpus_per_actor = default_cpus_per_actor(nodes, actors)
    if batch_size is None:
        batch_size = 4 if gpus_per_actor else 1
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in todo:  # in order of first appearance, all items of an image together: it is encoded once
        groups.setdefault(str(item.image), []).append(_fields(item))
    # as JSON texts: Arrow holds UTF-8 only, and json_text keeps a file name that is not UTF-8 (lossless)
    rows = [{"image": json_text(key), "items": json_text(fields)} for key, fields in groups.items()]
    remote = {"max_restarts": -1, "max_task_retries": -1, **(ray_remote_args or {})}
    threads = max(1, int(cpus_per_actor))
    ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 4 * actors)))
    ds = ds.map_batches(decode_images, batch_size=batch_size, num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():  # Ray >= 2.51 sets these restarts itself and deprecates passing them
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(Segmenter, fn_constructor_args=(make_predictor, options, threads, batch_size),
                              batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors),
                              num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None, batch_format="numpy",
                              **remote)


# ---------------------------------------------------------------- command line


def get_parser(prog: str = "unilseg ray") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Segment many (image, instruction) pairs on Ray Data: one machine or a cluster. "
        "Same inputs, names, files and results.jsonl as `unilseg segment` with --sp DIR.",
    )
    add_job_args(p, batch_only=True)
    g = p.add_argument_group("ray")
    g.add_argument("--address", help="an existing Ray cluster (auto: the one `ray start` made on this machine); "
                   "default: $RAY_ADDRESS if set, else a new local cluster")
    g.add_argument("--actors", type=int, default=2, metavar="N", help="model actors (default 2)")
    g.add_argument("--cpus-per-actor", type=finite_float, metavar="C", help="CPUs per actor, also its torch threads "
                   f"(at least 1; default: all CPUs but {DECODE_CPUS} per node, shared out)")
    g.add_argument("--gpus-per-actor", type=finite_float, default=0, metavar="G",
                   help="GPUs per actor (default 0; 1: one GPU each; 0.5: two actors share one)")
    add_progress_arg(p, "Ray Data's progress bars on stderr")
    p.set_defaults(shard=None)
    return p


def run(args: argparse.Namespace) -> int:
    """Check, plan, run on Ray; returns the exit code (1 if any item failed)."""
    from unilseg.errors import UnilsegError

    try:
        import ray.data  # noqa: F401 (sets up its loggers, quieted below)
    except ImportError:
        raise UnilsegError(INSTALL_HINT) from None
    if args.classes is not None or args.classes_file is not None:
        raise UnilsegError("unilseg ray writes masks; label maps (--classes) run with `unilseg segment` for now")
    check_job_args(args)
    for flag, value in (("--actors", args.actors), ("--cpus-per-actor", args.cpus_per_actor)):
        if value is not None and value <= 0:
            raise UnilsegError(f"{flag} must be positive, not {value}")
    if args.gpus_per_actor < 0:
        raise UnilsegError(f"--gpus-per-actor must be 0 or more, not {args.gpus_per_actor}")
    job = plan_batch(args)
    if not args.download:  # a wrong model flag: one line now, not a failure in every actor
        from unilseg.model.build import resolve_model

        path, _ = resolve_model(args.weights, args.config, args.model)
        if not path.is_file():
            from unilseg.model.checkpoint import read_weights

            read_weights(path)  # raises the loader's own "weights file not found" error
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines per dataset; warnings stay
    show = show_progress(args)
    t0 = time.perf_counter()
    report = run_ray(partial(_predictor, args), job.items, job.options, results=job.results,
                     skip_existing=args.skip_existing, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                     gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size, progress=bool(show),
                     address=args.address)
    print(f"{report.done} done, {report.skipped} skipped, {len(report.failed)} failed in "
          f"{time.perf_counter() - t0:.1f} s; rows in {report.results}", file=sys.stderr)
    if report.failed:
        print(f"error: {len(report.failed)} of {len(job.items)} items failed; see {report.results}", file=sys.stderr)
        return 1
    return 0


def _predictor(args: argparse.Namespace) -> Any:
    """The Predictor the model flags name (in an actor; --device auto finds the GPU Ray gave it)."""
    from unilseg.cli.args import predictor_from_args

    return predictor_from_args(args)


def main(argv: Sequence[str] | None = None, prog: str = "unilseg ray") -> int:
    args = get_parser(prog).parse_args(argv)
    return guarded_main(lambda: run(args))
