"""`general_inference.py` / `unilseg segment`: segment what an instruction names in images.

A thin shell: parse, check every input and output target, then hand the items to the
batch API (`unilseg.batch.run_batch`), which loads the model only if there is work.
Errors a user can fix are one `error:` line with exit code 2, before any model work;
a write that still fails is one `error:` line with exit code 1.

One image file and one `--exp` is the authors' invocation: `--sp` is the output file
(or, naming a directory, the directory to write `{image_stem}__{slug}.png` into). Anything
more (several images or expressions, a directory, a glob, `--exp-file`, `--manifest`,
`--shard`) is a batch: `--sp` is a directory, a failing item is reported and skipped,
and the exit code is 1 if any item failed.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from unilseg.cli.args import (
    add_job_args,
    add_progress_arg,
    batch_overlay,
    check_job_args,
    check_settings,
    finite_float,
    guarded_main,
    path_arg,
    predictor_from_args,
    show_progress,
)
from unilseg.cli.sinks import annotate_options, annotation_log, check_sink_args, reserve_sinks
from unilseg.cli.targets import claim_inputs, output_label, reserve_results, sidecar_arg
from unilseg.io.paths import shown, user_path

DEFAULT_OUTPUT = "demo"  # + the format's extension: demo.png, as the authors' script writes


def get_parser(prog: str = "general_inference.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Segment whatever a language instruction names in an image (UniLSeg).",
    )
    add_job_args(p)
    p.add_argument("--shard", metavar="I/N", help="batch: do only shard I of N (I from 0), images dealt round-robin")
    add_video_args(p)
    add_progress_arg(p, "batch: progress bar on stderr")
    p.epilog = ("other commands: unilseg models | download | convert | train | eval "
                "(unilseg COMMAND --help)") if prog != "general_inference.py" else None
    return p


def add_video_args(p: argparse.ArgumentParser) -> None:
    """The flags of `--video` (see `unilseg.batch.video`)."""
    v = p.add_argument_group("video (instead of --img)")
    v.add_argument("--video", type=path_arg, metavar="FILE|DIR",
                   help="a video (mp4, avi, webm, mov, gif: whatever OpenCV's FFmpeg "
                   "reads) or a folder of frames; masks go to --sp DIR/{video}__{text}/000123.png (or one .json "
                   "with --format rle-json), --overlay writes {video}__{text}.overlay.mp4")
    v.add_argument("--every", type=int, default=1, metavar="N", help="segment every Nth frame (default 1)")
    v.add_argument("--max-frames", type=int, metavar="N", help="segment at most N frames")
    v.add_argument("--start", type=finite_float, default=0.0, metavar="SEC", help="first second to segment (default 0)")
    v.add_argument("--end", type=finite_float, metavar="SEC", help="stop before this second")
    v.add_argument("--smooth", type=finite_float, default=0.0, metavar="ALPHA", help="average each soft map over time: "
                   "s_t = ALPHA*s_(t-1) + (1-ALPHA)*p_t (default 0: off, each frame exactly as a single image)")
    v.add_argument("--fps", type=finite_float, help="frame rate of a folder of frames (default 25)")


@dataclass
class Job:
    """What the command line asks for, checked: the items, how to write them, and where to log."""

    items: list[Any]  # unilseg.batch.Item
    options: Any  # unilseg.batch.OutputOptions
    results: Path | None = None
    single: bool = False
    load: Any = None  # the item loader; None: read_image
    annotations: Any = None  # unilseg.batch.sinks.AnnotationLog: the job's --coco / --label-studio files


def run(args: argparse.Namespace) -> int:
    """Check the arguments, plan, run the batch API; returns the exit code."""
    from unilseg.batch import run_batch
    from unilseg.errors import UnilsegError

    check_settings(args)
    check_sink_args(args)  # here, before the video hand-over: --video takes no annotation file
    labels = args.classes is not None or args.classes_file is not None
    if args.video is not None:
        if labels:
            raise UnilsegError("label maps of a video (--video with --classes) are not supported yet; "
                               "use --exp per class")
        from unilseg.cli.video import run_from_args

        return run_from_args(args)
    if (args.every, args.max_frames, args.start, args.end, args.smooth, args.fps) != (1, None, 0.0, None, 0.0, None):
        raise UnilsegError("--every, --max-frames, --start, --end, --smooth and --fps apply to --video only")
    if labels:
        from unilseg.cli.labels import run_labels

        return run_labels(args)
    check_job_args(args)
    job = plan_single(args) if _is_single(args) else plan_batch(args)
    show = show_progress(args, len(job.items) > 1)
    extra = {"load": job.load} if job.load is not None else {}
    report = run_batch(partial(predictor_from_args, args), job.items, job.options, annotate=annotate_options(args),
                       annotations=job.annotations, results=job.results,
                       skip_existing=args.skip_existing, batch_size=args.batch_size,
                       progress=bool(show) and not job.single, report=(lambda line: None) if job.single else None,
                       on_result=_note_empty_mask if job.single else None, **extra)
    if job.single:
        if report.failed:
            print(shown(f"error: {report.failed[0][1]}"), file=sys.stderr)
            return 1
        return 0
    if report.failed:
        print(shown(f"error: {len(report.failed)} of {len(job.items)} items failed; see {report.results}"),
              file=sys.stderr)
        return 1
    return 0


def _is_single(args: argparse.Namespace) -> bool:
    """The authors' call: one image file, one --exp, nothing that makes a batch."""
    if args.manifest or args.exp_file or args.shard or len(args.img) != 1 or len(args.exp) != 1:
        return False
    img = user_path(args.img[0])
    return not img.is_dir() and (img.is_file() or not glob.has_magic(args.img[0]))


