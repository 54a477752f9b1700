"""The demo page, built from a ready `Predictor` (no model loading here).

Each browser session keeps one encoded image (`ImageEmbedding`) in a `gr.State`: changing
only the instructions, the threshold, the min presence or nothing re-runs just the text
side. The cache is dropped when the tab closes (`unload`), after `SESSION_TTL_S` without a
run, or when another image or precision replaces it. Runs are queued one at a time (one
model, shared). A prediction whose presence score is below the min presence is shown as
"not found", with its presence, and its mask is empty.

Masks for download are `unilseg.io.writers.encode_mask(mask, 'png')`: the bytes the CLI writes.
"""
from __future__ import annotations

import atexit
import hashlib
import html
import io
import logging
import os
import re
import stat
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from unilseg.errors import UnilsegError
from unilseg.inference.predictor import ImageEmbedding, Prediction, Predictor
from unilseg.inference.transforms import decode_image
from unilseg.io.writers import encode_mask
from unilseg.model.spec import check_min_score, check_threshold, effective_min_score

log = logging.getLogger(__name__)

MAX_PIXELS = 40_000_000  # larger uploads are refused with a message (decoding and overlays cost memory)
MAX_INSTRUCTIONS = 16
MAX_UPLOAD = "100mb"  # Gradio refuses larger files in the browser
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the page reads no more of a file than this
SESSION_TTL_S = 900  # a session's encoded image is freed after this long without a run
DISPLAY_MIN_SIDE, DISPLAY_MAX_SIDE = 768, 1600  # long side of the shown overlay (downloads keep the image's)
FILL_ALPHA, OUTLINE_ALPHA = 0.55, 1.0
PALETTE = ("#1e90ff", "#ff3b30", "#34c759", "#ff9500", "#af52de", "#00c7be", "#ffcc00", "#ff2d55",
           "#5856d6", "#a2845e")
EXAMPLES = (  # (file in unilseg/demo/examples, instructions): what the demo model does well
    ("demo_scene.png", "the roof of the red house\nthe sky"),
    ("demo_scene_2.png", "the blue car\nall the trees"),
    ("demo_scene_3.png", "the pink tree\nthe ground"),
)
_resources = ExitStack()  # keeps example files extracted while the process runs (zipped installs)
atexit.register(_resources.close)


@dataclass
class SessionCache:
    """One browser session's encoded image; at most one (a new image or precision replaces it)."""

    key: tuple[str, str] | None = None  # (sha256 of the image file, precision)
    image: np.ndarray | None = None  # BGR uint8, for the overlay
    embedding: ImageEmbedding | None = None

    def clear(self) -> None:
        self.key = self.image = self.embedding = None


# what the page calls a library error's field (UnilsegError.field)
PAGE_FIELDS = {"threshold": "The threshold", "min_score": "The minimum presence"}
NO_IMAGE = "Upload an image first (or click one of the demo scenes below)."
# One answer for every file the page will not read (not an upload, gone, a folder, a pipe, a
# device...): the reply must not tell a caller which server paths exist.
REFUSED_FILE = "This image is not a file uploaded to this page, or it has expired; upload it again."
UNDECODABLE = ("This file could not be decoded as an image (unsupported or corrupt); "
               "upload a PNG, JPEG, WebP or BMP image.")


def uploaded_file(payload: Any) -> str | None:
    """The server-side path that gr.Image's raw (not pre-processed) value names; None for no image.

    The run event skips Gradio's pre-processing (which fails on a file PIL cannot open with a
    bare 'Error'), so the value is whatever the client sent: a FileData dict, a dict without
    `meta` (which Gradio passes on unchecked), a bare string. Which paths are then read is
    `read_upload`'s decision.
    """
    if payload is None or payload == "" or payload == {}:
        return None
    path = payload.get("path") if isinstance(payload, dict) else payload
    if not isinstance(path, str) or not path or "\0" in path:
        raise UnilsegError(REFUSED_FILE)
    return path


def inside(path: str, folder: str) -> bool:
    """True if `path`, once `..` and symlinks are resolved, lies inside `folder`."""
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([real, root]) == root and real != root


