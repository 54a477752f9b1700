"""Makers for the video and resume cases: frame folders, reading results back, a file size limit."""
from __future__ import annotations

import json
import resource
import signal
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

SIZE = (48, 64)  # (H, W) of the frames unless a case says otherwise


def scene(i: int, h: int = SIZE[0], w: int = SIZE[1], grey: bool = False) -> np.ndarray:
    """A frame: grass with a red disc that moves with i, and some noise (so an mp4 of it is not tiny)."""
    img = np.full((h, w, 3), (40, 160, 90), np.uint8)
    cv2.circle(img, (w // 4 + 3 * i, h // 2), max(2, min(h, w) // 4), (20, 30, 220), -1)
    noise = np.random.default_rng(i).integers(0, 40, (h, w, 3), dtype=np.uint8)
    img = cv2.add(img, noise)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if grey else img


def frame_folder(folder: Path, sizes: Sequence[tuple[int, int]] = (SIZE,) * 4, grey: Sequence[int] = ()) -> Path:
    """PNG frames 000.png, 001.png, ... of the given (H, W) sizes; the indices in `grey` single-channel."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i:03d}.png"), scene(i, h, w, grey=i in grey))
    return folder


def mp4_frame_count(path: Path) -> int:
    """Frames that decode, read one by one (not what the container claims)."""
    capture = cv2.VideoCapture(str(path))
    n = 0
    while capture.read()[0]:
        n += 1
    capture.release()
    return n


def mp4_frame_sizes(path: Path) -> set[tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    sizes = set()
    while True:
        ok, image = capture.read()
        if not ok:
            break
        sizes.add(image.shape[:2])
    capture.release()
    return sizes


def png_mask(path: Path) -> np.ndarray:
    """A mask frame read back: must be a whole 8-bit single-channel 0/255 PNG."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2, path
    assert set(np.unique(mask)) <= {0, 255}, path
    return mask


def rows(path: Path) -> list[dict]:
    """Every line of a JSON-lines file, parsed (a line that is not JSON fails the test)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_rle_doc(path: Path, frames: Sequence[int], size: tuple[int, int] = SIZE) -> dict:
    """A video's final RLE JSON: every frame listed once, in order, each a COCO RLE of `size` that
    decodes to a mask which encodes back to the same counts (runs that cover the mask exactly)."""
    from pycocotools import mask as coco_mask

    doc = json.loads(path.read_text())
    assert doc["size"] == list(size)
    assert [f["frame"] for f in doc["frames"]] == list(frames)
    for f in doc["frames"]:
        assert set(f) == {"frame", "time", "rle"} and isinstance(f["time"], (int, float)), f
        rle = f["rle"]
        assert rle["size"] == list(size) and isinstance(rle["counts"], str), f
        with warnings.catch_warnings():  # pycocotools' NumPy-2 `copy=` DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            mask = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert mask.shape == size
            assert coco_mask.encode(np.asfortranarray(mask))["counts"].decode() == rle["counts"], f
    return doc


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    """RLIMIT_FSIZE for the block: a write past `nbytes` in any file fails with EFBIG, as on a full disk
    (Python ignores the SIGXFSZ the kernel sends, so the write raises instead of killing the process)."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def limited_main(nbytes: int):
    """`unilseg.__main__.main` run under a file size limit of `nbytes` (for `Sandbox.run(main=...)`)."""
    from unilseg.__main__ import main

    def run(argv: list[str]) -> int:
        with file_size_limit(nbytes):
            return main(argv)

    return run
