"""A disk that fills up mid-job, made real with RLIMIT_FSIZE (a write past the limit fails with EFBIG,
as ENOSPC would): one error line, exit 1, no temporary file, no file renamed into place that is not
whole, and what was finished before stays readable."""
from __future__ import annotations

import json

import cv2
import pytest

from fuzz.harness import MODEL
from fuzz.hostile import image_bytes
from fuzz.test_fuzz_writes import demo_weights
from fuzz.videos import check_rle_doc, frame_folder, limited_main, mp4_frame_count, png_mask

pytestmark = pytest.mark.slow  # video and batch runs of the demo model, each run again on resume

EXP = "the red disc"
STEM = "frames__the-red-disc"
# The demo model's 64x48 masks are some 200 bytes and a row of results.jsonl some 200; the
# 4-frame overlay mp4 some 6 kB: 3000 bytes lets all but the overlay be written.
ROOM_FOR_MASKS = 3000


@pytest.mark.parametrize("fmt", ["png", "rle-json"])
def test_overlay_that_does_not_fit_is_not_renamed_into_place(sandbox, fmt):
    """The encoder drops what it cannot write without a word: the overlay is read back, found short,
    and removed; the masks and the log are complete; exit 1 with one line naming the overlay."""
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", "--format", fmt, *MODEL]
    result = sandbox.run(argv, 1, main=limited_main(ROOM_FOR_MASKS))
    assert "overlay" in result.err and "0 of the 4 frames" in result.err
    assert not (sandbox.out / f"{STEM}.overlay.mp4").exists()
    if fmt == "png":
        assert len([png_mask(p) for p in (sandbox.out / STEM).glob("*.png")]) == 4
    else:
        check_rle_doc(sandbox.out / f"{STEM}.json", range(4))
    log = [json.loads(line) for line in (sandbox.out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["frame"] for r in log) == [0, 1, 2, 3]


def test_resume_after_the_disk_is_freed_writes_the_overlay(sandbox):
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", *MODEL]
    sandbox.run(argv, 1, main=limited_main(ROOM_FOR_MASKS))
    sandbox.run([*argv, "--skip-existing"], 0)
    assert mp4_frame_count(sandbox.out / f"{STEM}.overlay.mp4") == 4


@pytest.mark.parametrize("fmt", ["png", "rle-json"])
def test_video_log_that_does_not_fit(sandbox, fmt):
    """The results log (and RLE lines) fill the disk mid-video: one line, exit 1, no temporary overlay."""
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", "--format", fmt, *MODEL]
    result = sandbox.run(argv, 1, main=limited_main(400))
    assert "File too large" in result.err
    assert not (sandbox.out / f"{STEM}.overlay.mp4").exists()


def test_convert_on_a_full_disk(sandbox):
    """safetensors' writer fails in Rust: one line, exit 1, neither the file nor its temporary left."""
    result = sandbox.run(["convert", demo_weights(), str(sandbox.out / "w.safetensors"), "--config",
                          "unilseg-demo"], 1, main=limited_main(100_000))
    assert "File too large" in result.err and "w.safetensors" in result.err
    assert list(sandbox.out.iterdir()) == []


def test_convert_half_on_a_full_disk(sandbox):
    result = sandbox.run(["convert", demo_weights(), str(sandbox.out / "h.safetensors"), "--config",
                          "unilseg-demo", "--half"], 1, main=limited_main(4096))
    assert "File too large" in result.err
    assert list(sandbox.out.iterdir()) == []


def images(sandbox, n: int = 3) -> str:
    folder = sandbox.inp / "imgs"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i}.png").write_bytes(image_bytes())
    return str(folder)


@pytest.mark.parametrize("limit", [300, 600])
def test_label_maps_on_a_full_disk(sandbox, limit):
    """A label-map batch whose overlays (or log) do not fit: exit 1, one error line, no temporary
    file, and each label PNG left is whole; a resume with room finishes the job."""
    argv = ["--img", images(sandbox), "--classes", "disc,grass", "--sp", "labels/", "--overlay", "png", *MODEL]
    sandbox.run(argv, 1, main=limited_main(limit))
    for label in (sandbox.out / "labels").glob("*__labels.png"):
        assert cv2.imread(str(label), cv2.IMREAD_UNCHANGED).shape[:2] == (48, 64)
    sandbox.run([*argv, "--skip-existing"], 0)
    log = [json.loads(line) for line in (sandbox.out / "labels" / "results.jsonl").read_text().splitlines()]
    assert len(log) == 3 and not any(r["error"] for r in log)


@pytest.mark.parametrize("limit", [300, 700])
def test_batch_log_on_a_full_disk_then_resume(sandbox, limit):
    """The results log fills the disk after some masks: exit 1, one line; the resume logs every item."""
    argv = ["--img", images(sandbox), "--exp", "x", "--exp", "y", "--sp", ".", *MODEL]
    result = sandbox.run(argv, 1, main=limited_main(limit))
    assert "results.jsonl" in result.err
    sandbox.run([*argv, "--skip-existing"], 0)
    log = [json.loads(line) for line in (sandbox.out / "results.jsonl").read_text().splitlines()]
    assert len(log) == 6 and not any(r["error"] for r in log)
