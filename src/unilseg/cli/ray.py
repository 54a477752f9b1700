"""`unilseg ray`: the batch job (masks, or label maps with --classes) on Ray Data, one machine or a cluster.

Parses and checks the flags, plans the job as `unilseg segment` does (`plan_batch`,
`cli.labels.plan_label_batch`) and hands the items and their task step to
`unilseg.batch.ray.run_ray`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from functools import partial

from unilseg.cli.args import (
    add_job_args,
    add_progress_arg,
    check_job_args,
    check_settings,
    finite_float,
    guarded_main,
    predictor_from_args,
    show_progress,
)
from unilseg.cli.segment import plan_batch
from unilseg.cli.sinks import annotate_options

INSTALL_HINT = "Ray is not installed: pip install 'unilseg[ray]'"
DECODE_CPUS = 0.5  # unilseg.batch.ray.DECODE_CPUS; repeated so --help imports no numpy/cv2



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
    from unilseg.batch.ray import run_ray
    from unilseg.errors import UnilsegError

    try:
        import ray.data  # noqa: F401 (sets up its loggers, quieted below)
    except ImportError:
        raise UnilsegError(INSTALL_HINT) from None
    labels = args.classes is not None or args.classes_file is not None
    if labels:
        check_settings(args)
    else:
        check_job_args(args)
    for flag, value in (("--actors", args.actors), ("--cpus-per-actor", args.cpus_per_actor)):
        if value is not None and value <= 0:
            raise UnilsegError(f"{flag} must be positive, not {value}")
    if args.gpus_per_actor < 0:
        raise UnilsegError(f"--gpus-per-actor must be 0 or more, not {args.gpus_per_actor}")
    if labels:
        from unilseg.batch.labels import LabelStep
        from unilseg.cli.labels import plan_labels

        job = plan_labels(args, batch_only=True)
        items, step, results, what = job.items, LabelStep(job.classes, annotate_options(args)), job.results, "images"
        annotations = job.annotations
    else:
        from unilseg.batch import MaskStep

        mask_job = plan_batch(args)
        items, step, results, what = (mask_job.items, MaskStep(mask_job.options, annotate_options(args)),
                                      mask_job.results, "items")
        annotations = mask_job.annotations
    if not args.download:  # a wrong model flag: one line now, not a failure in every actor
        from unilseg.model.build import resolve_model

        path, _ = resolve_model(args.weights, args.config, args.model)
        if not path.is_file():
            from unilseg.model.checkpoint import read_weights

            read_weights(path)  # raises the loader's own "weights file not found" error
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its INFO lines per dataset; warnings stay
    show = show_progress(args)
    t0 = time.perf_counter()
    # the one predictor factory; --device auto finds the GPU Ray gave the actor
    report = run_ray(partial(predictor_from_args, args), items, step, results=results,
                     skip_existing=args.skip_existing, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                     gpus_per_actor=args.gpus_per_actor, batch_size=args.batch_size, progress=bool(show),
                     address=args.address, annotations=annotations)
    print(f"{report.done} done, {report.skipped} skipped, {len(report.failed)} failed in "
          f"{time.perf_counter() - t0:.1f} s; rows in {report.results}", file=sys.stderr)
    if report.failed:
        print(f"error: {len(report.failed)} of {len(items)} {what} failed; see {report.results}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "unilseg ray") -> int:
    args = get_parser(prog).parse_args(argv)
    return guarded_main(lambda: run(args))
