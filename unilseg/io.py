"""Atomic output writers: a file appears complete under its name or not at all."""
from __future__ import annotations

import io
import os
import secrets
from pathlib import Path

import numpy as np

from .errors import UnilsegError


def check_writable_dir(path: str | Path, flag: str) -> None:
    """Fail early (before any model work) if the file's directory cannot take it."""
    parent = Path(path).expanduser().resolve().parent
    if not parent.is_dir():
        raise UnilsegError(f"{flag} {path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnilsegError(f"{flag} {path}: directory {parent} is not writable; choose another path")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask, unlike mkstemp
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode a plainly created file would get."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def encode_image(path: str | Path, image: np.ndarray) -> bytes:
    """Encode with OpenCV in the format the path's extension names (PNG, JPEG, ...)."""
    import cv2

    ext = Path(path).suffix or ".png"
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        raise UnilsegError(f"cannot write an image as {ext!r} ({path}); use a .png path")
    return buf.tobytes()


def write_mask_png(path: str | Path, mask: np.ndarray) -> None:
    """Bool (H, W) mask -> single-channel uint8 0/255 image."""
    write_bytes_atomic(path, encode_image(path, mask.astype(np.uint8) * 255))


def write_npy(path: str | Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes_atomic(path, buf.getvalue())
