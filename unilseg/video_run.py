"""Writing a video's results: mask frames or per-frame RLE, overlay videos, results rows, resume.

Per instruction, under the output directory (names as a batch names them, `plan_items`):
  png:       `{video_stem}__{slug}/000123.png`, one 0/255 PNG per frame (atomic: present means done)
  rle-json:  `{video_stem}__{slug}.json`, {"video", "expression", "fps", "size", "frames": [{"frame",
             "time", "rle"}]}, rewritten atomically at the end; until then each frame's RLE is
             appended to `.{name}.frames.jsonl`, which survives a kill and is what a resumed run reads
  overlay:   `{video_stem}__{slug}.overlay.mp4` (mp4v, the input's size, fps / every), renamed
             into place when complete
and `results.jsonl`, one row per (frame, instruction): video, frame, time, expression,
output, score, foreground, seconds, error.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WriteError
from .paths import json_text, shown
from .predictor import Prediction, Predictor
from .video import FrameSelection, VideoReadError, VideoSource, segment_frames
from .writers import confine, encode_mask, render_overlay, rle_decode, rle_encode, write_atomic

VIDEO_FORMATS = ("png", "rle-json")


@dataclass
class VideoOutput:
    """Where one instruction's results go, and (rle-json) its frames so far."""

    text: str
    base: Path  # DIR/{video_stem}__{slug}, no extension
    fmt: str
    overlay: bool
    rles: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame -> {"frame", "time", "rle"}

    @property
    def output(self) -> Path:
        """The mask folder (png) or the JSON file (rle-json)."""
        return self.base if self.fmt == "png" else self.base.with_name(self.base.name + ".json")

    @property
    def partial(self) -> Path:
        return self.base.with_name(f".{self.base.name}.frames.jsonl")

    @property
    def overlay_path(self) -> Path:
        return self.base.with_name(self.base.name + ".overlay.mp4")

    def frame_path(self, i: int) -> Path:
        return self.base / f"{i:06d}.png"

    def is_done(self, i: int) -> bool:
        return self.frame_path(i).is_file() if self.fmt == "png" else i in self.rles

    def stored_mask(self, i: int) -> np.ndarray:
        """A finished frame's mask, read back (for the overlay of a resumed run): bool (H, W)."""
        import cv2

        if self.fmt == "png":
            return cv2.imread(str(self.frame_path(i)), cv2.IMREAD_GRAYSCALE) > 127
        return rle_decode(self.rles[i]["rle"])


def plan_outputs(video: str | Path, texts: list[str], out_dir: Path, fmt: str, overlay: bool) -> list[VideoOutput]:
    """One VideoOutput per text, named `{video_stem}__{slug}` (clashes numbered, as in a batch)."""
    from .batch import plan_items

    items = plan_items([(str(video), t, None) for t in texts], out_dir)
    outputs = [VideoOutput(t, item.output.with_suffix(""), fmt, overlay) for t, item in zip(texts, items)]
    for out in outputs:  # the frame folder may be a symlink leading out of out_dir: the whole job stops
        for path in (out.base, out.output, out.partial, out.overlay_path):
            confine(path, out_dir)
    return outputs


@dataclass
class VideoReport:
    frames: int = 0  # frames with at least one instruction computed
    skipped: int = 0  # frames whose outputs were all there already
    error: str | None = None  # where decoding stopped, if it did
    outputs: list[VideoOutput] = field(default_factory=list)


