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
output, score, presence, present, foreground, seconds, error.

A resumed run (`skip_existing`) trusts only what it checks: a mask frame that is not a
whole PNG of the video's size, an RLE line or final-JSON frame that lacks a key, has the
wrong type or does not cover the video's size, and a results row of the wrong shape are
redone.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
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
    results_row,
)
from unilseg.batch.run import ItemResult, StopJob, run_job
from unilseg.errors import UnilsegError, WriteError
from unilseg.inference.predictor import EncodedTexts, Prediction, Predictor
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
from unilseg.tasks.video import FrameSelection, Smoother, VideoSource, frame_files, segment_frame

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
    path = Path(video)
    if path.is_dir():
        for frame in frame_files(path):  # the files the video reader will read
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

    from unilseg.tasks.video import _quiet_ffmpeg, opencv_silenced

    if not path.is_file():
        return 0
    _quiet_ffmpeg()
    with opencv_silenced():  # its own "can't open" warning
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened() or not capture.read()[0]:
                return 0
            return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        finally:
            capture.release()


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


@dataclass(eq=False)
class Frame:
    """A selected frame as read: the image key of its items (one frame, one Swin pass)."""

    index: int
    bgr: np.ndarray | None  # BGR uint8 (H, W, 3); None if all its pairs are done and no overlay needs it
    seq: int  # its place among the frames read, for smoothing


@dataclass(eq=False)
class FramePair:
    """One (frame, instruction) of a video job: the job loop's item, one mask and one results row."""

    index: int | None  # the frame; None for the row that says where decoding stopped
    k: int  # the instruction
    out: VideoOutput
    frame: Frame | None = None  # None for a frame that could not be read
    error: str | None = None

    @property
    def image(self) -> Frame | None:
        return self.frame

    @property
    def output(self) -> Path:
        """What its row names: the mask PNG (png), else the JSON; the mask folder for a failed frame."""
        return self.out.frame_path(self.index) if self.out.fmt == "png" and self.error is None else self.out.output

    def is_done(self) -> bool:
        return self.index is not None and self.out.is_done(self.index)


def frame_pairs(source: VideoSource, outputs: list[VideoOutput], selection: FrameSelection,
                done: Callable[[int, int], bool], images_of_done: bool) -> Iterator[FramePair]:
    """The job's items as the video is read: each selected frame's pairs in instruction order, then a
    failed pair per instruction for each frame that could not be read and where decoding stopped.

    done(frame, k): pair already there; a frame whose pairs are all done is not decoded unless
    `images_of_done` (the overlay redraws it). Frames of another size are resized to the
    first's (one warning at the end).
    """
    fps = source.fps

    def want(i: int) -> bool:
        return selection.selects(i, fps) and (images_of_done or not all(done(i, k) for k in range(len(outputs))))

    seq = 0
    try:
        for i, image in source.frames(want, stop=lambda i: selection.past(i, fps)):
            if not selection.selects(i, fps):
                continue
            frame = Frame(i, image, seq)
            seq += 1
            for k, out in enumerate(outputs):
                yield FramePair(i, k, out, frame)
    finally:
        source.close()
    note = source.resize_note()
    if note:
        warnings.warn(note, stacklevel=2)
    failed: list[tuple[int | None, str]] = [*source.failed] + ([(None, source.stopped)] if source.stopped else [])
    for k, out in enumerate(outputs):
        for i, why in failed:
            yield FramePair(i, k, out, error=why)


class VideoStep:
    """Video frames on the job loop: each pair's mask from the per-text encoded texts and smoothing
    state, written as a mask PNG or an RLE line, and drawn into its instruction's overlay.

    Every write error stops the job (StopJob): the overlay and the frames file must not miss a
    frame. `close` closes the frames-so-far files; the overlays are the caller's (`writers`).
    """

    unit = "mask"
    row_schema = VIDEO_ROW

    def __init__(self, video: str, texts: list[str], fps: float, smooth: float,
                 writers: list[_OverlayWriter | None]) -> None:
        self.video, self.texts, self.fps = video, texts, fps
        self.smoother = Smoother(smooth, len(texts))
        self.writers = writers
        self.encoded: EncodedTexts | None = None
        self.partials: dict[int, JsonlAppender] = {}  # k -> its frames-so-far file, opened on its first frame

    def prepare(self, predictor: Predictor) -> None:
        self.encoded = predictor.encode_texts(self.texts)

    def predict(self, predictor: Predictor, chunk: list[tuple[np.ndarray, list[FramePair]]]) -> Iterator[ItemResult]:
        """The chunk's frames through Swin as one batch, then each frame's pairs decoded as one batch."""
        t0 = time.perf_counter()
        embeddings = predictor.embed([bgr for bgr, _ in chunk])
        share = (time.perf_counter() - t0) / len(chunk)
        for emb, (bgr, pairs) in zip(embeddings, chunk):
            t1 = time.perf_counter()
            preds = segment_frame(predictor, self.encoded, emb, [p.k for p in pairs], self.smoother, pairs[0].frame.seq)
            seconds = share + time.perf_counter() - t1
            for pair, pred in zip(pairs, preds):
                yield ItemResult(pair, pred, None, seconds, bgr)

    def write(self, r: ItemResult) -> None:
        try:
            self._write(r.item, r.prediction)
        except Exception as e:
            raise StopJob(e) from e

    def _write(self, pair: FramePair, pred: Prediction | None) -> None:
        out, writer = pair.out, self.writers[pair.k]
        if pred is None:  # done by an earlier run: only its overlay frame is drawn again
            if writer is not None:
                writer.write(render_overlay(pair.frame.bgr, out.stored_mask(pair.index)))
            return
        if out.fmt == "png":
            write_atomic(out.frame_path(pair.index), encode_mask(pred.mask, "png"))
        else:
            entry = {"frame": pair.index, "time": round(pair.index / self.fps, 6), "rle": rle_encode(pred.mask)}
            out.rles[pair.index] = entry
            if pair.k not in self.partials:
                self.partials[pair.k] = JsonlAppender(out.partial)
            self.partials[pair.k].append(entry)
        if writer is not None:
            writer.write(render_overlay(pair.frame.bgr, pred.mask))

    def row(self, r: ItemResult) -> dict[str, Any]:
        pair, pred = r.item, r.prediction
        time_ = None if pair.index is None else round(pair.index / self.fps, 6)
        return results_row(video=self.video, frame=pair.index, time=time_, expression=pair.out.text,
                           output=str(pair.output), score=None if pred is None else round(pred.score, 6),
                           presence=None if pred is None else round(pred.presence, 6),
                           present=None if pred is None else bool(pred.present),
                           foreground=None if pred is None else round(float(pred.mask.mean()), 6),
                           seconds=r.seconds, error=r.error)

    def skipped_row(self, pair: FramePair) -> dict[str, Any]:
        return self.row(ItemResult(pair, None, None, 0.0))

    def failure(self, pair: FramePair, error: str) -> str:
        return f"failed: {self.video} frame {pair.index} {pair.out.text!r}: {error}"

    @staticmethod
    def row_key(row: dict[str, Any]) -> Any:
        """A video row's identity: one row per (video, instruction, output, frame) survives."""
        return (row.get("video"), row.get("expression"), row.get("output"), row.get("frame"))

    def close(self) -> None:
        for f in self.partials.values():
            f.close()


