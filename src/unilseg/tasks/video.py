"""Referring video segmentation: frames stream through the one inference path.

    from unilseg.tasks.video import segment_video

    for frame in segment_video(predictor, "clip.mp4", ["the red car", "the sky"], every=2):
        frame.index, frame.time, [p.mask for p in frame.predictions]

UniLSeg has no temporal module (the paper trains video data as frames), so a video is
segmented frame by frame: each instruction goes through the tokenizer and the text
encoder once per video (`Predictor.encode_texts`), frames go through Swin in batches
of `batch_size` (`Predictor.embed`), and each frame's maps are decoded against the
encoded texts (`Predictor.pair_logits`). Frames are read one batch at a time and never
all held, so memory stays flat however long the video is. With `smooth` 0 (the
default) each frame's mask is exactly the single-image call's; `smooth` ALPHA in (0, 1)
keeps an exponential moving average of each instruction's soft map,
s_t = ALPHA * s_(t-1) + (1 - ALPHA) * p_t, and thresholds that.

`open_video` opens a video file (whatever OpenCV's FFmpeg reads: mp4, avi, webm, mov,
gif, ...) or a folder of frame images, and reads its first frame at once, so a file
that cannot be decoded is a UnilsegError (exit 2) before any model work. A video that
stops decoding early (truncated, corrupt) yields the frames that decode, then raises
`VideoReadError` (exit 1) naming where it stopped. In a folder, a later frame that cannot
be read (empty, corrupt, a header claiming more than OpenCV's pixel limit) is skipped and
named in that error; the frames after it are segmented. A frame of another size than the
first is resized to the first frame's size (one warning line names them), so every mask,
RLE and overlay frame of a video has one size.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.inference.predictor import EncodedTexts, ImageEmbedding, Prediction, Predictor, prediction_of
from unilseg.io.paths import check_regular, path_problem, shown, text_problem, user_path

FOLDER_FPS = 25.0  # frame rate assumed for a folder of frames unless told


class VideoReadError(UnilsegError):
    """A video that stopped decoding before its end: the frames before were processed (exit 1)."""

    exit_code = 1


@dataclass
class VideoFrame:
    """One frame's results: a Prediction per instruction."""

    index: int  # frame number in the video, from 0
    time: float  # seconds from the start (index / fps)
    image: np.ndarray  # BGR uint8 (H, W, 3)
    predictions: list[Prediction]
    seconds: float = 0.0  # this frame's share of encode + decode time


@contextlib.contextmanager
def opencv_silenced() -> Iterator[None]:
    """OpenCV's own log off for the block (`cv2.utils.logging` in OpenCV 5, `cv2.setLogLevel` in 4.x)."""
    import cv2

    log = getattr(cv2.utils, "logging", None)
    get, put = (log.getLogLevel, log.setLogLevel) if log is not None else (cv2.getLogLevel, cv2.setLogLevel)
    level = get()
    put(0)  # LOG_LEVEL_SILENT in both
    try:
        yield
    finally:
        put(level)