def read_upload(path: str, uploads: Callable[[str], bool] | None, folder: str | None,
                limit: int = MAX_UPLOAD_BYTES) -> bytes:
    """The bytes of the image file `path`, read without ever blocking; else UnilsegError(REFUSED_FILE).

    uploads / folder: on the served page, only a path that Gradio recorded as an upload (or an
    example it copied) and that still lies inside its upload folder once resolved, is opened;
    None (a direct Python call) takes any path. Either way only a regular file is read (a
    FIFO, a device or a folder is refused before any read: opened with O_NONBLOCK, checked
    with fstat), and at most `limit` bytes of it. Every refusal is the same message.
    """
    strict = uploads is not None
    if strict and not (os.path.isabs(path) and uploads(path) and folder and inside(path, folder)):
        raise UnilsegError(REFUSED_FILE)  # decided before the file system is touched for this path
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if strict:
        flags |= getattr(os, "O_NOFOLLOW", 0)  # Gradio's uploads are plain files, never links
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError):
        raise UnilsegError(REFUSED_FILE) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnilsegError(REFUSED_FILE)
        if info.st_size > limit:
            raise UnilsegError(f"This file is {info.st_size / 2**20:.0f} MB; the demo takes at most "
                               f"{limit / 2**20:.0f} MB. Upload a smaller image.")
        os.set_blocking(fd, True)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # it grew while being read
            raise UnilsegError(REFUSED_FILE)
        return b"".join(chunks)
    except OSError:
        raise UnilsegError(REFUSED_FILE) from None
    finally:
        os.close(fd)


class PredictorPool:
    """The page's predictor per precision: the one given, others loaded on first use."""

    def __init__(self, first: Predictor, load: Callable[[str], Predictor] | None, offered: Sequence[str]) -> None:
        self._by_precision = {first.precision: first}
        self._load = load
        self.first = first
        self.offered = tuple(offered) if load is not None else ()
        self.offered = self.offered if first.precision in self.offered else (first.precision,)

    def get(self, precision: str | None) -> tuple[Predictor, float]:
        """(predictor, seconds spent loading it now)."""
        precision = precision or self.first.precision
        if precision in self._by_precision:
            return self._by_precision[precision], 0.0
        if precision not in self.offered or self._load is None:
            raise UnilsegError(f"precision {precision!r} is not offered here; choose one of {', '.join(self.offered)}")
        t0 = time.perf_counter()
        self._by_precision[precision] = self._load(precision)
        return self._by_precision[precision], time.perf_counter() - t0


def example_paths() -> list[Path]:
    """The example scenes shipped in the package (`unilseg/demo/examples`), as files."""
    root = resources.files("unilseg.demo") / "examples"
    return [_resources.enter_context(resources.as_file(root / name)) for name, _ in EXAMPLES]


