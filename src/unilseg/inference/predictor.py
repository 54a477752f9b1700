"""Encode an image once, then segment it for as many instructions as you like.

UniLSeg fuses text into the image features only after the Swin encoder, so the Swin
maps of one image can be reused, unchanged, for every instruction. Images of any size
letterbox to the same square, so several images also run through Swin as one batch.

The network sits behind a small backend interface (`TorchBackend` here; other runtimes
provide the same three calls), so every front end shares this one inference path:
letterbox -> `encode_image` -> `encode_text` -> `decode` -> inverse warp -> threshold.

The Predictor itself works in numpy (`transforms`): images and tokens go to a backend as numpy
arrays and logits come back as numpy, so a runtime without torch (ONNX Runtime) never imports it;
`TorchBackend` converts at its boundary.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.inference.instances import DEFAULT_MAX_INSTANCES, DEFAULT_MIN_AREA, Instances, split_instances
from unilseg.inference.presence import presence_score
from unilseg.inference.transforms import letterbox, read_image, soft_map
from unilseg.model.spec import InferenceSpec, effective_min_score
from unilseg.model.tokenizer import token_ids

if TYPE_CHECKING:
    import torch

ImageLike = Any  # str | Path | np.ndarray (H, W, 3) uint8 | PIL.Image.Image


@dataclass
class Prediction:
    """One instruction's result, in the original image's frame."""

    text: str
    mask: np.ndarray  # bool (H, W)
    prob: np.ndarray  # float32 (H, W), the soft map (cubic warp: may overshoot [0, 1] slightly)
    score: float  # mean probability inside the mask (0 when the mask is empty)
    presence: float = 1.0  # presence score in [0, 1] (`unilseg.inference.presence`): is the target there at all
    present: bool = True  # False: presence < the min score, so the mask was emptied ("not found")

    def instances(self, min_area: int = DEFAULT_MIN_AREA, max_instances: int = DEFAULT_MAX_INSTANCES) -> Instances:
        """The mask's 8-connected components (largest first), each with its box, area and mean probability
        (see `unilseg.inference.instances`)."""
        return split_instances(self.mask, self.prob, min_area, max_instances)


@dataclass
class ImageEmbedding:
    """One image's Swin maps and the letterbox that maps its masks back to it."""

    features: list[Any]  # the backend's arrays (torch or numpy), (1, C_i, size/4/2^i, size/4/2^i), strides 4..32
    inverse: np.ndarray  # (2, 3) affine: letterboxed square -> original image
    image_size: tuple[int, int]  # (H, W) of the original image


@dataclass
class EncodedTexts:
    """Texts run through the text encoder once, to be decoded against any number of images."""

    texts: list[str]
    features: tuple[Any, ...]  # the backend's arrays (torch or numpy), each (P, ...) with one row per text

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: Sequence[int] | slice) -> EncodedTexts:
        """The rows `rows` (indices or a slice) of every feature array."""
        if isinstance(rows, slice):
            return EncodedTexts(self.texts[rows], tuple(f[rows] for f in self.features))
        rows = list(rows)
        return EncodedTexts([self.texts[i] for i in rows], tuple(f[rows] for f in self.features))


class Backend(Protocol):
    """What a Predictor needs from a runtime (torch, ONNX Runtime, compiled, ...).

    Inputs come as numpy and logits go back as numpy; the maps and text features in between are the
    backend's own arrays (torch tensors on its device, numpy arrays), which the Predictor only slices,
    repeats and concatenates along the first axis."""

    spec: InferenceSpec
    device: Any  # torch.device, or a `backends.info.DeviceName` for a runtime without torch

    def encode_image(self, x: np.ndarray) -> list[Any]:
        """x (B, 3, size, size) normalised RGB float32 -> 4 maps (B, C_i, H_i, W_i), strides 4/8/16/32."""

    def encode_text(self, tokens: np.ndarray) -> tuple[Any, ...]:
        """tokens (P, L) int64 -> text features, each with P rows."""

    def decode(self, features: Sequence[Any], text: tuple[Any, ...]) -> np.ndarray:
        """P pairs' image maps (P, C_i, H_i, W_i) + their text features -> float32 logits (P, 1, size/4, size/4)."""


