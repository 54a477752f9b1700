"""COCO files for the whole job (`--coco`, `--coco-results`, `--instances`), read back with pycocotools itself:
the masks in them are the masks on disk, COCOeval runs on them, a killed and resumed job writes the same bytes,
and bad targets are refused before any model work."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT
from fuzz.videos import limited_main
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_labelmap import read_label_png
from tiny import write_images, write_tiny_model

from unilseg.__main__ import main
from unilseg.inference.instances import split_instances

EXAMPLES = ROOT / "src" / "unilseg" / "demo" / "examples"
DEMO = ["--model", "unilseg-demo", "--device", "cpu"]
TEXTS = ["the blue car", "all the trees", "the house"]


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    """The demo page's three example scenes, copied into their own folder."""
    folder = tmp_path / "scenes"
    folder.mkdir()
    for png in sorted(EXAMPLES.glob("*.png")):
        shutil.copy(png, folder / png.name)
    return folder


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def png_mask(path: str | Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0


def segment(*argv: str) -> int:
    return main(["segment", *argv])


def test_coco_masks_are_the_mask_files_and_cocoeval_reads_them(scenes, tmp_path):
    out = tmp_path / "out"
    exps = [a for t in TEXTS for a in ("--exp", t)]
    assert segment("--img", str(scenes), *exps, "--sp", str(out), "--coco", str(out / "coco.json"),
                   "--coco-results", str(tmp_path / "dt.json"), "--image-root", str(scenes), *DEMO) == 0
    gt = COCO(str(out / "coco.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == TEXTS  # first-seen order, ids 1, 2, 3
    assert sorted(img["file_name"] for img in gt.dataset["images"]) == sorted(p.name for p in scenes.iterdir())
    rows = {(Path(r["image"]).name, r["expression"]): r for r in rows_of(out / "results.jsonl")}
    found = 0
    for ann in gt.dataset["annotations"]:
        image = gt.imgs[ann["image_id"]]
        row = rows[image["file_name"], gt.cats[ann["category_id"]]["name"]]
        mask = png_mask(row["output"])
        assert np.array_equal(gt.annToMask(ann).astype(bool), mask)  # one annotation per (image, instruction)
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0 and ann["score"] == row["presence"]
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        found += 1
    assert found == sum(1 for r in rows.values() if r["foreground"] > 0)  # an empty mask gets no annotation
    ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # the results are the instances file's own masks


def test_instances_are_the_mask_s_components(scenes, tmp_path):
    out = tmp_path / "out"
    assert segment("--img", str(scenes), "--exp", "all the trees", "--exp", "the blue car", "--sp", str(out),
                   "--coco", str(out / "coco.json"), "--instances", "--min-area", "1", *DEMO) == 0
    gt = COCO(str(out / "coco.json"))
    for row in rows_of(out / "results.jsonl"):
        mask = png_mask(row["output"])
        image_id = next(i["id"] for i in gt.dataset["images"] if i["file_name"] == row["image"])
        cat = gt.getCatIds(catNms=[row["expression"]])
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id], catIds=cat))
        count = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1
        assert row["instances"] == len(anns) == count and row["instances_cut"] == 0
        union = np.zeros_like(mask)
        for ann in anns:
            part = gt.annToMask(ann).astype(bool)
            assert cv2.connectedComponents(part.view(np.uint8), connectivity=8)[0] == 2  # one 8-connected piece
            assert not (union & part).any()
            union |= part
        assert np.array_equal(union, mask)
        assert [a["area"] for a in anns] == sorted((a["area"] for a in anns), reverse=True)  # largest first


def test_polygons_trace_the_masks(scenes, tmp_path):
    out = tmp_path / "out"
    assert segment("--img", str(scenes), "--exp", "the house", "--sp", str(out), "--coco", str(out / "coco.json"),
                   "--coco-polygons", "--instances", *DEMO) == 0
    gt = COCO(str(out / "coco.json"))
    assert gt.dataset["annotations"]
    for row in rows_of(out / "results.jsonl"):
        image_id = next(i["id"] for i in gt.dataset["images"] if i["file_name"] == row["image"])
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        assert all(isinstance(a["segmentation"], list) and len(a["segmentation"][0]) >= 6 for a in anns)
        drawn = np.zeros_like(png_mask(row["output"]))
        for ann in anns:
            drawn |= gt.annToMask(ann).astype(bool)
        mask = png_mask(row["output"])
        if not mask.any():
            assert not anns
            continue
        assert (drawn & mask).sum() / (drawn | mask).sum() > 0.85  # outlines, holes filled, specks cut


def test_label_maps_feed_the_same_files(scenes, tmp_path):
    out = tmp_path / "out"
    assert segment("--img", str(scenes), "--classes", "car: the blue car,tree: all the trees,house", "--sp",
                   str(out), "--coco", str(out / "coco.json"), *DEMO) == 0
    gt = COCO(str(out / "coco.json"))
    assert [c["name"] for c in gt.dataset["categories"]] == ["car", "tree", "house"]
    for row in rows_of(out / "results.jsonl"):
        labels = read_label_png(row["output"])[0]
        image_id = next(i["id"] for i in gt.dataset["images"] if i["file_name"] == row["image"])
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[image_id]))
        assert sorted(a["category_id"] for a in anns) == [k for k in (1, 2, 3) if (labels == k).any()]
        for ann in anns:
            assert np.array_equal(gt.annToMask(ann).astype(bool), labels == ann["category_id"])


