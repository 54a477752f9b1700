"""Resuming (--skip-existing) from damaged state: a results row, per-frame RLE line or stored mask that
is damaged (keys missing, wrong types, not JSON, not UTF-8, empty, cut, of the wrong size) is redone,
never trusted: the resumed run exits 0 and its final files are complete and valid."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fuzz.harness import MODEL
from fuzz.hostile import image_bytes
from fuzz.videos import SIZE, check_rle_doc, frame_folder, mp4_frame_count, png_mask, rows

pytestmark = pytest.mark.slow  # each case runs the demo model twice (the damaged run, the resume)

EXP = "the red disc"
STEM = "frames__the-red-disc"


def write_rows(path: Path, found: list[dict], extra: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in found) + extra)


# ---------------------------------------------------------------- a video's per-frame RLE lines

FRAME_DAMAGE = {  # the entry of frame 2 in `.NAME.frames.jsonl` -> what a damaged file holds instead
    "no-rle": lambda e: {"frame": e["frame"], "time": e["time"]},
    "no-frame": lambda e: {"time": e["time"], "rle": e["rle"]},
    "frame-as-text": lambda e: {**e, "frame": "two"},
    "frame-as-bool": lambda e: {**e, "frame": True},
    "rle-as-text": lambda e: {**e, "rle": "not an rle"},
    "rle-of-another-size": lambda e: {**e, "rle": {"size": [10, 10], "counts": [100]}},
    "rle-counts-short": lambda e: {**e, "rle": {"size": e["rle"]["size"], "counts": "31"}},
    "time-as-null": lambda e: {**e, "time": None},
    "a-list": lambda e: [e["frame"]],
}


def killed_rle_run(sandbox, argv: list[str]) -> tuple[Path, list[dict]]:
    """Run to the end, then leave what a kill before the final rewrite leaves: the per-frame lines, no JSON."""
    sandbox.run(argv, 0)
    final = sandbox.out / f"{STEM}.json"
    entries = json.loads(final.read_text())["frames"]
    final.unlink()
    return sandbox.out / f".{STEM}.frames.jsonl", entries


@pytest.mark.parametrize("damage", sorted(FRAME_DAMAGE))
def test_damaged_frame_line_is_redone(sandbox, damage):
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--format", "rle-json", *MODEL]
    partial, entries = killed_rle_run(sandbox, argv)
    entries[2] = FRAME_DAMAGE[damage](entries[2])
    write_rows(partial, entries)
    sandbox.run([*argv, "--skip-existing"], 0)
    check_rle_doc(sandbox.out / f"{STEM}.json", range(4))
    assert not partial.exists()
    log = {r["frame"]: r for r in rows(sandbox.out / "results.jsonl")}
    assert sorted(log) == [0, 1, 2, 3] and not log[2].get("skipped")  # frame 2 computed again


@pytest.mark.parametrize("tail", [b'{"frame": 3, "time": 0.12, "rle": {"size": [48, 64], "cou',
                                  b"\xff\xfe not utf-8\n", b"[1, 2\n", b"\n\n"])
def test_torn_or_foreign_lines_in_the_frame_file(sandbox, tail):
    """Frame 3's line cut by the kill (or junk after the good lines): frame 3 is redone."""
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--format", "rle-json", *MODEL]
    partial, entries = killed_rle_run(sandbox, argv)
    write_rows(partial, entries[:3], tail)
    sandbox.run([*argv, "--skip-existing"], 0)
    check_rle_doc(sandbox.out / f"{STEM}.json", range(4))


FINAL_DAMAGE = {  # the final JSON of an earlier run -> what a damaged one holds
    "frames-not-a-list": lambda d: {**d, "frames": {"0": 1}},
    "a-list": lambda d: d["frames"],
    "frame-without-rle": lambda d: {**d, "frames": [{k: v for k, v in f.items() if k != "rle"} for f in d["frames"]]},
    "rle-of-another-size": lambda d: {**d, "frames": [{**f, "rle": {"size": [4, 4], "counts": [16]}}
                                                      for f in d["frames"]]},
}


