"""What a prediction is written as: mask (PNG / .npy / COCO RLE JSON), soft map, overlay.

Every file is written atomically (temporary file + rename, `unilseg.io`).
"""
from __future__ import annotations

import glob
import io
import json
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import UnilsegError
from .io import encode_image, write_bytes_atomic

FORMATS = ("png", "npy", "rle-json")
TINT_BGR = (255, 144, 30)  # dodger blue
OUTLINE_BGR = (0, 255, 255)  # yellow
TINT_ALPHA = 0.5


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Bool (H, W) -> COCO compressed RLE {'size': [H, W], 'counts': str} (pycocotools)."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (counts as str or bytes) -> bool (H, W)."""
    from pycocotools import mask as coco_mask

    counts = rle["counts"]
    counts = counts.encode() if isinstance(counts, str) else counts
    with warnings.catch_warnings():  # pycocotools 2.0's NumPy-2 `copy=` DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)


def encode_mask(mask: np.ndarray, fmt: str) -> bytes:
    """Bool (H, W) mask -> file bytes: 'png' 0/255 single channel, 'npy' bool array, 'rle-json' COCO RLE."""
    if fmt == "png":
        return encode_image("mask.png", mask.astype(np.uint8) * 255)
    if fmt == "npy":
        return npy_bytes(mask.astype(bool))
    if fmt == "rle-json":
        return (json.dumps(rle_encode(mask)) + "\n").encode()
    raise UnilsegError(f"unknown mask format {fmt!r}; use one of {', '.join(FORMATS)}")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def render_overlay(
    image_bgr: np.ndarray, mask: np.ndarray, alpha: float = TINT_ALPHA, outline: bool = True
) -> np.ndarray:
    """The image (BGR uint8 (H, W, 3)) with the mask tinted and its edge outlined, BGR uint8.

    The outline is drawn on the mask's own border pixels, so exactly the mask's pixels
    change (an overlay can be decoded back to its mask).
    """
    out = image_bgr.copy()
    if not mask.any():
        return out
    h, w = mask.shape
    width = max(1, round(min(h, w) / 250))
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, np.ones((2 * width + 1, 2 * width + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    tint = np.array(TINT_BGR, np.float32)
    out[mask] = np.round(out[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    if outline:
        out[mask & ~inner.astype(bool)] = OUTLINE_BGR
    return out


def write_file(path: Path, data: bytes) -> None:
    """Write atomically (creating missing directories), first removing temporary files a killed run left."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        stale.unlink(missing_ok=True)
    write_bytes_atomic(path, data)


def write_prediction(
    mask_path: Path, mask: np.ndarray, fmt: str, prob: np.ndarray | None = None, prob_path: Path | None = None,
    image_bgr: np.ndarray | None = None, overlay_path: Path | None = None,
) -> None:
    """Write the soft map and overlay (if asked), then the mask: a present mask means all is written."""
    if prob_path is not None and prob is not None:
        write_file(prob_path, npy_bytes(prob.astype(np.float32)))
    if overlay_path is not None and image_bgr is not None:
        write_file(overlay_path, encode_image(overlay_path, render_overlay(image_bgr, mask)))
    write_file(mask_path, encode_mask(mask, fmt))
