"""`unilseg segment --video`: the flags of a video job checked, the video opened, then `batch.video.run_video`."""
from __future__ import annotations

import argparse
import sys
from functools import partial

from unilseg.cli.args import predictor_from_args
from unilseg.io.paths import shown


def run_from_args(args: argparse.Namespace) -> int:
    """`unilseg segment --video`: check every argument, open the video (first frame decoded), then load
    the model and run; returns the exit code (1 if the video stopped decoding early)."""
    from unilseg.batch import check_output_dir, read_expression_file
    from unilseg.batch.video import VIDEO_FORMATS, run_video
    from unilseg.cli.args import show_progress, video_overlay
    from unilseg.cli.targets import claim_inputs
    from unilseg.errors import UnilsegError
    from unilseg.io.writers import OutputRegistry
    from unilseg.tasks.video import FrameSelection, open_video

    if args.img or args.manifest or args.shard:
        raise UnilsegError("--video takes its instructions from --exp/--exp-file; drop --img/--manifest/--shard")
    texts = list(args.exp or []) + (read_expression_file(args.exp_file) if args.exp_file else [])
    if not texts:
        raise UnilsegError("give --exp TEXT (repeatable) or --exp-file FILE: what to segment in the video")
    if any(not t.strip() for t in texts):
        raise UnilsegError("an --exp is empty; give a text naming what to segment")
    fmt = args.format or "png"
    if fmt not in VIDEO_FORMATS:
        raise UnilsegError(f"--format {fmt}: a video's masks are png frames or rle-json")
    if args.save_prob:
        raise UnilsegError("--save-prob is not available for --video")
    overlay = video_overlay(args.overlay)
    if args.sp is None:
        raise UnilsegError("--video writes a folder of masks per instruction: pass --sp DIR")
    if not 0 <= args.smooth < 1:
        raise UnilsegError(f"--smooth {args.smooth}: use 0 (off) <= ALPHA < 1")
    if args.fps is not None and args.fps <= 0:
        raise UnilsegError(f"--fps must be positive, not {args.fps}")
    selection = FrameSelection(args.every, args.max_frames, args.start, args.end)
    out_dir = check_output_dir(args.sp, len(texts))
    registry = claim_inputs(OutputRegistry(), args)
    source = open_video(args.video, args.fps)  # exit 2 here, before any model work, if it cannot be decoded

    show = show_progress(args)
    report = run_video(partial(predictor_from_args, args), source, texts, out_dir, fmt=fmt,
                       overlay=overlay, selection=selection, batch_size=args.batch_size,
                       smooth=args.smooth, skip_existing=args.skip_existing, progress=bool(show), registry=registry)
    if report.error:
        print(shown(f"error: {report.error}"), file=sys.stderr)
        return 1
    return 0
