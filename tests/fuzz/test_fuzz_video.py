"""Frame folders whose frames change size, change colour mode or cannot be read: every frame of a
video's outputs has the first frame's size (others resized, one warning line), and a frame that
cannot be read (empty, a header claiming 60000x60000) fails alone, with one error line, exit 1."""
from __future__ import annotations

import pytest

from fuzz.harness import MODEL
from fuzz.hostile import bomb_png
from fuzz.videos import SIZE, check_rle_doc, frame_folder, mp4_frame_count, mp4_frame_sizes, png_mask, rows

pytestmark = pytest.mark.slow  # video runs of the demo model

EXP = "the red disc"
STEM = "frames__the-red-disc"

MIXED = {  # name -> (frame sizes, grey frames)
    "one-smaller": ([SIZE, SIZE, (32, 40), SIZE], ()),
    "three-sizes": ([SIZE, (24, 32), (96, 128), (60, 30), SIZE], ()),
    "grey-of-another-size": ([SIZE, SIZE, (36, 36), SIZE], (2,)),
    "larger-then-smaller": ([SIZE, (480, 640), (8, 8)], ()),
}


def warnings_of(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("name", sorted(MIXED))
def test_frames_of_other_sizes_are_resized_to_the_first(sandbox, name):
    """PNG masks and the overlay: every frame there, all of the first frame's size; one warning names them."""
    sizes, grey = MIXED[name]
    frames = frame_folder(sandbox.inp / "frames", sizes, grey)
    result = sandbox.run(["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", *MODEL], 0)
    masks = sorted((sandbox.out / STEM).glob("*.png"))
    assert [p.name for p in masks] == [f"{i:06d}.png" for i in range(len(sizes))]
    assert {png_mask(p).shape for p in masks} == {SIZE}
    overlay = sandbox.out / f"{STEM}.overlay.mp4"
    assert mp4_frame_count(overlay) == len(sizes)
    assert mp4_frame_sizes(overlay) == {SIZE}
    resized = [f"{i:03d}.png" for i, s in enumerate(sizes) if s != SIZE]
    [line] = warnings_of(result.err)
    assert f"{len(resized)} frame(s)" in line and all(name in line for name in resized) and "64x48" in line
    assert sorted(r["frame"] for r in rows(sandbox.out / "results.jsonl")) == list(range(len(sizes)))


@pytest.mark.parametrize("name", ["three-sizes", "grey-of-another-size"])
def test_rle_json_of_frames_of_other_sizes_has_one_size(sandbox, name):
    """Every frame's RLE is of the video's `size`, so the JSON decodes to one mask shape."""
    sizes, grey = MIXED[name]
    frames = frame_folder(sandbox.inp / "frames", sizes, grey)
    sandbox.run(["--video", str(frames), "--exp", EXP, "--sp", ".", "--format", "rle-json", *MODEL], 0)
    check_rle_doc(sandbox.out / f"{STEM}.json", range(len(sizes)))


UNREADABLE = {  # a middle frame that cannot be read -> its writer
    "bomb-header": lambda p: bomb_png(p),
    "zero-byte": lambda p: p.write_bytes(b""),
    "html": lambda p: p.write_text("<html>404</html>"),
}


@pytest.mark.parametrize("name", sorted(UNREADABLE))
@pytest.mark.parametrize("fmt", ["png", "rle-json"])
def test_an_unreadable_frame_fails_alone(sandbox, name, fmt):
    """Frame 1 of 4 cannot be read: frames 0, 2 and 3 are segmented and written (the overlay holds
    those 3), frame 1 has an error row, one error line names it, exit 1."""
    frames = frame_folder(sandbox.inp / "frames")
    UNREADABLE[name](frames / "001.png")
    result = sandbox.run(["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", "--format", fmt,
                          *MODEL], 1)
    assert "001.png" in result.err
    if name == "bomb-header":
        assert "2^30 pixels" in result.err
    if fmt == "png":
        masks = sorted((sandbox.out / STEM).glob("*.png"))
        assert [p.name for p in masks] == ["000000.png", "000002.png", "000003.png"]
        assert {png_mask(p).shape for p in masks} == {SIZE}
    else:
        check_rle_doc(sandbox.out / f"{STEM}.json", [0, 2, 3])
    assert mp4_frame_count(sandbox.out / f"{STEM}.overlay.mp4") == 3
    log = rows(sandbox.out / "results.jsonl")
    assert sorted(r["frame"] for r in log if not r["error"]) == [0, 2, 3]
    assert [r["frame"] for r in log if r["error"]] == [1]


def test_an_unreadable_frame_is_redone_when_mended(sandbox):
    """After the frame is replaced by a good one, --skip-existing segments only it: the outputs are whole."""
    frames = frame_folder(sandbox.inp / "frames")
    bomb_png(frames / "002.png")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--format", "rle-json", *MODEL]
    sandbox.run(argv, 1)
    frame_folder(sandbox.inp / "frames")
    sandbox.run([*argv, "--skip-existing"], 0)
    check_rle_doc(sandbox.out / f"{STEM}.json", range(4))
    log = rows(sandbox.out / "results.jsonl")
    assert sorted(r["frame"] for r in log) == [0, 1, 2, 3] and not any(r["error"] for r in log)


@pytest.mark.parametrize("first", ["bomb-header", "zero-byte"])
def test_an_unreadable_first_frame_refuses_the_video(sandbox, first):
    """The first frame is read before the model loads: bad input, exit 2, nothing written."""
    frames = frame_folder(sandbox.inp / "frames")
    UNREADABLE[first](frames / "000.png")
    result = sandbox.run(["--video", str(frames), "--exp", EXP, "--sp", ".", *MODEL], 2)
    assert "000.png" in result.err
    assert not sandbox.outputs()


def test_python_api_resizes_and_warns(sandbox):
    """`segment_video` yields every frame at the first frame's size and warns once."""
    import warnings

    from unilseg import Predictor, load_model
    from unilseg.tasks.video import segment_video

    frames = frame_folder(sandbox.inp / "frames", [SIZE, (30, 30), SIZE])
    predictor = Predictor(load_model("unilseg-demo", device="cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(segment_video(predictor, str(frames), [EXP]))
    assert [f.image.shape[:2] for f in out] == [SIZE] * 3
    assert [f.predictions[0].mask.shape for f in out] == [SIZE] * 3
    assert len(caught) == 1 and "001.png (30x30)" in str(caught[0].message)