class _OverlayWriter:
    """An mp4 written to a temporary name beside its target and renamed into place by `finish`."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part.mp4")
        self.writer = None

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            for stale in self.path.parent.glob(f".{self.path.name}.*.part.mp4"):
                stale.unlink(missing_ok=True)
            h, w = frame_bgr.shape[:2]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                raise WriteError(f"cannot write the overlay video {self.path} (no mp4v encoder in this OpenCV)")
        self.writer.write(frame_bgr)

    def finish(self, keep: bool = True) -> None:
        if self.writer is None:
            return
        self.writer.release()
        if keep:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _load_rles(out: VideoOutput, resume: bool) -> None:
    """Frames already done for an rle-json output: the final JSON's, then the kill-proof partial file's."""
    if not resume:
        out.partial.unlink(missing_ok=True)
        return
    if out.output.is_file():
        try:
            for f in json.loads(out.output.read_text()).get("frames", []):
                out.rles[int(f["frame"])] = f
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # not ours or damaged: recompute
    if out.partial.is_file():
        from .batch import read_results

        for f in read_results(out.partial):
            out.rles[int(f["frame"])] = f


def run_video(
    predictor: Predictor | Callable[[], Predictor], source: VideoSource, texts: list[str], out_dir: str | Path, *,
    fmt: str = "png", overlay: bool = False, selection: FrameSelection | None = None, batch_size: int | None = None,
    smooth: float = 0.0, skip_existing: bool = False, progress: bool = False,
) -> VideoReport:
    """Segment `source` for every text and write each instruction's outputs under `out_dir` (see the module).

    predictor: a Predictor, or a function making one (called unless every output is there
    already). batch_size: frames per Swin batch (default 1 on CPU, 4 on a GPU). Returns what
    was done; a video that stopped decoding early is in `.error` (its decodable frames are
    written, rows logged, the JSON and overlay finished).
    """
    selection = selection or FrameSelection()
    out_dir = Path(out_dir)
    outputs = plan_outputs(source.path, texts, out_dir, fmt, overlay)
    if fmt == "rle-json":
        for out in outputs:
            _load_rles(out, skip_existing)
    results = confine(out_dir / "results.jsonl", out_dir)
    report = VideoReport(outputs=outputs)
    done = (lambda i, k: outputs[k].is_done(i)) if skip_existing else None
    indices = selection.indices(source.fps, source.frame_count)
    finished = (done is not None and indices is not None and all(done(i, k) for i in indices for k in range(len(texts)))
                and all(o.output.exists() and (not overlay or o.overlay_path.is_file()) for o in outputs))
    if finished:
        report.skipped = len(indices)
        _Log(results, keep=True).finish()
        source.close()
        return report
    if not isinstance(predictor, Predictor):
        predictor = predictor()  # before anything is written: a model that fails to load leaves no files
    log = _Log(results, keep=skip_existing)
    if batch_size is None:  # frames per Swin batch: as a batch of images does
        batch_size = 1 if predictor.device.type == "cpu" else 4
    writers = [_OverlayWriter(o.overlay_path, source.fps / selection.every) if overlay else None for o in outputs]
    partials = [open(o.partial, "a", encoding="utf-8") if fmt == "rle-json" else None for o in outputs]
    from tqdm import tqdm

    bar = tqdm(total=len(indices) if indices is not None else None, unit="frame", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    ok = False
    try:
        frames = segment_frames(predictor, source, texts, selection, batch_size, smooth, done,
                                images_of_done=overlay)
        try:
            for frame in frames:
                _write_frame(frame, outputs, writers, partials, log, str(source.path))
                report.frames += any(p is not None for p in frame.predictions)
                report.skipped += all(p is None for p in frame.predictions)
                bar.update(1)
        except VideoReadError as e:
            report.error = str(e)
            for out in outputs:
                log.append({"video": str(source.path), "frame": None, "time": None, "expression": out.text,
                            "output": str(out.output), "score": None, "foreground": None, "seconds": 0.0,
                            "error": str(e)})
        ok = True
    finally:
        bar.close()
        for f in partials:
            if f is not None:
                f.close()
        for w in writers:
            if w is not None:
                w.finish(keep=ok)
    if fmt == "rle-json":
        for out in outputs:
            doc = {"video": str(source.path), "expression": out.text, "fps": source.fps,
                   "size": list(source.size), "frames": [out.rles[i] for i in sorted(out.rles)]}
            write_atomic(out.output, (json.dumps(doc) + "\n").encode())
            out.partial.unlink(missing_ok=True)
    log.finish()
    return report


def _write_frame(frame, outputs: list[VideoOutput], writers: list, partials: list, log: _Log, video: str) -> None:
    """One frame's files (mask PNG or RLE line, overlay frame) and its results rows."""
    for k, (out, pred) in enumerate(zip(outputs, frame.predictions)):
        if pred is None:  # done by an earlier run
            log.note_skipped(video, frame, out)
            if writers[k] is not None:
                writers[k].write(render_overlay(frame.image, out.stored_mask(frame.index)))
            continue
        if out.fmt == "png":
            write_atomic(out.frame_path(frame.index), encode_mask(pred.mask, "png"))
        else:
            entry = {"frame": frame.index, "time": round(frame.time, 6), "rle": rle_encode(pred.mask)}
            out.rles[frame.index] = entry
            partials[k].write(json.dumps(entry) + "\n")
            partials[k].flush()
        if writers[k] is not None:
            writers[k].write(render_overlay(frame.image, pred.mask))
        log.append(_row(video, frame, out, pred))


