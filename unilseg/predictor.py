"""Encode an image once, then segment it for as many instructions as you like.

UniLSeg fuses text into the image features only after the Swin encoder, so the Swin
maps of one image can be reused, unchanged, for every instruction.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .errors import UnilsegError
from .tokenizer import tokenize
from .transforms import CLIP_MEAN, CLIP_STD, postprocess, preprocess, read_image


@dataclass
class Prediction:
    """One instruction's result, in the original image's frame."""

    text: str
    mask: np.ndarray  # bool (H, W)
    prob: np.ndarray  # float32 (H, W), the soft map (cubic warp: may overshoot [0, 1] slightly)
    score: float  # mean probability inside the mask (0 when the mask is empty)


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


class Predictor:
    """SAM-style predictor: `set_image` runs the image encoder, `predict` runs the rest per text.

    Pre-processing settings (input size, mean/std, context length, threshold) come from
    the model's config.
    """

    def __init__(self, model: torch.nn.Module, threshold: float | None = None) -> None:
        cfg: dict[str, Any] = getattr(model, "config", {}) or {}
        inp = cfg.get("input", {})
        self.model = model.eval()
        self.size: int = int(inp.get("size", 480))
        self.mean = tuple(inp.get("mean", CLIP_MEAN))
        self.std = tuple(inp.get("std", CLIP_STD))
        self.context_length: int = int(inp.get("context_length", 17))
        default_threshold = cfg.get("test", {}).get("threshold", 0.35)
        self.threshold: float = float(default_threshold if threshold is None else threshold)
        self._features: list[torch.Tensor] | None = None
        self._inverse: np.ndarray | None = None
        self.image_size: tuple[int, int] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def set_image(self, image: str | Path | np.ndarray | Any, color: Literal["BGR", "RGB"] = "BGR") -> None:
        """Encode an image: a path, a uint8 (H, W, 3) array in `color` order, or a PIL image."""
        if isinstance(image, (str, Path)):
            bgr = read_image(image)
        elif isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise UnilsegError(f"expected a uint8 (H, W, 3) image array, got {image.dtype} {image.shape}")
            bgr = image if color == "BGR" else np.ascontiguousarray(image[:, :, ::-1])
        elif hasattr(image, "convert"):  # PIL.Image, always RGB
            bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        else:
            raise UnilsegError(f"unsupported image type {type(image).__name__}; pass a path, numpy array or PIL image")
        x, self._inverse = preprocess(bgr, self.size, self.mean, self.std)
        self.image_size = bgr.shape[:2]
        with torch.inference_mode():
            self._features = self.model.encode_image(x.to(self.device))

    def predict_logits(self, texts: str | list[str]) -> torch.Tensor:
        """Logits (B, 1, size/4, size/4) for each text against the current image, as one batch."""
        if self._features is None:
            raise UnilsegError("call set_image() before predict()")
        texts = [texts] if isinstance(texts, str) else list(texts)
        for text in texts:
            if not text or not text.strip():
                raise UnilsegError("empty expression; give a text naming what to segment")
        tokens = tokenize(texts, self.context_length).to(self.device)
        with torch.inference_mode():
            word, state, pad_mask = self.model.encode_text(tokens)
            visual = [f.expand(len(texts), -1, -1, -1) for f in self._features]
            fused = self.model.fuse(visual, word, pad_mask)
            return self.model.decode(fused, word, state, pad_mask)

    def predict(self, texts: str | list[str], threshold: float | None = None) -> list[Prediction]:
        """One Prediction per text (mask = soft map > threshold, default from the config)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        threshold = self.threshold if threshold is None else threshold
        logits = self.predict_logits(texts)
        out = []
        for text, lg in zip(texts, logits):
            mask, prob = postprocess(lg, self._inverse, self.image_size, threshold)
            score = float(prob[mask].mean()) if mask.any() else 0.0
            out.append(Prediction(text, mask, prob, score))
        return out