def run_video(
    predictor: Predictor | Callable[[], Predictor], source: VideoSource, texts: list[str], out_dir: str | Path, *,
    fmt: str = "png", overlay: bool = False, selection: FrameSelection | None = None, batch_size: int | None = None,
    smooth: float = 0.0, skip_existing: bool = False, progress: bool = False, registry: OutputRegistry | None = None,
) -> VideoReport:
    """Segment `source` for every text and write each instruction's outputs under `out_dir` (see the module).

    The frames stream through the job loop (`run_job` with a VideoStep, one item per frame
    and instruction). predictor: a Predictor, or a function making one (called unless every
    output is there already). batch_size: frames per Swin batch (default 1 on CPU, 4 on a
    GPU). Returns what was done; a video that stopped decoding early is in `.error` (its
    decodable frames are written, rows logged, the JSON and overlay finished). registry: the
    job's claims so far (e.g. its expression file; default: a new one); the video and every
    output are claimed in it first, and one that would write over an input or another
    output raises a UnilsegError before anything is read or written.
    """
    selection = selection or FrameSelection()
    out_dir = Path(out_dir)
    try:
        registry = claim_video(registry if registry is not None else OutputRegistry(), source.path)
        results = confine(out_dir / "results.jsonl", out_dir)
        registry.reserve(out_dir, r"results\.jsonl", f"the results log {results}")
        outputs = plan_outputs(source.path, texts, out_dir, fmt, overlay, source.size, registry)
        if batch_size is not None and batch_size < 1:
            raise UnilsegError(f"batch size must be at least 1, not {batch_size}")
        writers = [_OverlayWriter(o.overlay_path, source.fps / selection.every) if overlay else None for o in outputs]
        step = VideoStep(str(source.path), texts, source.fps, smooth, writers)
    except BaseException:
        source.close()
        raise
    if fmt == "rle-json":
        for out in outputs:
            _load_rles(out, skip_existing, source.frame_count)
    report = VideoReport(outputs=outputs)
    indices = selection.indices(source.fps, source.frame_count)
    if skip_existing and indices is not None:
        planned = [FramePair(i, k, out) for i in indices for k, out in enumerate(outputs)]
        if (all(p.is_done() for p in planned) and all(o.output.exists() and (not overlay or mp4_frames(
                o.overlay_path) == len(indices)) for o in outputs)):  # all there: rows an earlier run lost are logged
            source.close()
            run_job(predictor, planned, step, results=results, skip_existing=True)
            report.skipped = len(indices)
            return report
    computed: dict[int, bool] = {}  # frame -> whether one of its pairs was computed

    def count(r: ItemResult) -> None:
        if r.error is None:
            computed[r.item.index] = computed.get(r.item.index, False) or not r.skipped

    done = (lambda i, k: outputs[k].is_done(i)) if skip_existing else (lambda i, k: False)
    ok = False
    failures: list[str] = []  # overlays that could not be written
    try:
        run_job(predictor, frame_pairs(source, outputs, selection, done, images_of_done=overlay), step,
                results=results, skip_existing=skip_existing, batch_size=batch_size, load=lambda f: f.bgr,
                progress=progress, report=lambda line: None, on_result=count)
        ok = True
    finally:
        source.close()
        step.close()
        for w in writers:  # every one, even if one fails: no temporary file stays
            if w is not None:
                try:
                    w.finish(keep=ok)
                except WriteError as e:
                    failures.append(str(e))
    report.frames = sum(computed.values())
    report.skipped = len(computed) - report.frames
    report.error = source.problem()  # its frames' rows are logged (failed pairs)
    if fmt == "rle-json":
        for out in outputs:
            doc = {"video": str(source.path), "expression": out.text, "fps": source.fps,
                   "size": list(source.size), "frames": [out.rles[i] for i in sorted(out.rles)]}
            write_atomic(out.output, (json.dumps(doc) + "\n").encode())
            out.partial.unlink(missing_ok=True)
    if failures:  # the masks, JSON and rows are written; the overlay is not
        raise WriteError("; ".join(failures + ([report.error] if report.error else [])))
    return report