def plan_single(args: argparse.Namespace) -> Job:
    """One image + one --exp: a batch of one with explicit output paths, all checked now."""
    from unilseg.batch import Item, OutputOptions, output_stem
    from unilseg.errors import UnilsegError
    from unilseg.inference.transforms import read_image
    from unilseg.io.writers import MASK_EXTENSIONS, OutputRegistry, check_dir_target, check_file_target, mask_format_for

    exp = args.exp[0]
    if not exp.strip():
        raise UnilsegError("--exp is empty; give a text naming what to segment")
    sp_arg = args.sp
    if sp_arg is None:
        sp_arg = DEFAULT_OUTPUT + MASK_EXTENSIONS[args.format or "png"]
    in_dir = os.path.isdir(os.path.expanduser(sp_arg)) or sp_arg.endswith(("/", os.sep))
    if in_dir:
        directory = check_dir_target(sp_arg, "--sp")
        fmt = args.format or "png"
        sp = directory / (output_stem(args.img[0], exp) + MASK_EXTENSIONS[fmt])
    else:
        fmt = mask_format_for(sp_arg, args.format, "--sp")
        sp = check_file_target(sp_arg, "--sp")
    prob_path = sidecar_arg(args.save_prob, sp, ".prob.npy", "--save-prob", (".npy",))
    overlay_path = sidecar_arg(args.overlay, sp, ".overlay.jpg", "--overlay", (".jpg", ".jpeg", ".png"))
    for path, flag in ((prob_path, "--save-prob"), (overlay_path, "--overlay")):
        if path is not None:
            check_file_target(path, flag)
    registry = reserve_sinks(claim_inputs(OutputRegistry(), args), args, None, None)
    registry.write(sp, output_label(args.sp, sp, in_dir))
    for path, flag, given in ((prob_path, "--save-prob", args.save_prob), (overlay_path, "--overlay", args.overlay)):
        if path is not None:
            registry.write(path, f"{flag} {path}" if given is not True else f"the {flag} file {path}")
    image = read_image(args.img[0])  # an unreadable image is bad input (exit 2), found before the model loads
    item = Item(0, args.img[0], exp, sp, prob_path, overlay_path, explicit=True)
    return Job([item], OutputOptions(fmt=fmt), single=True, load=lambda _key: image,
               annotations=annotation_log(args, [item], None, None, [exp]))


def plan_batch(args: argparse.Namespace) -> Job:
    """Many images x expressions, or a manifest: every output named under --sp, this shard's share."""
    from unilseg.batch import (
        OutputOptions,
        check_output_dir,
        expand_images,
        parse_shard,
        plan_items,
        read_batch_manifest,
        read_expression_file,
        results_name,
        select_shard,
    )
    from unilseg.batch.plan import without_own_outputs
    from unilseg.batch.sinks import mask_categories
    from unilseg.errors import UnilsegError
    from unilseg.io.writers import OutputRegistry, confine

    if args.sp is None:
        raise UnilsegError("a batch writes several masks: pass --sp DIR, the directory to write them into")
    if isinstance(args.save_prob, str):
        raise UnilsegError(f"--save-prob {args.save_prob}: a batch takes no path (NAME.prob.npy beside each mask)")
    overlay = batch_overlay(args.overlay)
    shard = parse_shard(args.shard) if args.shard else None
    if args.manifest:
        requests = [(r.image, r.expression, r.output) for r in read_batch_manifest(args.manifest)]
    else:
        expressions = list(args.exp or []) + (read_expression_file(args.exp_file) if args.exp_file else [])
        images = without_own_outputs(expand_images(args.img), args.img, user_path(args.sp))
        requests = [(image, exp, None) for image in images for exp in expressions]
    out_dir = check_output_dir(args.sp, len(requests))
    options = OutputOptions(fmt=args.format or "png", save_prob=bool(args.save_prob), overlay=overlay)
    results = confine(out_dir / results_name(shard), out_dir)
    registry = reserve_sinks(reserve_results(claim_inputs(OutputRegistry(), args), out_dir, shard), args, out_dir,
                             shard)
    plan = plan_items(requests, out_dir, options, allow_absolute=args.allow_absolute_output, reserved=[results],
                      registry=registry)
    items = select_shard(plan, *shard) if shard else plan
    return Job(items, options, results=results,
               annotations=annotation_log(args, items, out_dir, shard, mask_categories(plan), plan))


def _note_empty_mask(result) -> None:
    """A single call whose mask is empty says so (one note on stderr), with the top score (or, found absent, the
    presence score)."""
    pred = result.prediction
    if pred is not None and not pred.present:
        print(f"note: not found: the presence score {pred.presence:.3f} is below --min-score, so the mask is empty; "
              "try another wording, or a lower --min-score", file=sys.stderr)
    elif pred is not None and not pred.mask.any():
        top = float(pred.prob.max()) if pred.prob.size else 0.0
        print(f"note: the mask is empty: nothing scored above the threshold (the top score was {top:.3f}); "
              "try a lower --threshold or another wording", file=sys.stderr)


def main(argv: Sequence[str] | None = None, prog: str = "general_inference.py") -> int:
    args = get_parser(prog).parse_args(argv)
    return guarded_main(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