class TorchBackend:
    """The PyTorch network as a Backend: numpy in, torch tensors on the model's device in between, numpy out.

    compile: run the image encoder and the fusion + decoders through `torch.compile`
    (see `unilseg.inference.backends.compiled`); the first call of each pays the compile.
    """

    def __init__(self, model: torch.nn.Module, compile: bool = False) -> None:
        self.model = model.eval()
        spec = getattr(model, "spec", None)
        if spec is None:  # a network built by hand: read its config like build_model does
            spec = InferenceSpec.from_config(getattr(model, "config", None) or {})
        self.spec: InferenceSpec = spec
        self.compiled = None
        if compile:
            from unilseg.inference.backends.compiled import CompiledParts

            self.compiled = CompiledParts(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode_image(self, x: np.ndarray) -> list[torch.Tensor]:
        import torch

        x = torch.as_tensor(x).to(self.device)
        with torch.inference_mode():
            if self.compiled is not None:
                return self.compiled.encode_image(x)
            return self.model.encode_image(x)

    def encode_text(self, tokens: np.ndarray) -> tuple[torch.Tensor, ...]:
        import torch

        with torch.inference_mode():
            return tuple(self.model.encode_text(torch.as_tensor(tokens).to(self.device)))

    def decode(self, features: Sequence[torch.Tensor], text: tuple[torch.Tensor, ...]) -> np.ndarray:
        import torch

        from unilseg.inference.backends.graphs import decode_pairs

        with torch.inference_mode():
            if self.compiled is not None:
                logits = self.compiled.decode(features, text)
            else:
                logits = decode_pairs(self.model, list(features), *text)
        return logits.float().cpu().numpy()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA if available, else Apple MPS, else CPU; otherwise checks availability.

    Only the devices that run inference are taken: cpu, cuda[:N] (N below the GPU count) and mps;
    torch's others (meta, xpu, lazy, ipu, mkldnn, ...) are refused in one line."""
    import torch

    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UnilsegError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type not in ("cpu", "cuda", "mps") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise UnilsegError(f"device {device!r} does not run inference; use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnilsegError("device {device} requested but CUDA is not available here; use {field} cpu",
                           field="device", device=device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnilsegError("device {device}: this machine has {count} CUDA device(s), numbered from 0; use "
                           "{field} cuda:0 ... or cuda", field="device", device=device, count=torch.cuda.device_count())
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UnilsegError("device {device} requested but Apple MPS is not available here; use {field} cpu",
                           field="device", device=device)
    return dev


def to_bgr(image: ImageLike, color: Literal["BGR", "RGB"] = "BGR") -> np.ndarray:
    """A path, a uint8 (H, W, 3) array in `color` order, or a PIL image -> uint8 BGR (H, W, 3)."""
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise UnilsegError(f"expected a uint8 (H, W, 3) image array, got {image.dtype} {image.shape}")
        if color not in ("BGR", "RGB"):
            raise UnilsegError(f"color must be 'BGR' or 'RGB', not {color!r}")
        return image if color == "BGR" else np.ascontiguousarray(image[:, :, ::-1])
    if hasattr(image, "convert"):  # PIL.Image, always RGB
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    raise UnilsegError(f"unsupported image type {type(image).__name__}; pass a path, numpy array or PIL image")


class Predictor:
    """SAM-style predictor: `set_image` runs the image encoder, `predict` runs the rest per text.

    model: a UniLSeg network (from `build_model` / `load_model`; its `spec` gives input
    size, mean/std, context length and threshold) or another Backend. `threshold`
    overrides the spec's. `precision` 'bf16'/'fp16' casts a torch network's heavy layers
    in place (see `unilseg.inference.backends.precision`); None keeps the model as it is.

    `compile=True` runs the torch network's image encoder and fusion + decoders through
    `torch.compile` (see `unilseg.inference.backends.compiled`): minutes of compiling on the first items
    (seconds with a warm cache), a faster forward after that.

    `max_batch` caps the (image, text) pairs per fusion/decoder batch; None means 1 on
    CPU and 16 on a GPU. On CPU batching gains nothing there: at stride 4 the decoder's
    matrix products already have 14400 rows, while batch-sized activations (> 32 MB at
    480 px) fall outside glibc's reusable heap and are page-faulted afresh on each call
    (8 texts in one batch cost ~20% more per text than one by one, and ~0.35 GB each).
    """

    def __init__(
        self, model: torch.nn.Module | Backend, threshold: float | None = None, precision: str | None = None,
        max_batch: int | None = None, compile: bool = False, min_score: float | None = None,
    ) -> None:
        if _is_torch_module(model):
            if precision is not None:  # before compiling: the casts' hooks are part of the traced graph
                from unilseg.inference.backends.precision import apply_precision

                apply_precision(model, precision, next(model.parameters()).device)
            backend: Backend = TorchBackend(model, compile=compile)
        else:
            backend = model
            if precision not in (None, "fp32"):
                raise UnilsegError("{field} {precision} applies to the torch runtime only", field="precision",
                                   precision=precision)
            if compile:
                raise UnilsegError("{field} applies to the torch runtime only (an export is compiled already)",
                                   field="compile")
        self.backend = backend
        self.spec: InferenceSpec = backend.spec.with_threshold(threshold).with_min_score(min_score)
        if max_batch is None:
            max_batch = 1 if self.device.type == "cpu" else 16
        if max_batch < 1:
            raise UnilsegError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = max_batch
        self.embedding: ImageEmbedding | None = None

    @property
    def model(self) -> torch.nn.Module | None:
        """The torch network, if the backend is one."""
        return getattr(self.backend, "model", None)

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def threshold(self) -> float:
        return self.spec.threshold

    @property
    def min_score(self) -> float | None:
        """Predictions whose presence score is below it come back empty (None: never)."""
        return self.spec.min_score

    @property
    def precision(self) -> str:
        """fp32 / bf16 / fp16 of a torch network; an export's own (fp32 / int8) on another runtime."""
        if self.model is None:
            return getattr(self.backend, "precision", "fp32")
        from unilseg.inference.backends.precision import model_precision

        return model_precision(self.model)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the image set by `set_image`, or None."""
        return None if self.embedding is None else self.embedding.image_size

    def embed(self, images: Sequence[ImageLike], color: Literal["BGR", "RGB"] = "BGR") -> list[ImageEmbedding]:
        """Letterbox every image to size x size and run Swin once on the stack (B = len(images))."""
        boxed, inverses, sizes = [], [], []
        spec = self.spec
        for image in images:
            bgr = to_bgr(image, color)
            x, inverse = letterbox(bgr, spec.size, spec.mean, spec.std)
            boxed.append(x)
            inverses.append(inverse)
            sizes.append(bgr.shape[:2])
        if not boxed:
            return []
        maps = self.backend.encode_image(np.concatenate(boxed))
        return [
            ImageEmbedding([m[i : i + 1] for m in maps], inverse, size)
            for i, (inverse, size) in enumerate(zip(inverses, sizes))
        ]

    def set_image(self, image: ImageLike, color: Literal["BGR", "RGB"] = "BGR") -> None:
        """Encode an image: a path, a uint8 (H, W, 3) array in `color` order, or a PIL image."""
        self.embedding = self.embed([image], color)[0]

    def encode_texts(self, texts: str | Sequence[str]) -> EncodedTexts:
        """Tokenise and run the text encoder once for all `texts` (none may be empty)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise UnilsegError("empty expression; give a text naming what to segment")
        if not texts:
            return EncodedTexts([], ())
        tokens = token_ids(texts, self.spec.context_length)
        return EncodedTexts(texts, tuple(self.backend.encode_text(tokens)))

    def predict_logits(self, texts: str | Sequence[str], embedding: ImageEmbedding | None = None) -> np.ndarray:
        """Logits (B, 1, size/4, size/4) float32 for each text against one image (default: the set one)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        embedding = embedding if embedding is not None else self._current()
        return self.pair_logits([embedding] * len(texts), texts)

    def pair_logits(
        self, embeddings: Sequence[ImageEmbedding], texts: Sequence[str] | EncodedTexts
    ) -> np.ndarray:
        """Logits (P, 1, size/4, size/4) float32 for P (image, text) pairs.

        Texts not yet encoded go through the text encoder as one batch; fusion and decoders
        take at most `max_batch` pairs at a time.
        """
        encoded = texts if isinstance(texts, EncodedTexts) else self.encode_texts(texts)
        if len(embeddings) != len(encoded):
            raise ValueError(f"{len(embeddings)} images for {len(encoded)} texts")
        if not len(encoded):
            return np.empty((0, 1, self.spec.size // 4, self.spec.size // 4), np.float32)
        out = []
        for i in range(0, len(encoded), self.max_batch):
            j = i + self.max_batch
            part = encoded.take(slice(i, j))
            out.append(np.asarray(self.backend.decode(_stack_features(embeddings[i:j]), part.features), np.float32))
        return np.concatenate(out)

    def predict(
        self, texts: str | Sequence[str], threshold: float | None = None, embedding: ImageEmbedding | None = None,
        min_score: float | None = None,
    ) -> list[Prediction]:
        """One Prediction per text (mask = soft map > threshold, default the spec's; emptied when the presence
        score is below `min_score`, default the spec's, 0: never)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        embedding = embedding if embedding is not None else self._current()
        return self.predict_pairs([embedding] * len(texts), texts, threshold, min_score)

    def predict_pairs(
        self, embeddings: Sequence[ImageEmbedding], texts: Sequence[str] | EncodedTexts,
        threshold: float | None = None, min_score: float | None = None,
    ) -> list[Prediction]:
        """One Prediction per (image, text) pair; pairs of several images share decoder batches."""
        threshold = self.threshold if threshold is None else threshold
        min_score = effective_min_score(self.min_score, min_score)
        logits = self.pair_logits(embeddings, texts)
        names = texts.texts if isinstance(texts, EncodedTexts) else list(texts)
        return [to_prediction(t, lg, e, threshold, min_score) for t, lg, e in zip(names, logits, embeddings)]

    def _current(self) -> ImageEmbedding:
        if self.embedding is None:
            raise UnilsegError("call set_image() before predict()")
        return self.embedding


def _is_torch_module(model: Any) -> bool:
    """True for a torch.nn.Module (without importing torch: if it is not loaded, `model` cannot be one)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def _stack_features(embeddings: Sequence[ImageEmbedding]) -> list[Any]:
    """Swin maps of B pairs' images, batched per level: (B, C_i, H_i, W_i), in the backend's array type."""
    first = embeddings[0]
    n = len(embeddings)
    if all(e is first for e in embeddings):  # a view: no copy per text
        return [np.broadcast_to(f, (n, *f.shape[1:])) if isinstance(f, np.ndarray) else f.expand(n, *f.shape[1:])
                for f in first.features]
    levels = list(zip(*(e.features for e in embeddings)))
    if isinstance(levels[0][0], np.ndarray):
        return [np.concatenate(level) for level in levels]
    import torch  # the maps are torch tensors, so torch is loaded already

    return [torch.cat(level) for level in levels]


def to_prediction(
    text: str, logits: np.ndarray, embedding: ImageEmbedding, threshold: float, min_score: float | None = None
) -> Prediction:
    """Logits (1, s, s) float32 of one pair -> Prediction in the original image frame; a presence score below
    `min_score` empties the mask (present False)."""
    return prediction_of(text, soft_map(logits, embedding.inverse, embedding.image_size), threshold, min_score)


def prediction_of(text: str, prob: np.ndarray, threshold: float, min_score: float | None = None) -> Prediction:
    """A soft map float32 (H, W) -> its Prediction: mask = prob > threshold, emptied (present False) when the
    presence score is below `min_score` (None: never). The one place that rule lives (a video's smoothed
    maps come here too)."""
    mask = prob > threshold
    presence = presence_score(prob, mask)
    present = min_score is None or presence >= min_score
    if not present:
        mask = np.zeros_like(mask)
    score = float(prob[mask].mean()) if mask.any() else 0.0
    return Prediction(text, mask, prob, score, presence, present)
