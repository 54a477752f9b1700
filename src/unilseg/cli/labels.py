"""`--classes` / `--classes-file` on the segment command: one label map per image.

The segment CLI hands over here when classes are given; everything is checked (classes,
inputs, every output target) before the model loads, then `unilseg.batch.labels`
does the work. One image file: `--sp` is the label PNG (default labels.png), or a
directory to write `{stem}__labels.png` into. Folders, globs, several images or a
manifest: `--sp` is a directory, with a `results.jsonl` row per image.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from unilseg.cli.args import batch_overlay, predictor_from_args, read_classes, show_progress
from unilseg.cli.sinks import annotation_log, reserve_sinks
from unilseg.errors import UnilsegError
from unilseg.io.paths import shown, user_path

if TYPE_CHECKING:
    import numpy as np

DEFAULT_LABELS = "labels.png"


@dataclass
class LabelJob:
    """A checked label-map job: its items, classes, results log and (one image) the loaded image."""

    items: list  # [unilseg.batch.labels.LabelItem]
    classes: list  # [ClassSpec]
    results: Path | None = None
    load: Callable[[object], np.ndarray] | None = None  # one image: the image read at planning
    single: bool = False
    annotations: object = None  # unilseg.batch.sinks.AnnotationLog: the job's --coco / --label-studio files


def run_labels(args: argparse.Namespace) -> int:
    """Check, plan and run label maps; returns the exit code (2 for bad arguments, before any model work)."""
    from unilseg.batch.labels import run_label_maps
    from unilseg.cli.sinks import annotate_options

    job = plan_labels(args)
    show = show_progress(args, len(job.items) > 1)
    extra = {"load": job.load} if job.load is not None else {}
    report = run_label_maps(partial(predictor_from_args, args), job.items, job.classes,
                            annotate=annotate_options(args), annotations=job.annotations, results=job.results,
                            skip_existing=args.skip_existing, batch_size=args.batch_size,
                            progress=bool(show) and not job.single,
                            report=(lambda line: None) if job.single else None, **extra)
    if report.failed:
        what = (report.failed[0][1] if job.single
                else f"{len(report.failed)} of {len(job.items)} images failed; see {job.results}")
        print(shown(f"error: {what}"), file=sys.stderr)
        return 1
    return 0


def plan_labels(args: argparse.Namespace, batch_only: bool = False) -> LabelJob:
    """Check the flags of a label-map job and plan it; batch_only (`unilseg ray`): one image is a batch too."""
    from unilseg.batch import check_output_dir, expand_images, parse_shard, results_name, select_shard
    from unilseg.batch.labels import plan_label_items, read_manifest_images
    from unilseg.batch.plan import without_own_outputs
    from unilseg.cli.targets import claim_inputs, reserve_results
    from unilseg.io.writers import OutputRegistry, confine
    from unilseg.tasks.labelmap import MAX_PALETTE_CLASSES

    if args.exp or args.exp_file:
        raise UnilsegError("--classes gives what to segment; drop --exp/--exp-file (a class may carry its own "
                           "instruction: 'car: all the cars')")
    if args.manifest and args.img:
        raise UnilsegError("--manifest gives the images; drop --img")
    if not args.manifest and not args.img:
        raise UnilsegError("give --img IMG (a file, directory or glob) or --manifest FILE with --classes")
    if args.format not in (None, "png"):
        raise UnilsegError(f"--format {args.format}: a label map is written as a PNG of class indices")
    if args.save_prob not in (None, False):  # `unilseg ray`'s --save-prob is a switch, off by default
        raise UnilsegError("--save-prob does not apply to --classes (one soft map per class); use --exp for "
                           "soft maps, or Predictor.predict in Python")
    classes = read_classes(args)
    if len(classes) > MAX_PALETTE_CLASSES:
        print(f"note: {len(classes)} classes: label maps are 16-bit greyscale PNGs (a PNG palette holds "
              f"{MAX_PALETTE_CLASSES} classes); the colours are in the legend", file=sys.stderr)
    single = (not batch_only and not args.manifest and not args.shard and len(args.img) == 1
              and _is_file_arg(args.img[0]))
    names = [c.name for c in classes]
    if single:
        items, load = _plan_single(args)
        return LabelJob(items, classes, load=load, single=True,
                        annotations=annotation_log(args, items, None, None, names))
    if args.sp is None:
        raise UnilsegError("a batch writes a label map per image: pass --sp DIR, the directory to write them into")
    overlay = batch_overlay(args.overlay)
    if args.manifest:
        images = read_manifest_images(args.manifest)
    else:
        images = without_own_outputs(expand_images(args.img), args.img, user_path(args.sp))
    shard = parse_shard(args.shard) if args.shard else None
    out_dir = check_output_dir(args.sp, len(images))
    registry = reserve_sinks(reserve_results(claim_inputs(OutputRegistry(), args), out_dir, shard), args, out_dir,
                             shard)
    plan = plan_label_items(images, out_dir, overlay, registry)
    items = select_shard(plan, *shard) if shard else plan  # type: ignore[arg-type]
    return LabelJob(items, classes, results=confine(out_dir / results_name(shard), out_dir),
                    annotations=annotation_log(args, items, out_dir, shard, names, plan))


def _is_file_arg(value: str) -> bool:
    """An --img value naming one file (or a missing one, which then fails as bad input), not a folder or glob."""
    path = user_path(value)
    return not path.is_dir() and (path.is_file() or not glob.has_magic(value))


def _plan_single(args: argparse.Namespace) -> tuple[list, Callable[[object], np.ndarray]]:
    """One image file: --sp a .png file (default labels.png) or a directory; every target checked now."""
    from unilseg.batch.labels import LABELS_SUFFIX, label_item
    from unilseg.batch.plan import safe_stem
    from unilseg.cli.targets import claim_inputs, output_label, sidecar_arg
    from unilseg.inference.transforms import read_image
    from unilseg.io.writers import OutputRegistry, check_dir_target, check_file_target

    sp_arg = args.sp or DEFAULT_LABELS
    in_dir = os.path.isdir(os.path.expanduser(sp_arg)) or sp_arg.endswith(("/", os.sep))
    if in_dir:
        sp = check_dir_target(sp_arg, "--sp") / (safe_stem(Path(args.img[0]).stem) + LABELS_SUFFIX + ".png")
    else:
        if Path(sp_arg).suffix.lower() != ".png":
            raise UnilsegError(f"--sp {sp_arg}: a label map is a PNG of class indices; end the name in .png")
        sp = check_file_target(sp_arg, "--sp")
    overlay = sidecar_arg(args.overlay, sp, ".overlay.jpg", "--overlay", (".jpg", ".jpeg", ".png"))
    if overlay is not None:
        check_file_target(overlay, "--overlay")
    item = label_item(0, args.img[0], sp, overlay)
    registry = reserve_sinks(claim_inputs(OutputRegistry(), args), args, None, None)
    registry.write(sp, output_label(args.sp, sp, in_dir, "the label map"))
    registry.write(item.legend_path, f"its legend {item.legend_path}")
    if overlay is not None:
        registry.write(overlay, f"--overlay {args.overlay}" if args.overlay is not True else f"its overlay {overlay}")
    image = read_image(args.img[0])  # an unreadable image is bad input (exit 2), found before the model loads
    return [item], lambda _key: image
