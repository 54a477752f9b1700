"""Writing a video's results: mask frames or per-frame RLE, overlay videos, results rows, resume.

Per instruction, under the output directory (names as a batch names them, `plan_items`):
  png:       `{video_stem}__{slug}/000123.png`, one 0/255 PNG per frame (atomic: present means done)
  rle-json:  `{video_stem}__{slug}.json`, {"video", "expression", "fps", "size", "frames": [{"frame",
             "time", "rle"}]}, rewritten atomically at the end; until then each frame's RLE is
             appended to `.{name}.frames.jsonl`, which survives a kill and is what a resumed run reads
  overlay:   `{video_stem}__{slug}.overlay.mp4` (mp4v, the input's size, fps / every), renamed
             into place when complete and read back whole (an encoder that could not write
             every frame, e.g. on a full disk, leaves no file and is a WriteError)
and `results.jsonl`, one row per (frame, instruction): video, frame, time, expression,
output, score, foreground, seconds, error.

A resumed run (`skip_existing`) trusts only what it checks: a mask frame that is not a
whole PNG of the video's size, an RLE line or final-JSON frame that lacks a key, has the
wrong type or does not cover the video's size, and a results row of the wrong shape are
redone.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.batch.results import (
    JsonlAppender,
    Schema,
    is_index,
    is_number,
    is_opt_index,
    is_opt_text,
    is_text,
    read_results,
)
from unilseg.errors import WriteError
from unilseg.inference.predictor import Prediction, Predictor
from unilseg.io.paths import json_text, shown
from unilseg.io.writers import (
    OutputRegistry,
    confine,
    encode_mask,
    intact,
    new_temporary,
    render_overlay,
    rle_decode,
    rle_encode,
    rle_valid,
    write_atomic,
)
from unilseg.tasks.video import FrameSelection, VideoFrame, VideoReadError, VideoSource, segment_frames

VIDEO_FORMATS = ("png", "rle-json")
# What a resumed run relies on in a results row, and in a frame's RLE entry (its `rle` is checked apart).
VIDEO_ROW: Schema = {"video": is_text, "expression": is_text, "output": is_text, "frame": is_opt_index,
                     "error": is_opt_text}
FRAME_ENTRY: Schema = {"frame": is_index, "time": lambda v: is_number(v) and math.isfinite(v),
                       "rle": lambda v: isinstance(v, dict)}


@dataclass
class VideoOutput:
    """Where one instruction's results go, and (rle-json) its frames so far."""

    text: str
    base: Path  # DIR/{video_stem}__{slug}, no extension
    fmt: str
    overlay: bool
    rles: dict[int, dict[str, Any]] = field(default_factory=dict)  # frame -> {"frame", "time", "rle"}
    size: tuple[int, int] | None = None  # (H, W) every mask must have: the video's
    _checked: dict[int, bool] = field(default_factory=dict, repr=False)  # png frame -> whole (checked once)

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
        """Whether frame i's mask is there and whole: a PNG of the video's size (decodable, if the
        overlay will draw it) or a checked RLE entry; anything else is redone."""
        if self.fmt != "png":
            return i in self.rles
        if i not in self._checked:
            path = self.frame_path(i)
            self._checked[i] = intact(path, self.size) and (not self.overlay or self._read_png(i) is not None)
        return self._checked[i]

    def _read_png(self, i: int) -> np.ndarray | None:
        import cv2

        try:
            mask = cv2.imread(str(self.frame_path(i)), cv2.IMREAD_GRAYSCALE)
        except cv2.error:
            return None
        return mask if mask is not None and (self.size is None or mask.shape == tuple(self.size)) else None

    def stored_mask(self, i: int) -> np.ndarray:
        """A finished frame's mask, read back (for the overlay of a resumed run): bool (H, W)."""
        if self.fmt == "png":
            mask = self._read_png(i)
            if mask is None:  # checked by is_done; changed since
                raise WriteError(f"cannot read back {self.frame_path(i)}; run again to redo it")
            return mask > 127
        return rle_decode(self.rles[i]["rle"])


def plan_outputs(video: str | Path, texts: list[str], out_dir: Path, fmt: str, overlay: bool,
                 size: tuple[int, int] | None = None, registry: OutputRegistry | None = None) -> list[VideoOutput]:
    """One VideoOutput per text, named `{video_stem}__{slug}` (clashes numbered, as in a batch).

    Every file each writes (the mask folder or JSON, the partial frames file, the overlay)
    is claimed in `registry` (default: a new one, holding the video as an input): one that
    would write over an input or another output raises a UnilsegError."""
    from unilseg.batch import plan_items

    registry = registry if registry is not None else claim_video(OutputRegistry(), video)
    items = plan_items([(str(video), t, None) for t in texts], out_dir)
    outputs = [VideoOutput(t, item.output.with_suffix(""), fmt, overlay, size=size) for t, item in zip(texts, items)]
    for out in outputs:  # the frame folder may be a symlink leading out of out_dir: the whole job stops
        for path in (out.base, out.output, out.partial, out.overlay_path):
            confine(path, out_dir)
        what = f"of --exp {out.text!r}"
        if fmt == "png":
            registry.write_dir(out.output, f"the mask folder {out.output} {what}")
        else:
            registry.write(out.output, f"the masks {out.output} {what}")
            registry.write(out.partial, f"the frames-so-far file {out.partial} {what}")
        if overlay:
            registry.write(out.overlay_path, f"the overlay video {out.overlay_path} {what}")
    return outputs