def _quiet_ffmpeg() -> None:
    """Keep FFmpeg's own log lines ("moov atom not found", ...) off stderr: we report one line ourselves."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET; read when a capture opens


def frame_files(folder: Path) -> list[Path]:
    """The frames of a folder of frames, in name order: its image files (not hidden ones)."""
    from unilseg.io.paths import IMAGE_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


class VideoSource:
    """Frames of a video file or a folder of images, decoded in order, one at a time.

    `open_video` makes one. Attributes: fps, size (H, W), frame_count (None if the
    container does not say), stem (for output names), stopped (why decoding ended early,
    or None), failed (frames of a folder that could not be read and were skipped: (index,
    why)), resized (frames of another size than the first, resized to it: (index, (H, W))).
    """

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        self.path = user_path(path)
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise UnilsegError("{field} must be a finite number above 0, not {value}", field="fps", value=fps)
        self.stem = self.path.name if self.path.is_dir() else self.path.stem
        self.stopped: str | None = None
        self.failed: list[tuple[int, str]] = []
        self.resized: list[tuple[int, tuple[int, int]]] = []
        self._capture = None
        self._files: list[Path] | None = None
        if self.path.is_dir():
            self._files = frame_files(self.path)
            if not self._files:
                raise UnilsegError("{field} {path}: the folder holds no frame images (.png, .jpg, ...)",
                                   field="video", path=path)
            self.fps = float(fps or FOLDER_FPS)
            self.frame_count: int | None = len(self._files)
            try:
                first = self._read_file(0)
            except UnilsegError as e:
                raise UnilsegError("{field} {path}: the first frame: {why}", field="video", path=path, why=e) from None
        else:
            if not os.path.lexists(self.path):
                raise UnilsegError("video not found: {path}; check the {field} path", field="video", path=path)
            check_regular(self.path, "video")  # a FIFO or device would block or never end
            if path_problem(str(self.path)) is None and text_problem(str(self.path)):
                raise UnilsegError("{field} {path}: OpenCV's video reader takes only UTF-8 file names; rename the "
                                   "file, or give a folder of its frames", field="video", path=shown(self.path))
            import cv2

            _quiet_ffmpeg()
            with opencv_silenced():  # its "can't open" warning
                capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
                ok, first = capture.read() if capture.isOpened() else (False, None)
            if not ok or first is None:
                capture.release()
                raise UnilsegError(f"cannot read {path} as a video (not a video, truncated before its first frame, "
                                   "or a codec this OpenCV lacks); try converting it to H.264 mp4 or a folder of PNGs")
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frame_count = count if count > 0 else None
            rate = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps or (rate if rate and math.isfinite(rate) and rate > 0 else FOLDER_FPS))
            self._capture = capture
        self.size: tuple[int, int] = tuple(first.shape[:2])  # type: ignore[assignment]
        self._first: np.ndarray | None = first

    def _read_file(self, i: int) -> np.ndarray:
        """Frame file i as BGR; a UnilsegError (the single-image reader's) if it cannot be read."""
        from unilseg.inference.transforms import decode_image

        path = self._files[i]
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise UnilsegError(f"cannot read {path}: {e.strerror or type(e).__name__}") from e
        return decode_image(data, path)

    def _sized(self, i: int, image: np.ndarray) -> np.ndarray:
        """A frame at the first frame's size: resized (and noted in `resized`) if it differs."""
        if image.shape[:2] == self.size:
            return image
        import cv2

        self.resized.append((i, tuple(image.shape[:2])))
        h, w = self.size
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)

    def frame_name(self, i: int) -> str:
        """How a message names frame i: its file in a folder, else its index."""
        return self._files[i].name if self._files is not None and i < len(self._files) else f"frame {i}"

    def problem(self) -> str | None:
        """Why some frames were not segmented (decoding stopped, frames unreadable), or None."""
        parts = [self.stopped] if self.stopped else []
        if self.failed:
            named = "; ".join(f"{self.frame_name(i)}: {why}" for i, why in self.failed[:3])
            more = f" (and {len(self.failed) - 3} more)" if len(self.failed) > 3 else ""
            parts.append(f"{self.path}: {len(self.failed)} frame(s) could not be read and were skipped: {named}{more}")
        return "; ".join(parts) or None

    def resize_note(self) -> str | None:
        """One line naming the frames resized to the first frame's size, or None."""
        if not self.resized:
            return None
        h, w = self.size
        named = ", ".join(f"{self.frame_name(i)} ({fw}x{fh})" for i, (fh, fw) in self.resized[:5])
        more = f" and {len(self.resized) - 5} more" if len(self.resized) > 5 else ""
        return (f"{self.path}: {len(self.resized)} frame(s) of another size were resized to the first frame's "
                f"{w}x{h}: {named}{more}")

    def frames(self, want: Callable[[int], bool] = lambda i: True,
               stop: Callable[[int], bool] = lambda i: False) -> Iterator[tuple[int, np.ndarray | None]]:
        """(index, BGR image) for each frame in order; image None where `want(index)` is false
        (the frame is skipped, not decoded). Ends before the first index where `stop(index)`."""
        i = 0
        while not stop(i):
            if self._first is not None:
                image, self._first = self._first, None
                yield i, (image if want(i) else None)
            elif self._files is not None:
                if i >= len(self._files):
                    return
                if want(i):
                    try:
                        image = self._sized(i, self._read_file(i))
                    except UnilsegError as e:  # this frame fails alone; the rest of the folder goes on
                        self.failed.append((i, str(e)))
                        i += 1
                        continue
                    yield i, image
                else:
                    yield i, None
            else:
                wanted = want(i)
                ok, image = (self._capture.read() if wanted else (self._capture.grab(), None))
                if not ok:
                    if self.frame_count is not None and i < self.frame_count:
                        self._stop(i, f"of the {self.frame_count} it declares (truncated or corrupt)")
                    return
                yield i, (None if image is None else self._sized(i, image))
            i += 1

    def _stop(self, i: int, why: str) -> None:
        self.stopped = f"{self.path}: decoding stopped at frame {i} ({i / self.fps:.2f} s) {why}"

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def open_video(path: str | Path, fps: float | None = None) -> VideoSource:
    """A video file or a folder of frames, opened and its first frame read (UnilsegError if it cannot be)."""
    return VideoSource(path, fps)


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to segment: every `every`-th from `start` seconds, before `end`, at most `max_frames`."""

    every: int = 1
    max_frames: int | None = None
    start: float = 0.0
    end: float | None = None

    def __post_init__(self) -> None:
        for field, value in (("start", self.start), ("end", self.end)):
            if value is not None and not math.isfinite(value):
                raise UnilsegError("{field} must be a finite number of seconds, not {value}", field=field, value=value)
        if self.every < 1:
            raise UnilsegError("{field} must be at least 1, not {value}", field="every", value=self.every)
        if self.max_frames is not None and self.max_frames < 1:
            raise UnilsegError("{field} must be at least 1, not {value}", field="max_frames", value=self.max_frames)
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise UnilsegError("{start} {start_s} / {end} {end_s}: need 0 <= start < end (seconds)", field="start",
                               start_s=self.start, end_s=self.end)

    def first(self, fps: float) -> int:
        """The first frame at or after `start`."""
        return max(0, math.ceil(self.start * fps - 1e-6))

    def indices(self, fps: float, frame_count: int | None) -> range | None:
        """The selected frame indices, if the frame count is known."""
        if frame_count is None:
            return None
        last = frame_count if self.end is None else min(frame_count, math.ceil(self.end * fps - 1e-6))
        r = range(self.first(fps), max(self.first(fps), last), self.every)
        return r if self.max_frames is None else r[: self.max_frames]

    def selects(self, i: int, fps: float) -> bool:
        first = self.first(fps)
        return i >= first and (i - first) % self.every == 0 and not self.past(i, fps)

    def past(self, i: int, fps: float) -> bool:
        """Whether frame i and all after it are out of the selection (by time or by count)."""
        first = self.first(fps)
        if self.end is not None and i / fps >= self.end - 1e-9:
            return True
        return self.max_frames is not None and i >= first + self.max_frames * self.every


class Smoother:
    """Temporal smoothing of each instruction's soft map: s_t = alpha * s_(t-1) + (1 - alpha) * p_t.

    A frame is known by `seq`, its place among the frames read; an instruction's average
    restarts where its previous frame was not computed (a pair skipped as done). alpha 0: off.
    """

    def __init__(self, alpha: float, n: int) -> None:
        if not 0.0 <= alpha < 1.0:
            raise UnilsegError("{field} {value}: use 0 (off) <= ALPHA < 1", field="smooth", value=alpha)
        self.alpha = alpha
        self._state: list[tuple[int, np.ndarray] | None] = [None] * n  # per text: (seq, its average (H, W))

    def apply(self, predictor: Predictor, k: int, seq: int, pred: Prediction) -> Prediction:
        """Text k's Prediction at frame `seq`, from the running average of its soft maps (thresholded, and its
        presence judged, as a single map is)."""
        if self.alpha <= 0:
            return pred
        last = self._state[k]
        prev = last[1] if last is not None and last[0] == seq - 1 else None
        prob = pred.prob if prev is None else self.alpha * prev + (1 - self.alpha) * pred.prob
        self._state[k] = (seq, prob)
        return prediction_of(pred.text, prob, predictor.threshold, predictor.min_score)


def segment_frame(predictor: Predictor, encoded: EncodedTexts, embedding: ImageEmbedding, ks: Sequence[int],
                  smoother: Smoother, seq: int) -> list[Prediction]:
    """One frame's Predictions (masks bool (H, W)) for the encoded texts `ks`, decoded as one batch, smoothed."""
    from unilseg.inference.predictor import to_prediction

    logits = predictor.pair_logits([embedding] * len(ks), encoded.take(list(ks)))
    return [smoother.apply(predictor, k, seq, to_prediction(encoded.texts[k], lg, embedding, predictor.threshold,
                                                            predictor.min_score))
            for k, lg in zip(ks, logits)]