@pytest.mark.parametrize("damage", sorted(FINAL_DAMAGE))
def test_damaged_final_json_is_redone(sandbox, damage):
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--format", "rle-json", *MODEL]
    sandbox.run(argv, 0)
    final = sandbox.out / f"{STEM}.json"
    final.write_text(json.dumps(FINAL_DAMAGE[damage](json.loads(final.read_text()))))
    sandbox.run([*argv, "--skip-existing"], 0)
    check_rle_doc(final, range(4))


# ---------------------------------------------------------------- a video's stored mask frames

def cut(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


MASK_DAMAGE = {  # frame 2's mask PNG -> what a damaged one is
    "zero-byte": lambda p: p.write_bytes(b""),
    "cut": cut,
    "wrong-size": lambda p: cv2.imwrite(str(p), np.zeros((10, 12), np.uint8)),
    "not-a-png": lambda p: p.write_text("hello"),
}


@pytest.mark.parametrize("overlay", [True, False], ids=["overlay", "masks"])
@pytest.mark.parametrize("damage", sorted(MASK_DAMAGE))
def test_damaged_mask_frame_is_redone(sandbox, damage, overlay):
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", *MODEL] + (["--overlay"] if overlay else [])
    sandbox.run(argv, 0)
    mask = sandbox.out / STEM / "000002.png"
    good = png_mask(mask)
    MASK_DAMAGE[damage](mask)
    sandbox.run([*argv, "--skip-existing"], 0)
    masks = sorted((sandbox.out / STEM).glob("*.png"))
    assert len(masks) == 4 and {png_mask(p).shape for p in masks} == {SIZE}
    assert np.array_equal(png_mask(mask), good)
    if overlay:
        assert mp4_frame_count(sandbox.out / f"{STEM}.overlay.mp4") == 4


def test_damaged_overlay_is_rewritten(sandbox):
    """Every mask there but the overlay cut short: the run is not 'finished'; the overlay is made again."""
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", "--overlay", *MODEL]
    sandbox.run(argv, 0)
    cut(sandbox.out / f"{STEM}.overlay.mp4")
    sandbox.run([*argv, "--skip-existing"], 0)
    assert mp4_frame_count(sandbox.out / f"{STEM}.overlay.mp4") == 4


VIDEO_ROW_DAMAGE = {  # frame 1's row of results.jsonl -> its damaged form
    "frame-as-list": lambda r: {**r, "frame": [1]},
    "output-as-dict": lambda r: {**r, "output": {"a": 1}},
    "expression-as-list": lambda r: {**r, "expression": [r["expression"]]},
    "no-output": lambda r: {k: v for k, v in r.items() if k != "output"},
}


@pytest.mark.parametrize("damage", sorted(VIDEO_ROW_DAMAGE))
def test_damaged_video_results_row(sandbox, damage):
    frames = frame_folder(sandbox.inp / "frames")
    argv = ["--video", str(frames), "--exp", EXP, "--sp", ".", *MODEL]
    sandbox.run(argv, 0)
    log = sandbox.out / "results.jsonl"
    found = rows(log)
    found[1] = VIDEO_ROW_DAMAGE[damage](found[1])
    write_rows(log, found)
    sandbox.run([*argv, "--skip-existing"], 0)
    final = rows(log)
    assert sorted(r["frame"] for r in final) == [0, 1, 2, 3]
    assert all(isinstance(r["output"], str) and isinstance(r["expression"], str) for r in final)


# ---------------------------------------------------------------- a batch's and a label map's results log

ROW_DAMAGE = {  # the first row of results.jsonl -> its damaged form (None: the line is replaced by raw bytes)
    "output-as-dict": lambda r: {**r, "output": {"path": r["output"]}},
    "output-as-list": lambda r: {**r, "output": [r["output"]]},
    "output-null": lambda r: {**r, "output": None},
    "output-a-number": lambda r: {**r, "output": 7},
    "error-as-list": lambda r: {**r, "error": ["x"]},
    "not-utf8": None,
}


def damage_first_row(log: Path, damage: str) -> None:
    found = rows(log)
    if ROW_DAMAGE[damage] is None:
        write_rows(log, found[1:], b"\xff\xfe\xfa not utf-8\n")
    else:
        write_rows(log, [ROW_DAMAGE[damage](found[0]), *found[1:]])


def image(sandbox) -> str:
    path = sandbox.inp / "a.png"
    path.write_bytes(image_bytes())
    return str(path)


def images(sandbox) -> str:
    """A folder of two images, a.png and b.png: a label-map batch (with a results log)."""
    folder = sandbox.inp / "imgs"
    folder.mkdir()
    for name, (h, w) in (("a", (48, 64)), ("b", (40, 30))):
        (folder / f"{name}.png").write_bytes(image_bytes(h=h, w=w))
    return str(folder)


def written(sandbox, log: list[dict]) -> list[Path]:
    return sorted((sandbox.out / r["output"]).resolve() for r in log)


@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_damaged_batch_results_row(sandbox, damage):
    argv = ["--img", image(sandbox), "--exp", "x", "--exp", "y", "--sp", ".", *MODEL]
    sandbox.run(argv, 0)
    damage_first_row(sandbox.out / "results.jsonl", damage)
    sandbox.run([*argv, "--skip-existing"], 0)
    final = rows(sandbox.out / "results.jsonl")
    assert all(isinstance(r["output"], str) for r in final) and not any(r["error"] for r in final)
    assert written(sandbox, final) == [sandbox.out / "a__x.png", sandbox.out / "a__y.png"]


@pytest.mark.parametrize("damage", ["output-as-dict", "output-as-list", "not-utf8"])
def test_damaged_label_results_row(sandbox, damage):
    argv = ["--img", images(sandbox), "--classes", "disc,grass", "--sp", "labels/", *MODEL]
    sandbox.run(argv, 0)
    damage_first_row(sandbox.out / "labels" / "results.jsonl", damage)
    sandbox.run([*argv, "--skip-existing"], 0)
    final = rows(sandbox.out / "labels" / "results.jsonl")
    assert all(isinstance(r["output"], str) for r in final) and not any(r["error"] for r in final)
    assert written(sandbox, final) == [sandbox.out / "labels" / f"{n}__labels.png" for n in "ab"]


STORED_DAMAGE = {"zero-byte": lambda p: p.write_bytes(b""), "cut": cut}


@pytest.mark.parametrize("fmt", ["png", "npy", "rle-json"])
@pytest.mark.parametrize("damage", sorted(STORED_DAMAGE))
def test_damaged_batch_mask_is_redone(sandbox, damage, fmt):
    ext = {"png": ".png", "npy": ".npy", "rle-json": ".json"}[fmt]
    argv = ["--img", image(sandbox), "--exp", "x", "--exp", "y", "--sp", ".", "--format", fmt, *MODEL]
    sandbox.run(argv, 0)
    mask = sandbox.out / f"a__x{ext}"
    good = mask.read_bytes()
    STORED_DAMAGE[damage](mask)
    sandbox.run([*argv, "--skip-existing"], 0)
    assert mask.read_bytes() == good


@pytest.mark.parametrize("which", ["label-png", "legend", "overlay"])
def test_damaged_label_map_file_is_redone(sandbox, which):
    argv = ["--img", images(sandbox), "--classes", "disc,grass", "--sp", "labels/", "--overlay", "jpg", *MODEL]
    sandbox.run(argv, 0)
    name = {"label-png": "a__labels.png", "legend": "a__labels.legend.json", "overlay": "a__labels.overlay.jpg"}
    path = sandbox.out / "labels" / name[which]
    good = path.read_bytes()
    cut(path)
    sandbox.run([*argv, "--skip-existing"], 0)
    assert path.read_bytes() == good


def test_row_appended_after_a_torn_line_is_kept(tmp_path):
    """A killed run's torn last line is cut off before the next run appends: its first row is not glued
    to it (and lost to the run after)."""
    from unilseg.batch import ResultsLog, plan_items, read_results

    plan = plan_items([("a.png", "x", None), ("b.png", "y", None)], tmp_path)
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"output": str(plan[0].output), "error": None}) + '\n{"output": "torn')
    log = ResultsLog(path, keep_existing=True)
    log.append({"output": str(plan[1].output), "error": None, "score": 0.5})  # then killed: no finish()
    assert read_results(path) == [{"output": str(plan[0].output), "error": None},
                                  {"output": str(plan[1].output), "error": None, "score": 0.5}]
    assert path.read_text().endswith("}\n")