def _row(video: str, frame, out: VideoOutput, pred: Prediction | None) -> dict[str, Any]:
    path = out.frame_path(frame.index) if out.fmt == "png" else out.output
    return {"video": video, "frame": frame.index, "time": round(frame.time, 6), "expression": out.text,
            "output": str(path), "score": None if pred is None else round(pred.score, 6),
            "foreground": None if pred is None else round(float(pred.mask.mean()), 6),
            "seconds": round(frame.seconds, 4), "error": None}


class _Log:
    """results.jsonl: rows appended and flushed as frames finish; deduplicated and rewritten atomically at the end."""

    def __init__(self, path: Path, keep: bool) -> None:
        from .batch import read_results

        self.path = path
        self.rows = read_results(path) if keep and os.path.lexists(path) else []  # a FIFO there: refused
        if not keep:
            path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._ok = {(r.get("expression"), r.get("output"), r.get("frame")) for r in self.rows if not r.get("error")}
        self.file = open(path, "a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.file.write(json_text(row) + "\n")
        self.file.flush()

    def note_skipped(self, video: str, frame, out: VideoOutput) -> None:
        row = _row(video, frame, out, None)
        if (row["expression"], row["output"], row["frame"]) not in self._ok:
            self.append({**row, "seconds": 0.0, "skipped": True})

    def finish(self) -> None:
        self.file.close()
        latest: dict[Any, dict[str, Any]] = {}
        for row in self.rows:
            key = (row.get("video"), row.get("expression"), row.get("output"), row.get("frame"))
            latest.pop(key, None)
            latest[key] = row
        write_atomic(self.path, "".join(json_text(r) + "\n" for r in latest.values()).encode())


def run_from_args(args: argparse.Namespace) -> int:
    """`unilseg segment --video`: check every argument, open the video (first frame decoded), then load
    the model and run; returns the exit code (1 if the video stopped decoding early)."""
    from .batch import check_output_dir, read_expression_file
    from .errors import UnilsegError
    from .settings import check_threshold
    from .video import open_video

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
    if args.overlay not in (None, True, "mp4"):
        raise UnilsegError(f"--overlay {args.overlay}: for --video give no value (an mp4 beside the masks)")
    if args.sp is None:
        raise UnilsegError("--video writes a folder of masks per instruction: pass --sp DIR")
    for flag, value in (("--batch-size", args.batch_size), ("--text-batch", args.text_batch)):
        if value is not None and value < 1:
            raise UnilsegError(f"{flag} must be at least 1, not {value}")
    if args.threshold is not None:
        check_threshold(args.threshold)
    if not 0 <= args.smooth < 1:
        raise UnilsegError(f"--smooth {args.smooth}: use 0 (off) <= ALPHA < 1")
    if args.fps is not None and args.fps <= 0:
        raise UnilsegError(f"--fps must be positive, not {args.fps}")
    selection = FrameSelection(args.every, args.max_frames, args.start, args.end)
    out_dir = check_output_dir(args.sp, len(texts))
    source = open_video(args.video, args.fps)  # exit 2 here, before any model work, if it cannot be decoded

    def make_predictor():
        from .cliargs import predictor_from_args

        return predictor_from_args(args)

    show = args.progress if args.progress is not None else sys.stderr.isatty()
    report = run_video(make_predictor, source, texts, out_dir, fmt=fmt, overlay=args.overlay is not None,
                       selection=selection, batch_size=args.batch_size, smooth=args.smooth,
                       skip_existing=args.skip_existing, progress=bool(show))
    if report.error:
        print(shown(f"error: {report.error}"), file=sys.stderr)
        return 1
    return 0