def segment_frames(
    predictor: Predictor, source: VideoSource, texts: Sequence[str], selection: FrameSelection | None = None,
    batch_size: int = 1, smooth: float = 0.0,
) -> Iterator[VideoFrame]:
    """Segment the selected frames of `source` for every text -> one VideoFrame per selected frame, in order.

    The texts are encoded once; `batch_size` frames share a Swin batch. smooth: EMA weight
    of the past soft map (0: off). Frames of another size are resized to the first's (one
    warning). Raises VideoReadError at the end if the video stopped early or frames of a
    folder could not be read (they are left out).
    """
    selection = selection or FrameSelection()
    smoother = Smoother(smooth, len(texts))
    if batch_size < 1:
        raise UnilsegError(f"batch size must be at least 1, not {batch_size}")
    encoded = predictor.encode_texts(list(texts))
    fps = source.fps
    ks = range(len(encoded))
    batch: list[tuple[int, int, np.ndarray]] = []  # (seq, frame index, BGR image)

    def flush() -> Iterator[VideoFrame]:
        if not batch:
            return
        t0 = time.perf_counter()
        embeddings = predictor.embed([img for _, _, img in batch])
        share = (time.perf_counter() - t0) / len(batch)
        for (seq, i, image), emb in zip(batch, embeddings):
            t1 = time.perf_counter()
            preds = segment_frame(predictor, encoded, emb, ks, smoother, seq)
            yield VideoFrame(i, i / fps, image, preds, share + time.perf_counter() - t1)
        batch.clear()

    seq = 0
    try:
        for i, image in source.frames(lambda i: selection.selects(i, fps), stop=lambda i: selection.past(i, fps)):
            if not selection.selects(i, fps):
                continue
            batch.append((seq, i, image))
            seq += 1
            if len(batch) >= batch_size:
                yield from flush()
        yield from flush()
    finally:
        source.close()
    note = source.resize_note()
    if note:
        warnings.warn(note, stacklevel=2)
    problem = source.problem()
    if problem:
        raise VideoReadError(problem)


def segment_video(
    predictor: Predictor, video: str | Path | VideoSource, texts: str | Sequence[str], *, every: int = 1,
    max_frames: int | None = None, start: float = 0.0, end: float | None = None, batch_size: int = 1,
    smooth: float = 0.0, fps: float | None = None,
) -> Iterator[VideoFrame]:
    """Segment a video file (or a folder of frames) for every text, frame by frame, streaming.

    Opens `video` (or takes an open VideoSource) and yields one `VideoFrame` (index, time,
    BGR image, a Prediction per text) per selected frame: every `every`-th from `start`
    seconds, before `end`, at most `max_frames`. Texts are encoded once; `batch_size` frames
    share a Swin batch; `smooth` ALPHA > 0 averages the soft maps over time.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    source = video if isinstance(video, VideoSource) else open_video(video, fps)
    selection = FrameSelection(every, max_frames, start, end)
    return segment_frames(predictor, source, texts, selection, batch_size, smooth)
