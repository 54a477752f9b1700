"""Pre- and post-processing around the network, exactly as the authors' CLI does it, in numpy and OpenCV.

Images are letterboxed into a square by one affine map (cubic interpolation); the
mask logits are mapped back to the original frame by its inverse. Every runtime shares these
functions (the torch backend converts at its boundary), and importing this module imports no torch:
`preprocess` and `postprocess`, the torch-facing wrappers of 0.1.0, import it only when called.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from unilseg.errors import UnilsegError
from unilseg.model.spec import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    import torch


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as 8-bit BGR (H, W, 3); grey expanded, alpha dropped, EXIF applied."""
    path = Path(path)
    if not path.is_file():
        raise UnilsegError("image not found: {path}; check the {field} path", field="image", path=path)
    return decode_image(np.fromfile(path, dtype=np.uint8), path)


def decode_image(data: np.ndarray, path: str | Path) -> np.ndarray:
    """An image file's bytes (uint8) -> 8-bit BGR (H, W, 3); a UnilsegError (field "image") naming `path`
    if they do not decode, or if the header claims more than OpenCV's pixel limit (a decompression bomb)."""
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error as e:  # e.g. a header claiming more than OpenCV's 2^30-pixel limit (a decompression bomb)
        too_big = "CV_IO_MAX_IMAGE_PIXELS" in str(e)
        why = "its size exceeds OpenCV's limit of 2^30 pixels" if too_big else "OpenCV could not decode it"
        raise UnilsegError("cannot read {path} as an image: {why}; pass a smaller JPEG/PNG/... image",
                           field="image", path=path, why=why) from e
    if image is None:
        raise UnilsegError("cannot read {path} as an image (unsupported or corrupt file); pass a JPEG/PNG/... image",
                           field="image", path=path)
    return image


def letterbox_affine(h: int, w: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward and inverse 2x3 affine maps between an (h, w) image and a size x size square.

    The image is scaled by min(size/h, size/w) and centred; nothing is rounded.
    """
    scale = min(size / h, size / w)
    new_h, new_w = h * scale, w * scale
    top, left = (size - new_h) / 2, (size - new_w) / 2
    src = np.array([[0, 0], [w, 0], [0, h]], dtype=np.float32)
    dst = np.array([[left, top], [left + new_w, top], [left, top + new_h]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst), cv2.getAffineTransform(dst, src)


def letterbox(
    image_bgr: np.ndarray, size: int = 480, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> tuple[np.ndarray, np.ndarray]:
    """BGR uint8 (H, W, 3) -> (normalised RGB float32 (1, 3, size, size), inverse affine (2, 3))."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    forward, inverse = letterbox_affine(h, w, size)
    border = tuple(float(m) * 255 for m in mean)
    boxed = cv2.warpAffine(rgb, forward, (size, size), flags=cv2.INTER_CUBIC, borderValue=border)
    x = boxed.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, np.float32).reshape(3, 1, 1)) / np.asarray(std, np.float32).reshape(3, 1, 1)
    return x[None], inverse


def preprocess(
    image_bgr: np.ndarray, size: int = 480, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> tuple[torch.Tensor, np.ndarray]:
    """`letterbox` with the image as a torch tensor (1, 3, size, size) float32, for calling a torch network."""
    import torch

    x, inverse = letterbox(image_bgr, size, mean, std)
    return torch.from_numpy(x), inverse


def upsample4(logits: np.ndarray) -> np.ndarray:
    """(s, s) float32 -> (4s, 4s): bilinear with align_corners=True, as the authors' F.interpolate does
    (width first, then height, each output pixel from the two nearest inputs' weighted sum)."""
    rows = _linear_weights(logits.shape[0], logits.shape[0] * 4)
    cols = _linear_weights(logits.shape[1], logits.shape[1] * 4)
    wide = logits[:, cols[0]] * cols[2] + logits[:, cols[1]] * cols[3]
    return wide[rows[0]] * rows[2][:, None] + wide[rows[1]] * rows[3][:, None]


def _linear_weights(n: int, out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For `out` samples over `n` inputs, corners aligned: (first index, second index, its weight, the other's)."""
    scale = np.float32((n - 1) / (out - 1)) if out > 1 else np.float32(0)
    src = scale * np.arange(out, dtype=np.float32)
    first = np.minimum(src.astype(np.int64), n - 1)
    second = np.minimum(first + 1, n - 1)
    far = np.clip(src - first.astype(np.float32), 0, 1).astype(np.float32)
    return first, second, np.float32(1) - far, far


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 1 / (1 + e^-x), as torch.sigmoid computes it (e^-x overflows to inf for x < -88: the result is 0)."""
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x, dtype=np.float32))).astype(np.float32, copy=False)


def as_numpy(logits: Any) -> np.ndarray:
    """A numpy array or a torch tensor (any device, any float dtype) -> float32 numpy."""
    if not isinstance(logits, np.ndarray) and hasattr(logits, "detach"):
        logits = logits.detach().float().cpu().numpy()
    return np.asarray(logits, dtype=np.float32)


def soft_map(logits: Any, inverse: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Logits (1, 1, s, s), (1, s, s) or (s, s), numpy or torch -> float32 probability map (h, w) in the
    original frame.

    Upsampled x4 bilinearly (align_corners=True), sigmoid, then warped back with the
    inverse letterbox (cubic, so values may overshoot [0, 1] slightly).
    """
    logits = as_numpy(logits)
    prob = sigmoid(upsample4(logits.reshape(logits.shape[-2:])))
    h, w = image_size
    return cv2.warpAffine(prob, inverse, (w, h), flags=cv2.INTER_CUBIC, borderValue=0.0)


def postprocess(
    logits: Any, inverse: np.ndarray, image_size: tuple[int, int], threshold: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (1, 1, s, s), numpy or torch -> (mask bool (h, w), soft map float32 (h, w)); mask = soft > threshold."""
    prob = soft_map(logits, inverse, image_size)
    return prob > threshold, prob
