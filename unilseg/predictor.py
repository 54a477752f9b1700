"""Encode an image once, then segment it for as many instructions as you like.

UniLSeg fuses text into the image features only after the Swin encoder, so the Swin
maps of one image can be reused, unchanged, for every instruction. Images of any size
letterbox to the same square, so several images also run through Swin as one batch.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import UnilsegError
from .precision import apply_precision, model_precision
from .tokenizer import tokenize
from .transforms import CLIP_MEAN, CLIP_STD, postprocess, preprocess, read_image

ImageLike = Any  # str | Path | np.ndarray (H, W, 3) uint8 | PIL.Image.Image


@dataclass
class Prediction:
    """One instruction's result, in the original image's frame."""

    text: str
    mask: np.ndarray  # bool (H, W)
    prob: np.ndarray  # float32 (H, W), the soft map (cubic warp: may overshoot [0, 1] slightly)
    score: float  # mean probability inside the mask (0 when the mask is empty)


@dataclass
class ImageEmbedding:
    """One image's Swin maps and the letterbox that maps its masks back to it."""

    features: list[torch.Tensor]  # (1, C_i, size/4/2^i, size/4/2^i) for strides 4/8/16/32
    inverse: np.ndarray  # (2, 3) affine: letterboxed square -> original image
    image_size: tuple[int, int]  # (H, W) of the original image


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA if available, else Apple MPS, else CPU; otherwise checks availability."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UnilsegError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UnilsegError(f"device {device} requested but CUDA is not available here; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UnilsegError(f"device {device} requested but Apple MPS is not available here; use --device cpu")
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

    Pre-processing settings (input size, mean/std, context length, threshold) come from
    the model's config. `precision` 'bf16'/'fp16' casts the model's heavy layers in place
    (see `unilseg.precision`); None keeps the model as it is.

    `max_batch` caps the (image, text) pairs per fusion/decoder batch; None means 1 on
    CPU and 16 on a GPU. On CPU batching gains nothing there: at stride 4 the decoder's
    matrix products already have 14400 rows, while batch-sized activations (> 32 MB at
    480 px) fall outside glibc's reusable heap and are page-faulted afresh on each call
    (8 texts in one batch cost ~20% more per text than one by one, and ~0.35 GB each).
    """

    def __init__(
        self, model: torch.nn.Module, threshold: float | None = None, precision: str | None = None,
        max_batch: int | None = None,
    ) -> None:
        cfg: dict[str, Any] = getattr(model, "config", {}) or {}
        inp = cfg.get("input", {})
        self.model = model.eval()
        if precision is not None:
            apply_precision(model, precision, self.device)
        self.precision: str = model_precision(model)
        self.size: int = int(inp.get("size", 480))
        self.mean = tuple(inp.get("mean", CLIP_MEAN))
        self.std = tuple(inp.get("std", CLIP_STD))
        self.context_length: int = int(inp.get("context_length", 17))
        default_threshold = cfg.get("test", {}).get("threshold", 0.35)
        self.threshold: float = float(default_threshold if threshold is None else threshold)
        if max_batch is None:
            max_batch = 1 if self.device.type == "cpu" else 16
        if max_batch < 1:
            raise UnilsegError(f"max_batch must be at least 1, not {max_batch}")
        self.max_batch = max_batch
        self.embedding: ImageEmbedding | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the image set by `set_image`, or None."""
        return None if self.embedding is None else self.embedding.image_size

    def embed(self, images: Sequence[ImageLike], color: Literal["BGR", "RGB"] = "BGR") -> list[ImageEmbedding]:
        """Letterbox every image to size x size and run Swin once on the stack (B = len(images))."""
        boxed, inverses, sizes = [], [], []
        for image in images:
            bgr = to_bgr(image, color)
            x, inverse = preprocess(bgr, self.size, self.mean, self.std)
            boxed.append(x)
            inverses.append(inverse)
            sizes.append(bgr.shape[:2])
        if not boxed:
            return []
        with torch.inference_mode():
            maps = self.model.encode_image(torch.cat(boxed).to(self.device))
        return [
            ImageEmbedding([m[i : i + 1] for m in maps], inverse, size)
            for i, (inverse, size) in enumerate(zip(inverses, sizes))
        ]

    def set_image(self, image: ImageLike, color: Literal["BGR", "RGB"] = "BGR") -> None:
        """Encode an image: a path, a uint8 (H, W, 3) array in `color` order, or a PIL image."""
        self.embedding = self.embed([image], color)[0]

    def predict_logits(self, texts: str | Sequence[str], embedding: ImageEmbedding | None = None) -> torch.Tensor:
        """Logits (B, 1, size/4, size/4) float32 for each text against one image (default: the set one)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        embedding = embedding if embedding is not None else self._current()
        return self.pair_logits([embedding] * len(texts), texts)

    def pair_logits(self, embeddings: Sequence[ImageEmbedding], texts: Sequence[str]) -> torch.Tensor:
        """Logits (P, 1, size/4, size/4) float32 for P (image, text) pairs.

        All texts go through the text encoder as one batch; fusion and decoders take at
        most `max_batch` pairs at a time.
        """
        if len(embeddings) != len(texts):
            raise ValueError(f"{len(embeddings)} images for {len(texts)} texts")
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise UnilsegError("empty expression; give a text naming what to segment")
        if not texts:
            return torch.empty(0, 1, self.size // 4, self.size // 4)
        tokens = tokenize(list(texts), self.context_length).to(self.device)
        out = []
        with torch.inference_mode():
            word, state, pad_mask = self.model.encode_text(tokens)
            for i in range(0, len(texts), self.max_batch):
                j = i + self.max_batch
                fused = self.model.fuse(_stack_features(embeddings[i:j]), word[i:j], pad_mask[i:j])
                out.append(self.model.decode(fused, word[i:j], state[i:j], pad_mask[i:j]).float())
        return torch.cat(out)

    def predict(
        self, texts: str | Sequence[str], threshold: float | None = None, embedding: ImageEmbedding | None = None
    ) -> list[Prediction]:
        """One Prediction per text (mask = soft map > threshold, default from the config)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        embedding = embedding if embedding is not None else self._current()
        return self.predict_pairs([embedding] * len(texts), texts, threshold)

    def predict_pairs(
        self, embeddings: Sequence[ImageEmbedding], texts: Sequence[str], threshold: float | None = None
    ) -> list[Prediction]:
        """One Prediction per (image, text) pair; pairs of several images share decoder batches."""
        threshold = self.threshold if threshold is None else threshold
        logits = self.pair_logits(embeddings, texts)
        return [to_prediction(t, lg, e, threshold) for t, lg, e in zip(texts, logits, embeddings)]

    def _current(self) -> ImageEmbedding:
        if self.embedding is None:
            raise UnilsegError("call set_image() before predict()")
        return self.embedding


def _stack_features(embeddings: Sequence[ImageEmbedding]) -> list[torch.Tensor]:
    """Swin maps of B pairs' images, batched per level: (B, C_i, H_i, W_i)."""
    first = embeddings[0]
    if all(e is first for e in embeddings):
        return [f.expand(len(embeddings), -1, -1, -1) for f in first.features]  # a view: no copy per text
    return [torch.cat(level) for level in zip(*(e.features for e in embeddings))]


def to_prediction(text: str, logits: torch.Tensor, embedding: ImageEmbedding, threshold: float) -> Prediction:
    """Logits (1, s, s) of one pair -> Prediction in the original image frame."""
    mask, prob = postprocess(logits, embedding.inverse, embedding.image_size, threshold)
    score = float(prob[mask].mean()) if mask.any() else 0.0
    return Prediction(text, mask, prob, score)