def parse_instructions(text: str | None) -> list[str]:
    """One instruction per non-blank line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def md_escape(text: str) -> str:
    """Text shown literally in Markdown (a table cell included)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def mask_filename(index: int, text: str) -> str:
    """'01-the-roof-of-the-red-house.png' (safe, short)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].rstrip("-") or "mask"
    return f"{index:02d}-{slug}.png"


def image_pixels(source: str | Path | bytes) -> int | None:
    """Width x height from the image header (no decoding); None if PIL cannot tell.

    PIL's own decompression-bomb refusal (over 2 x `PIL.Image.MAX_IMAGE_PIXELS`) still yields
    the size its message states: such an image is refused for its size, never decoded.
    """
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                return im.width * im.height
        except Image.DecompressionBombError as e:
            found = re.search(r"\((\d+) pixels\)", str(e))
            return int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0) + 1
        except Exception:  # noqa: BLE001 - not an image PIL knows
            return None


def too_large(pixels: int, limit: int) -> str:
    return (f"This image has {pixels / 1e6:.1f} megapixels; the demo takes at most {limit / 1e6:.0f} "
            "megapixels. Downscale it and upload it again.")


def display_layers(image_bgr: np.ndarray, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """RGB image and per-mask alpha layers (fill + outline) for gr.AnnotatedImage.

    Shown between DISPLAY_MIN_SIDE and DISPLAY_MAX_SIDE on the long side (small images are
    enlarged so that outlines stay sharp; the downloads keep the image's own size).
    """
    h, w = image_bgr.shape[:2]
    scale = min(DISPLAY_MAX_SIDE / max(h, w), max(1.0, DISPLAY_MIN_SIDE / max(h, w)))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    if size != (w, h):
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)
    width = max(2, round(max(size) / 250))
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    layers = []
    for mask in masks:
        m8 = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        inner = cv2.erode(m8, kernel, borderType=cv2.BORDER_REPLICATE).astype(bool)
        layer = np.where(m8.astype(bool), FILL_ALPHA, 0.0).astype(np.float32)
        layer[m8.astype(bool) & ~inner] = OUTLINE_ALPHA
        layers.append(layer)
    return rgb, layers


def build_app(
    predictor: Predictor,
    *,
    load_precision: Callable[[str], Predictor] | None = None,
    precisions: Sequence[str] = (),
    models_note: str = "",
    max_pixels: int = MAX_PIXELS,
    title: str = "UniLSeg: segment what a sentence names",
) -> gr.Blocks:
    """The demo page for `predictor`.

    load_precision: returns the same model at another precision (offered in the page when
    `precisions` names more than one); models_note: Markdown listing the models.
    """
    pool = PredictorPool(predictor, load_precision, precisions)
    precisions = pool.offered
    lo, hi = min(0.05, predictor.threshold), max(0.95, predictor.threshold)
    sessions: weakref.WeakValueDictionary[str, SessionCache] = weakref.WeakValueDictionary()

    def segment(image: Any, text: str, threshold: float, precision: str | None,
                cache: SessionCache | None, request: gr.Request, min_score: float | None = None):
        """The Segment button, and the `segment` API: [image, text, threshold, precision, min_score] (min_score
        null: the model's; 0: off)."""
        cache = cache if isinstance(cache, SessionCache) else SessionCache()
        if request is not None and request.session_hash:
            sessions[request.session_hash] = cache
        try:
            return (*run(image, text, threshold, precision, cache, served=request is not None, min_score=min_score),
                    cache)
        except UnilsegError as e:
            message = e.worded(PAGE_FIELDS)
        except Exception as e:  # noqa: BLE001 - the page says so; the server keeps serving
            log.exception("demo request failed")
            message = f"Something went wrong on the server ({type(e).__name__}: {e}); the server log has details."
        gr.Warning(html.escape(message))
        return None, None, None, f"**Problem:** {message}", cache

    def run(image: Any, text: Any, threshold: Any, precision: Any, cache: SessionCache,
            served: bool = True, min_score: Any = None) -> tuple[Any, list[str], str, str]:
        """served: a request from the network (the page, its API); False for a direct Python call. min_score:
        None, the model's; 0, off."""
        path = uploaded_file(image)
        if not path:
            raise UnilsegError(NO_IMAGE)
        if text is not None and not isinstance(text, str):
            raise UnilsegError("The instructions must be text, one instruction per line.")
        texts = parse_instructions(text)
        if not texts:
            raise UnilsegError("Type what to segment, e.g. 'the sky' (one instruction per line for several).")
        if len(texts) > MAX_INSTRUCTIONS:
            raise UnilsegError(f"{len(texts)} instructions; the demo takes at most {MAX_INSTRUCTIONS} at a time.")
        threshold = check_threshold(threshold)  # the CLI's rule: finite, 0 < t < 1
        min_score = None if min_score is None else check_min_score(min_score)  # the CLI's rule: 0 (off) to 1
        if precision is not None and not isinstance(precision, str):
            raise UnilsegError(f"The precision must be one of {', '.join(pool.offered)}.")
        model, load_s = pool.get(precision)
        t0 = time.perf_counter()
        reused = encode(path, model, cache, served)
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictions = model.predict(texts, threshold=threshold, embedding=cache.embedding, min_score=min_score)
        t2 = time.perf_counter()
        for w in caught:  # e.g. an instruction cut to the tokenizer's length
            gr.Warning(html.escape(str(w.message)))
        files = write_masks(predictions)
        rgb, layers = display_layers(cache.image, [p.mask for p in predictions])
        floor = effective_min_score(model.min_score, min_score)
        labels = [f"{i}. {p.text}" + ("" if p.present else " (not found)") for i, p in enumerate(predictions, 1)]
        overlay = gr.AnnotatedImage(
            value=(rgb, list(zip(layers, labels))),
            color_map={label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)},
        )
        table = "\n".join(["| # | instruction | score | foreground | presence |", "|---|---|---|---|---|"] + [
            f"| {i} | {md_escape(p.text)} | {p.score:.3f} | {100 * p.mask.mean():.1f}%"
            f"{'' if p.mask.any() or not p.present else ' (empty: nothing above the threshold)'} | {p.presence:.3f}"
            f"{'' if p.present else f' (below {floor:.2f}): **not found**'} |"
            for i, p in enumerate(predictions, 1)
        ])
        n = len(texts)
        status = (f"**Done:** {n} instruction{'s' * (n != 1)} in {t2 - t0 + load_s:.2f} s "
                  f"({'reused the encoded image' if reused else f'image encoded in {t1 - t0:.2f} s'}, "
                  f"instructions decoded in {t2 - t1:.2f} s"
                  f"{f', {model.precision} model loaded in {load_s:.1f} s' if load_s else ''}); "
                  f"{model.precision} on {model.device.type}, threshold {threshold:.2f}"
                  f"{f', min presence {floor:.2f}' if floor is not None else ''}.")
        return overlay, files, table, status

    def is_upload(path: str) -> bool:
        """A file Gradio received as an upload, or copied into its cache for the image input (the examples)."""
        return path in demo.upload_file_set or path in image_in.temp_files

    def encode(path: str, model: Predictor, cache: SessionCache, served: bool) -> bool:
        """Make `cache` hold this image's embedding for `model`; True if it already did.

        The size the header declares is checked before decoding: a file PIL cannot size is
        not decoded at all (a small file can claim gigapixels).
        """
        data = read_upload(path, is_upload if served else None, get_upload_folder() if served else None)
        key = (hashlib.sha256(data).hexdigest(), model.precision)
        if cache.key == key:
            return True
        cache.clear()  # the old embedding goes before the new one is made: one per session
        pixels = image_pixels(data)
        if pixels is None:
            raise UnilsegError(UNDECODABLE)
        if pixels > max_pixels:
            raise UnilsegError(too_large(pixels, max_pixels))
        try:
            image = decode_image(np.frombuffer(data, np.uint8), "upload")  # the CLI's decoder, on the bytes read
        except UnilsegError:
            raise UnilsegError(UNDECODABLE) from None
        if image.shape[0] * image.shape[1] > max_pixels:
            raise UnilsegError(too_large(image.shape[0] * image.shape[1], max_pixels))
        cache.embedding = model.embed([image])[0]
        cache.image, cache.key = image, key
        return False

    def write_masks(predictions: Sequence[Prediction]) -> list[str]:
        """Each mask as the CLI's PNG bytes, in Gradio's cache (cleaned by `delete_cache`)."""
        folder = Path(mask_files.GRADIO_CACHE) / "unilseg-masks" / uuid.uuid4().hex
        folder.mkdir(parents=True)
        paths = []
        for i, p in enumerate(predictions, 1):
            path = folder / mask_filename(i, p.text)
            path.write_bytes(encode_mask(p.mask, "png"))
            paths.append(str(path))
        return paths

    def free_session(request: gr.Request) -> None:
        cache = sessions.pop(request.session_hash, None) if request is not None else None
        if cache is not None:
            cache.clear()

    with gr.Blocks(title="UniLSeg demo", delete_cache=(600, 3600), analytics_enabled=False) as demo:
        gr.Markdown(f"# {title}\nUpload an image, type one instruction per line, press **Segment**. "
                    "Each instruction gets its own mask and colour.")
        with gr.Row():
            with gr.Column():
                # the file as uploaded, decoded by the CLI's reader (the run event does not pre-process)
                image_in = gr.Image(label="Image", type="filepath", image_mode=None, elem_id="image", height=360,
                                     sources=["upload", "clipboard", "webcam"])
                text_in = gr.Textbox(label="Instructions (one per line)", lines=3, elem_id="instructions",
                                     placeholder="the roof of the red house\nthe sky")
                with gr.Row():
                    threshold_in = gr.Slider(lo, hi, value=predictor.threshold, step=0.01,
                                             label="Threshold", info="mask = probability > threshold",
                                             elem_id="threshold")
                    min_score_in = gr.Slider(0.0, 1.0, value=predictor.min_score or 0.0, step=0.01,
                                             label="Min presence",
                                             info="presence below it: not found, no mask (0: off)",
                                             elem_id="min_score")
                    precision_in = gr.Radio(
                        list(precisions), value=predictor.precision, label="Precision", elem_id="precision",
                        visible=len(precisions) > 1,
                        info="bf16/fp16: faster on hardware with fast bf16/fp16 math; masks can differ slightly",
                    )
                run_button = gr.Button("Segment", variant="primary", elem_id="run")
                gr.Markdown(f"Images up to {max_pixels / 1e6:.0f} megapixels and {MAX_UPLOAD.upper()}; "
                            f"up to {MAX_INSTRUCTIONS} instructions per run."
                            + ("" if len(precisions) > 1 else
                               f" Precision: {predictor.precision} (set at launch with `--precision`)."))
            with gr.Column():
                overlay_out = gr.AnnotatedImage(label="Masks", elem_id="overlay", height=360)
                status_out = gr.Markdown("Results appear here.", elem_id="status")
                table_out = gr.Markdown(elem_id="scores")
                gr.Markdown("*score*: the mean probability inside the mask; *foreground*: the share of the "
                            "image the mask covers; *presence*: how sure the model is that the target is there at "
                            "all (below the min presence: not found).")
                mask_files = gr.File(label="Masks as PNG (0/255, as the CLI writes them)", file_count="multiple",
                                     interactive=False, elem_id="masks")
        gr.Examples([[str(p), text] for p, (_, text) in zip(example_paths(), EXAMPLES)], [image_in, text_in],
                    label="Demo scenes (generated; the demo model knows only scenes like these)")
        with gr.Accordion("Models", open=True):
            gr.Markdown(models_note or f"Model: {predictor.device.type}, {predictor.precision}")
        cache_state = gr.State(None, time_to_live=SESSION_TTL_S,
                               delete_callback=lambda c: c.clear() if isinstance(c, SessionCache) else None)
        run_button.click(segment, [image_in, text_in, threshold_in, precision_in, cache_state, min_score_in],
                         [overlay_out, mask_files, table_out, status_out, cache_state],
                         api_name="segment", concurrency_limit=1, preprocess=False)
        demo.unload(free_session)
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def theme() -> gr.themes.Base:
    """Gradio's default look with system fonts (no font download: the page works offline)."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           block: bool = True) -> None:
    """Serve the page (block=False returns once it is up; stop it with `demo.close()`)."""
    demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                max_file_size=MAX_UPLOAD, theme=theme(), footer_links=["api", "settings"], show_error=False)


def page_precisions(device_type: str, start: str) -> tuple[str, ...]:
    """Precisions the page offers on this device: bf16 anywhere but Apple MPS, fp16 on CUDA."""
    offered = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}.get(device_type, ())
    return offered if start in offered else (start,)


def models_note(model: str | None = None, weights: str | None = None, config: str | None = None) -> str:
    """Markdown: the registered models, each either ready (how to start the page with it) or missing its
    weights (the command that fetches them); the running one (model, weights or config as the page was
    started with; none: the demo model) first."""
    from unilseg.demo import DEMO_MODEL
    from unilseg.model.registry import MODELS, cached_weights, download_command

    running = weights or model or (None if config else DEMO_MODEL)
    lines = []
    for spec in sorted(MODELS.values(), key=lambda s: s.name != running):
        if spec.name == running:
            lines.append(f"- **{spec.name}** (running): {spec.description}")
        elif cached_weights(spec) is not None:
            lines.append(f"- {spec.name}: ready; start the page with `unilseg demo --model {spec.name}`")
        else:
            lines.append(f"- {spec.name}: weights not downloaded; fetch them with `{download_command(spec.name)}`, "
                         f"then `unilseg demo --model {spec.name}`")
    if running is None or running not in MODELS:
        lines.insert(0, f"- **{running or config}** (running)")
    return "\n".join(lines)


def serve(predictor: Predictor, load_precision: Callable[[str], Predictor] | None = None, host: str = "127.0.0.1",
          port: int = 7860, share: bool = False, models_note: str = "") -> None:
    """Build the page over `predictor` and serve it; blocks until Ctrl-C. load_precision(p): the same model
    in precision p, for the page's precision choice (a torch network only: an export runs in the one
    precision it was made in)."""
    precisions = (page_precisions(predictor.device.type, predictor.precision) if predictor.model is not None
                  else (predictor.precision,))
    demo = build_app(predictor, load_precision=load_precision, precisions=precisions, models_note=models_note)
    launch(demo, host=host, port=port, share=share)