@pytest.mark.slow  # subprocesses, killed
def test_a_coco_job_killed_twice_and_resumed_writes_the_bytes_of_one_never_killed(tmp_path):
    config, weights = write_tiny_model(tmp_path)
    write_images(tmp_path / "images", 40, seed=2)
    model = ["--config", str(config), "--weights", str(weights), "--device", "cpu"]

    def args(out: Path) -> list[str]:  # one thread in every run: soft maps are bit-equal at equal thread counts
        return [sys.executable, "-m", "unilseg", "segment", "--img", str(tmp_path / "images"), "--exp", "the cat",
                "--exp", "sky", "--sp", str(out), "--coco", str(out / "coco.json"), "--coco-results",
                str(out / "dt.json"), "--instances", "--threads", "1", *model]

    assert subprocess.run(args(tmp_path / "whole"), cwd=ROOT, capture_output=True).returncode == 0
    out = tmp_path / "killed"
    for at in (6, 30):  # masks written before each kill
        proc = subprocess.Popen([*args(out), "--skip-existing"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while proc.poll() is None and len(list(out.glob("*.png"))) < at and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert not (out / "coco.json").exists()  # written only when the job ends
    assert at <= len(list(out.glob("*.png"))) < 80, "the run was not killed midway"
    assert subprocess.run([*args(out), "--skip-existing"], cwd=ROOT, capture_output=True).returncode == 0
    for name in ("coco.json", "dt.json"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert len(COCO(str(out / "coco.json")).dataset["images"]) == 40
    assert not list(out.glob(".*"))  # no temporary file left


def test_bad_targets_are_refused_before_any_model_work(scenes, tmp_path, capsys, loads):
    base = ["--img", str(scenes), "--exp", "the house", "--sp", str(tmp_path / "out"), *DEMO]
    (tmp_path / "taken.json").mkdir()
    cases = [
        (["--coco", "/proc/unilseg/coco.json"], "--coco /proc/unilseg: cannot write in /proc"),
        (["--coco", str(tmp_path / "taken.json")], "is a directory"),
        (["--coco", str(tmp_path / "a.txt")], "name a .json file"),
        (["--coco", str(tmp_path / "a.json"), "--label-studio", str(tmp_path / "a.json")], "its own name"),
        (["--instances"], "add --coco"),
        (["--coco", str(tmp_path / "a.json"), "--min-area", "4"], "applies to --instances"),
        (["--coco", str(tmp_path / "a.json"), "--instances", "--max-instances", "0"], "at least 1"),
        (["--coco", str(tmp_path / "a.json"), "--image-root", str(tmp_path / "taken.json")], "is not inside it"),
        (["--coco", str(tmp_path / "a.json"), "--video", str(scenes)], "takes images"),
    ]
    for extra, said in cases:
        capsys.readouterr()
        assert segment(*base, *extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and said in err[0], (extra, err)
    assert loads == []
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "out").exists()


def test_an_empty_instruction_and_a_failed_image_stay_out(scenes, tmp_path):
    (scenes / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    manifest = tmp_path / "m.jsonl"
    lines = [{"image": str(p), "expression": e} for p in sorted(scenes.iterdir()) for e in ("the house", " ")]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert segment("--manifest", str(manifest), "--sp", str(out), "--coco", str(out / "coco.json"), *DEMO) == 1
    doc = json.loads((out / "coco.json").read_text())
    assert [c["name"] for c in doc["categories"]] == ["the house"]
    assert "broken.png" not in {Path(i["file_name"]).name for i in doc["images"]} and len(doc["images"]) == 3
    failed = [r for r in rows_of(out / "results.jsonl") if r["error"]]
    assert any(Path(r["image"]).name == "broken.png" for r in failed)  # named in results.jsonl


def test_a_disk_that_fills_while_the_file_is_written_keeps_the_previous_one(scenes, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["segment", "--img", str(scenes), "--exp", "the house", "--exp", "all the trees", "--sp", str(out),
            "--coco", str(out / "coco.json"), "--coco-polygons", *DEMO]  # polygons: a file larger than the log
    assert main(argv) == 0
    before = (out / "coco.json").read_bytes()
    room = (out / "results.jsonl").stat().st_size + 200  # the log is rewritten whole; the COCO file does not fit
    assert len(before) > room
    capsys.readouterr()
    code = limited_main(room)([*argv, "--skip-existing"])  # nothing to redo: only the files are written
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "coco.json" in err[0] and "File too large" in err[0]
    assert (out / "coco.json").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file


def test_max_instances_keeps_a_mask_of_specks_bounded():
    """100k isolated pixels: the largest max_instances are kept, the cut is counted, nothing grows with it."""
    mask = np.zeros((632, 632), bool)
    mask[::2, ::2] = True
    mask[:3, :3] = True  # one component of 9 pixels, which is kept first
    found = split_instances(mask, mask.astype(np.float32), min_area=1, max_instances=100)
    total = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)[0] - 1
    assert total > 99_000 and len(found.instances) == 100
    assert found.dropped_over_cap == total - 100 and found.dropped_small == 0
    assert found.instances[0].area == 9 and found.instances[0].bbox == (0, 0, 3, 3)
    assert split_instances(mask, None, min_area=2).instances[0].area == 9  # specks under min_area dropped
