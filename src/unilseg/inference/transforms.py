"""Pre- and post-processing around the network, exactly as the authors' CLI does it.

Images are letterboxed into a square by one affine map (cubic interpolation); the
mask logits are mapped back to the original frame by its inverse.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from unilseg.errors import UnilsegError
from unilseg.model.spec import CLIP_MEAN, CLIP_STD


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


def preprocess(
    image_bgr: np.ndarray, size: int = 480, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> tuple[torch.Tensor, np.ndarray]:
    """BGR uint8 (H, W, 3) -> (normalised RGB tensor (1, 3, size, size) float32, inverse affine (2, 3))."""
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    forward, inverse = letterbox_affine(h, w, size)
    border = tuple(float(m) * 255 for m in mean)
    boxed = cv2.warpAffine(rgb, forward, (size, size), flags=cv2.INTER_CUBIC, borderValue=border)
    x = torch.from_numpy(boxed).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean_t) / std_t).unsqueeze(0), inverse


def soft_map(logits: torch.Tensor, inverse: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Logits (1, 1, s, s) or (s, s) -> float32 probability map (h, w) in the original frame.

    Upsampled x4 bilinearly (align_corners=True), sigmoid, then warped back with the
    inverse letterbox (cubic, so values may overshoot [0, 1] slightly).
    """
    logits = logits.detach().float().reshape(1, 1, *logits.shape[-2:])
    side = logits.shape[-1] * 4
    prob = torch.sigmoid(F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=True))
    h, w = image_size
    return cv2.warpAffine(prob[0, 0].cpu().numpy(), inverse, (w, h), flags=cv2.INTER_CUBIC, borderValue=0.0)


def postprocess(
    logits: torch.Tensor, inverse: np.ndarray, image_size: tuple[int, int], threshold: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (1, 1, s, s) -> (mask bool (h, w), soft map float32 (h, w)); mask = soft > threshold."""
    prob = soft_map(logits, inverse, image_size)
    return prob > threshold, prob
