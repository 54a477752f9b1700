"""Makers of hostile and odd input files for the fuzz suite: name -> a function writing it into a folder."""
from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

RNG_SEED = 1234


def _scene(h: int = 48, w: int = 64) -> np.ndarray:
    img = np.full((h, w, 3), (40, 160, 90), np.uint8)
    cv2.circle(img, (w // 2, h // 2), max(1, min(h, w) // 4), (20, 30, 220), -1)
    return img


def _png(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), image)
    return path


def _pil(path: Path, fmt: str, mode: str, size: tuple[int, int] = (64, 48), **save) -> Path:
    from PIL import Image

    Image.fromarray(cv2.cvtColor(_scene(size[1], size[0]), cv2.COLOR_BGR2RGB)).convert(mode).save(path, fmt, **save)
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 60_000) -> Path:
    """A PNG whose header claims side x side pixels (3.6 gigapixels), with a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + png_chunk(b"IEND", b""))
    return path


def solid_png(path: Path, h: int, w: int) -> Path:
    """A grey h x w PNG written row by row by hand (a 40-megapixel one is ~40 kB and quick to make)."""
    raw = zlib.compressobj(9)
    line = b"\0" + b"\x80" * w  # filter byte + pixels
    body = b"".join(raw.compress(line) for _ in range(h)) + raw.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", body)
                     + png_chunk(b"IEND", b""))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """A 64 x 32 (w x h) JPEG whose EXIF says 'rotate 90°': shown, and segmented, as 32 x 64."""
    from PIL import Image

    im = Image.fromarray(cv2.cvtColor(_scene(32, 64), cv2.COLOR_BGR2RGB))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, "JPEG", exif=exif.tobytes())
    return path


def animated_gif(path: Path, frames: int = 3) -> Path:
    from PIL import Image

    ims = [Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)) for i in range(frames)]
    ims[0].save(path, "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)
    return path


def truncated(path: Path, ext: str) -> Path:
    ok, buf = cv2.imencode(ext, _scene(120, 160))
    path.write_bytes(buf.tobytes()[: len(buf) // 3])
    return path


def sixteen_bit(path: Path) -> Path:
    return _png(path, (_scene().astype(np.uint16) * 257))


def image_bytes(ext: str = ".png", h: int = 48, w: int = 64) -> bytes:
    return cv2.imencode(ext, _scene(h, w))[1].tobytes()


# name -> (file name, maker, expected (h, w) of the mask, or None: not an image)
Maker = Callable[[Path], Path]
VALID: dict[str, tuple[str, Maker, tuple[int, int]]] = {
    "rgb-png": ("rgb.png", lambda p: _png(p, _scene()), (48, 64)),
    "grey-png": ("grey.png", lambda p: _png(p, cv2.cvtColor(_scene(), cv2.COLOR_BGR2GRAY)), (48, 64)),
    "rgba-png": ("rgba.png", lambda p: _png(p, cv2.cvtColor(_scene(), cv2.COLOR_BGR2BGRA)), (48, 64)),
    "16bit-png": ("deep.png", sixteen_bit, (48, 64)),
    "palette-png": ("palette.png", lambda p: _pil(p, "PNG", "P"), (48, 64)),
    "cmyk-jpeg": ("cmyk.jpg", lambda p: _pil(p, "JPEG", "CMYK"), (48, 64)),
    "grey-jpeg": ("grey.jpg", lambda p: _pil(p, "JPEG", "L"), (48, 64)),
    "bmp": ("plain.bmp", lambda p: _png(p, _scene()), (48, 64)),
    "webp": ("photo.webp", lambda p: _png(p, _scene()), (48, 64)),
    "tiff": ("scan.tiff", lambda p: _png(p, _scene()), (48, 64)),
    "1x1": ("dot.png", lambda p: _png(p, np.full((1, 1, 3), 200, np.uint8)), (1, 1)),
    "1x5000": ("strip.png", lambda p: _png(p, np.full((1, 5000, 3), 90, np.uint8)), (1, 5000)),
    "5000x1": ("pole.png", lambda p: _png(p, np.full((5000, 1, 3), 90, np.uint8)), (5000, 1)),
    "exif-rotated": ("rotated.jpg", exif_rotated_jpeg, (64, 32)),
    "unicode-name": ("猫 çà 🐱.png", lambda p: _png(p, _scene()), (48, 64)),
    "spaces-name": ("  a b  c .png", lambda p: _png(p, _scene()), (48, 64)),
    "dash-name": ("-rf --sp.png", lambda p: _png(p, _scene()), (48, 64)),
    "wrong-extension": ("really-a-png.jpg", lambda p: _png(p.with_suffix(".png"), _scene()).rename(p) or p,
                        (48, 64)),
    "symlink": ("link.png", lambda p: (os.symlink(_png(p.with_name("target.png"), _scene()), p), p)[1], (48, 64)),
    "animated-gif": ("anim.gif", animated_gif, (40, 40)),  # the first frame
}

BAD: dict[str, tuple[str, Maker]] = {
    "zero-byte": ("empty.png", lambda p: (p.write_bytes(b""), p)[1]),
    "truncated-png": ("cut.png", lambda p: truncated(p, ".png")),
    "truncated-jpeg": ("cut.jpg", lambda p: truncated(p, ".jpg")),
    "random-bytes": ("noise.png", lambda p: (p.write_bytes(np.random.default_rng(RNG_SEED).bytes(4096)), p)[1]),
    "html-as-png": ("page.png", lambda p: (p.write_text("<!DOCTYPE html><html><body>404</body></html>"), p)[1]),
    "text-as-jpeg": ("notes.jpg", lambda p: (p.write_text("hello\n" * 100), p)[1]),
    "png-header-only": ("head.png", lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n"), p)[1]),
    "decompression-bomb": ("bomb.png", bomb_png),
    "missing": ("missing.png", lambda p: p),
    "dangling-symlink": ("dangling.png", lambda p: (os.symlink(p.with_name("nowhere.png"), p), p)[1]),
    "directory-named-png": ("folder.png", lambda p: (p.mkdir(), p)[1]),
    "fifo": ("pipe.png", lambda p: (os.mkfifo(p), p)[1]),
}


def make(kind: dict, name: str, folder: Path) -> Path:
    file_name, maker = kind[name][0], kind[name][1]
    return Path(maker(folder / file_name))


def zip_bytes(files: dict[str, bytes], compress: bool = True) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()