def claim_video(registry: OutputRegistry, video: str | Path) -> OutputRegistry:
    """Claim a video file, or each frame image of a folder of frames, as an input; returns the registry."""
    from unilseg.batch.inputs import IMAGE_EXTENSIONS

    path = Path(video)
    if path.is_dir():
        for frame in sorted(path.iterdir()):
            if frame.suffix.lower() in IMAGE_EXTENSIONS and frame.is_file():
                registry.read(frame, f"the frame {frame} of --video {video}")
    else:
        registry.read(path, f"--video {video}")
    return registry


@dataclass
class VideoReport:
    frames: int = 0  # frames with at least one instruction computed
    skipped: int = 0  # frames whose outputs were all there already
    error: str | None = None  # where decoding stopped, if it did
    outputs: list[VideoOutput] = field(default_factory=list)


def mp4_frames(path: Path) -> int:
    """How many frames an mp4 declares and whose first decodes (0 if it cannot be opened or read)."""
    import cv2

    from unilseg.tasks.video import _quiet_ffmpeg

    if not path.is_file():
        return 0
    _quiet_ffmpeg()
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its own "can't open" warning
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened() or not capture.read()[0]:
            return 0
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    finally:
        capture.release()
        cv2.utils.logging.setLogLevel(level)


class _OverlayWriter:
    """An mp4 written to a temporary name beside its target; `finish` renames it into place once it
    reads back with every frame written (OpenCV's encoder drops frames it cannot write silently)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.tmp: Path | None = None  # created exclusively on the first frame; only this writer removes it
        self.writer = None
        self.size: tuple[int, int] | None = None  # (W, H) of the first frame: every frame is written so
        self.written = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.tmp = new_temporary(self.path, ".part.mp4")
            h, w = frame_bgr.shape[:2]
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self.writer.isOpened():
                self.writer = None
                self.tmp.unlink(missing_ok=True)
                self.tmp = None
                raise WriteError(f"cannot write the overlay video {self.path} (no mp4v encoder in this OpenCV, "
                                 "or the folder refuses the file)")
        if frame_bgr.shape[1::-1] != self.size:  # the encoder would drop it without a word
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame_bgr)
        self.written += 1

    def finish(self, keep: bool = True) -> None:
        """Close the file; with keep, check it and rename it into place (a WriteError if it holds fewer
        frames than were written: the temporary file is removed), else remove it."""
        if self.tmp is None:
            return
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        try:
            if keep:
                found = mp4_frames(self.tmp)
                if found != self.written:
                    raise WriteError(f"cannot write the overlay video {self.path}: it reads back with {found} of "
                                     f"the {self.written} frames written (a full disk or a file size limit?)")
                os.replace(self.tmp, self.path)
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from e
        finally:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def _load_rles(out: VideoOutput, resume: bool, frame_count: int | None = None) -> None:
    """Frames already done for an rle-json output: the final JSON's, then the kill-proof partial file's.

    Only entries that pass the checks are kept: `frame` a frame of the video, `time` a number,
    `rle` a COCO RLE covering the video's size; the others are redone.
    """
    if not resume:
        out.partial.unlink(missing_ok=True)
        return
    entries: list[Any] = []
    if out.output.is_file():
        try:
            doc = json.loads(out.output.read_bytes().decode("utf-8"))
            entries = doc.get("frames", []) if isinstance(doc, dict) else []
        except (OSError, ValueError, RecursionError):
            pass  # not ours or damaged: recompute
    entries = (entries if isinstance(entries, list) else []) + read_results(out.partial)
    for f in entries:
        if (isinstance(f, dict) and all(k in f and ok(f[k]) for k, ok in FRAME_ENTRY.items())
                and (frame_count is None or f["frame"] < frame_count) and rle_valid(f["rle"], out.size)):
            out.rles[f["frame"]] = {"frame": f["frame"], "time": f["time"], "rle": f["rle"]}


def run_video(
    predictor: Predictor | Callable[[], Predictor], source: VideoSource, texts: list[str], out_dir: str | Path, *,
    fmt: str = "png", overlay: bool = False, selection: FrameSelection | None = None, batch_size: int | None = None,
    smooth: float = 0.0, skip_existing: bool = False, progress: bool = False, registry: OutputRegistry | None = None,
) -> VideoReport:
    """Segment `source` for every text and write each instruction's outputs under `out_dir` (see the module).

    predictor: a Predictor, or a function making one (called unless every output is there
    already). batch_size: frames per Swin batch (default 1 on CPU, 4 on a GPU). Returns what
    was done; a video that stopped decoding early is in `.error` (its decodable frames are
    written, rows logged, the JSON and overlay finished). registry: the job's claims so far
    (e.g. its expression file; default: a new one); the video and every output are claimed
    in it first, and one that would write over an input or another output raises a
    UnilsegError before anything is read or written.
    """
    selection = selection or FrameSelection()
    out_dir = Path(out_dir)
    try:
        registry = claim_video(registry if registry is not None else OutputRegistry(), source.path)
        results = confine(out_dir / "results.jsonl", out_dir)
        registry.reserve(out_dir, r"results\.jsonl", f"the results log {results}")
        outputs = plan_outputs(source.path, texts, out_dir, fmt, overlay, source.size, registry)
    except BaseException:
        source.close()
        raise
    if fmt == "rle-json":
        for out in outputs:
            _load_rles(out, skip_existing, source.frame_count)
    report = VideoReport(outputs=outputs)
    done = (lambda i, k: outputs[k].is_done(i)) if skip_existing else None
    indices = selection.indices(source.fps, source.frame_count)
    finished = (done is not None and indices is not None and all(done(i, k) for i in indices for k in range(len(texts)))
                and all(o.output.exists() and (not overlay or mp4_frames(o.overlay_path) == len(indices))
                        for o in outputs))
    if finished:
        report.skipped = len(indices)
        log = _Log(results, keep=True)
        for i in indices:  # rows an earlier run lost (or that were damaged and dropped)
            for out in outputs:
                log.note_skipped(str(source.path), VideoFrame(i, i / source.fps, None, []), out)
        log.finish()
        source.close()
        return report
    if not isinstance(predictor, Predictor):
        predictor = predictor()  # before anything is written: a model that fails to load leaves no files
    log = _Log(results, keep=skip_existing)
    if batch_size is None:  # frames per Swin batch: as a batch of images does
        batch_size = 1 if predictor.device.type == "cpu" else 4
    writers = [_OverlayWriter(o.overlay_path, source.fps / selection.every) if overlay else None for o in outputs]
    partials: list[JsonlAppender | None] = []
    from tqdm import tqdm

    bar = tqdm(total=len(indices) if indices is not None else None, unit="frame", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    ok = False
    failures: list[str] = []  # overlays that could not be written
    try:
        partials += [JsonlAppender(o.partial) if fmt == "rle-json" else None for o in outputs]
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
            failed: list[tuple[int | None, str]] = [*source.failed]
            if source.stopped:
                failed.append((None, source.stopped))
            for out in outputs:
                for i, why in failed or [(None, str(e))]:  # a row per unreadable frame, one where decoding stopped
                    log.append({"video": str(source.path), "frame": i, "time": None if i is None else
                                round(i / source.fps, 6), "expression": out.text, "output": str(out.output),
                                "score": None, "foreground": None, "seconds": 0.0, "error": why})
        ok = True
    finally:
        bar.close()
        log.close()
        for f in partials:
            if f is not None:
                f.close()
        for w in writers:  # every one, even if one fails: no temporary file stays
            if w is not None:
                try:
                    w.finish(keep=ok)
                except WriteError as e:
                    failures.append(str(e))
    if fmt == "rle-json":
        for out in outputs:
            doc = {"video": str(source.path), "expression": out.text, "fps": source.fps,
                   "size": list(source.size), "frames": [out.rles[i] for i in sorted(out.rles)]}
            write_atomic(out.output, (json.dumps(doc) + "\n").encode())
            out.partial.unlink(missing_ok=True)
    log.finish()
    if failures:  # the masks, JSON and rows are written; the overlay is not
        raise WriteError("; ".join(failures + ([report.error] if report.error else [])))
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
            partials[k].append(entry)
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
        self.path = path
        self.rows = read_results(path, VIDEO_ROW) if keep else []  # damaged rows dropped: their frames are relogged
        if not keep:
            path.unlink(missing_ok=True)
        self._ok = {(r["expression"], r["output"], r["frame"]) for r in self.rows if not r["error"]}
        self.file = JsonlAppender(path)

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.file.append(row)

    def close(self) -> None:
        self.file.close()

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
    from unilseg.batch import check_output_dir, read_expression_file
    from unilseg.cli.args import show_progress, video_overlay
    from unilseg.cli.segment import claim_inputs
    from unilseg.errors import UnilsegError
    from unilseg.tasks.video import open_video

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

    def make_predictor():
        from unilseg.cli.args import predictor_from_args

        return predictor_from_args(args)

    show = show_progress(args)
    report = run_video(make_predictor, source, texts, out_dir, fmt=fmt, overlay=overlay,
                       selection=selection, batch_size=args.batch_size, smooth=args.smooth,
                       skip_existing=args.skip_existing, progress=bool(show), registry=registry)
    if report.error:
        print(shown(f"error: {report.error}"), file=sys.stderr)
        return 1
    return 0
