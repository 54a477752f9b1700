"""Hostile and odd images through the single call, a batch and a label map."""
from __future__ import annotations

import json

import cv2
import pytest

from fuzz.harness import MODEL
from fuzz.hostile import BAD, VALID, make, solid_png

pytestmark = pytest.mark.slow  # ~100 cases, each a model run (one on 40 megapixels)

MODES = ("single", "batch", "labels")


def argv(mode: str, image: str) -> list[str]:
    if mode == "single":
        return ["--img", image, "--exp", "the red circle", "--sp", "m.png", *MODEL]
    if mode == "batch":
        return ["--img", image, "--exp", "the red circle", "--exp", "the grass", "--sp", ".", *MODEL]
    return ["--img", image, "--classes", "circle,grass", "--sp", "labels.png", *MODEL]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_but_odd_image(sandbox, name, mode):
    """Decoded (8-bit BGR, EXIF applied, first frame) and segmented: a mask the image's size."""
    image = make(VALID, name, sandbox.inp)
    sandbox.run(argv(mode, str(image)), 0)
    masks = [p for p in sandbox.outputs() if p.suffix == ".png"]
    assert len(masks) == (2 if mode == "batch" else 1)
    for mask in masks:
        assert cv2.imread(str(mask), cv2.IMREAD_UNCHANGED).shape[:2] == VALID[name][2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(BAD))
def test_unreadable_image(sandbox, name, mode):
    """Alone: refused before the model loads (2). In a batch: a failed item with its reason (1),
    except an --img folder with no images, which is bad input (2)."""
    image = make(BAD, name, sandbox.inp)
    batch = mode == "batch"
    code = 1 if batch and name != "directory-named-png" else 2
    result = sandbox.run(argv(mode, str(image)), code)
    assert not sandbox.outputs()
    if code == 1:
        rows = [json.loads(line) for line in (sandbox.out / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and all(r["error"] for r in rows), rows
        assert "failed:" in result.err


def test_forty_megapixels_are_segmented(sandbox):
    """A 40-megapixel photo is a real photo, not a bomb: segmented at its full size."""
    image = solid_png(sandbox.inp / "big.png", 5000, 8000)
    sandbox.run(["--img", str(image), "--exp", "the wall", "--sp", "big-mask.png", *MODEL], 0)
    header = (sandbox.out / "big-mask.png").read_bytes()[16:24]
    assert (int.from_bytes(header[:4], "big"), int.from_bytes(header[4:], "big")) == (8000, 5000)
