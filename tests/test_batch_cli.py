"""Batch command line on a tiny model: inputs, names, results, formats, failures, resume, shards."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from tiny import write_images, write_tiny_model

from unilseg.cli.segment import main
from unilseg.inference.predictor import Predictor
from unilseg.io.writers import render_overlay
from unilseg.model.build import load_model

THRESHOLD = 0.5  # the tiny config's


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(config, weights, images dir with 4 PNGs) shared by the module."""
    root = tmp_path_factory.mktemp("tiny")
    config, weights = write_tiny_model(root)
    write_images(root / "images", 4)
    return config, weights, root / "images"


@pytest.fixture(scope="module")
def reference(tiny):
    """(image path, text) -> Prediction, one image and one text at a time through the Predictor."""
    predictor = Predictor(load_model(tiny[1], tiny[0]))
    cache = {}

    def predict(image, text):
        if (str(image), text) not in cache:
            predictor.set_image(image)
            cache[str(image), text] = predictor.predict(text)[0]
        return cache[str(image), text]

    return predict


def cli(capsys, tiny, *argv):
    """Run main() with the tiny model -> (exit code, stderr lines)."""
    code = main([*argv, "--config", str(tiny[0]), "--weights", str(tiny[1]), "--device", "cpu"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
    return mask > 0


def assert_same_mask(mask: np.ndarray, ref) -> None:
    """Equal to the reference, except where its soft map sits within 1e-4 of the threshold."""
    assert mask.shape == ref.mask.shape
    assert not ((mask != ref.mask) & (np.abs(ref.prob - THRESHOLD) > 1e-4)).any()


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_directory_times_expressions_equal_one_at_a_time(capsys, tiny, reference, tmp_path):
    images = sorted(tiny[2].iterdir())
    exp_file = tmp_path / "exps.txt"
    exp_file.write_text("a red ball on the left\n\nsky\n")
    out = tmp_path / "out"
    code, err = cli(capsys, tiny, "--img", str(tiny[2]), "--exp", "the cat", "--exp", "The cat!", "--exp-file",
                    str(exp_file), "--sp", str(out), "--save-prob")
    assert code == 0 and err == []
    texts = ["the cat", "The cat!", "a red ball on the left", "sky"]
    slugs = ["the-cat", "the-cat__2", "a-red-ball-on-the-left", "sky"]
    expected = {f"{img.stem}__{slug}.png" for img in images for slug in slugs}
    assert {p.name for p in out.glob("*.png")} == expected
    rows = rows_of(out / "results.jsonl")
    assert [(Path(r["image"]).name, r["expression"]) for r in rows] == [(img.name, t) for img in images for t in texts]
    for row in rows:
        ref = reference(row["image"], row["expression"])
        mask = read_mask(Path(row["output"]))
        assert_same_mask(mask, ref)
        prob = np.load(Path(row["output"]).with_suffix(".prob.npy"))
        assert prob.dtype == np.float32 and np.abs(prob - ref.prob).max() <= 1e-4
        assert abs(row["score"] - ref.score) <= 1e-4 and abs(row["foreground"] - mask.mean()) <= 1e-6
        assert row["error"] is None and row["seconds"] > 0
        assert 0 < row["foreground"] < 1  # the test means something: masks are neither empty nor full


def test_glob_and_repeated_img(capsys, tiny, tmp_path):
    out = tmp_path / "out"
    code, _ = cli(capsys, tiny, "--img", str(tiny[2] / "img00[01].png"), "--img", str(tiny[2] / "img003.png"),
                  "--exp", "dog", "--sp", str(out))
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["img000__dog.png", "img001__dog.png", "img003__dog.png"]


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_manifest(capsys, tiny, reference, tmp_path, kind):
    rows = [("images/img000.png", "the cat", ""), ("images/img002.png", "sky", "nested/sky.png"),
            ("images/img000.png", "sky", "")]
    (tmp_path / "images").symlink_to(tiny[2])
    manifest = tmp_path / f"m.{kind}"
    if kind == "csv":
        manifest.write_text("image,expression,output\n" + "".join(f"{i},{e},{o}\n" for i, e, o in rows))
    else:
        manifest.write_text("".join(json.dumps({"image": i, "expression": e, **({"output": o} if o else {})}) + "\n"
                                    for i, e, o in rows))
    out = tmp_path / "out"
    code, err = cli(capsys, tiny, "--manifest", str(manifest), "--sp", str(out))
    assert code == 0 and err == []
    results = rows_of(out / "results.jsonl")
    assert [Path(r["output"]).relative_to(out).as_posix() for r in results] == [
        "img000__the-cat.png", "nested/sky.png", "img000__sky.png"]
    for row, (image, text, _) in zip(results, rows):
        assert_same_mask(read_mask(Path(row["output"])), reference(tmp_path / image, text))


def test_bad_items_among_good_ones(capsys, tiny, reference, tmp_path):
    images = tmp_path / "images"
    good = write_images(images, 2)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    code, err = cli(capsys, tiny, "--img", str(images), "--img", str(tmp_path / "gone.jpg"), "--exp", "the cat",
                    "--exp", " ", "--sp", str(out), "--overlay", "png")
    assert code == 1
    rows = rows_of(out / "results.jsonl")
    assert len(rows) == 8
    failed = [r for r in rows if r["error"]]
    assert len(failed) == 6 and len(err) == 7
    assert err[-1] == f"error: 6 of 8 items failed; see {out / 'results.jsonl'}"
    assert all(line.startswith("failed: ") for line in err[:-1])
    assert sum("cannot read" in r["error"] and "broken.png" in r["error"] for r in failed) == 1
    assert sum("image not found" in r["error"] for r in failed) == 1
    assert sum("empty expression" in r["error"] for r in failed) == 4
    assert not any(Path(r["output"]).exists() or Path(r["output"]).with_suffix(".overlay.png").exists()
                   for r in failed)
    for img in good:
        path = out / f"{img.stem}__the-cat.png"
        assert_same_mask(read_mask(path), reference(img, "the cat"))
        assert path.with_suffix(".overlay.png").is_file()
    assert not list(out.glob(".*"))  # no temporary files left


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools 2.0
def test_formats_decode_back_to_the_mask(capsys, tiny, reference, tmp_path):
    from pycocotools import mask as coco_mask

    images = sorted(tiny[2].iterdir())[:2]
    out = {fmt: tmp_path / fmt for fmt in ("rle-json", "npy")}
    for fmt, directory in out.items():
        code, _ = cli(capsys, tiny, "--img", *map(str, images), "--exp", "the cat", "--exp", "sky", "--sp",
                      str(directory), "--format", fmt, "--save-prob", "--overlay", "png" if fmt == "npy" else "jpg")
        assert code == 0
    for img in images:
        for text, slug in (("the cat", "the-cat"), ("sky", "sky")):
            ref = reference(img, text)
            rle = json.loads((out["rle-json"] / f"{img.stem}__{slug}.json").read_text())
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
            prob = np.load(out["rle-json"] / f"{img.stem}__{slug}.prob.npy")
            assert np.array_equal(decoded, prob > THRESHOLD)
            assert_same_mask(decoded, ref)
            npy = np.load(out["npy"] / f"{img.stem}__{slug}.npy")
            assert npy.dtype == bool and np.array_equal(npy, decoded)
            # PNG overlay: exactly the mask's pixels change (bar those already within 1 of the tint colour)
            image = cv2.imread(str(img))
            overlay = cv2.imread(str(out["npy"] / f"{img.stem}__{slug}.overlay.png"))
            changed = (overlay != image).any(axis=2)
            blind = (np.abs(image.astype(int) - (255, 144, 30)) <= 1).all(axis=2)
            assert np.array_equal(changed & ~blind, npy & ~blind) and npy.any()
            # JPEG overlay (other run, same mask): each pixel is nearer the tinted or the plain image;
            # JPEG smears the 1-pixel outline, so judge pixels away from the mask's edge
            jpeg = cv2.imread(str(out["rle-json"] / f"{img.stem}__{slug}.overlay.jpg")).astype(int)
            tinted = render_overlay(image, np.ones_like(npy), outline=False).astype(int)
            decoded = np.abs(jpeg - tinted).sum(axis=2) < np.abs(jpeg - image).sum(axis=2)
            kernel = np.ones((7, 7), np.uint8)
            away = (cv2.erode(npy.astype(np.uint8), kernel) | cv2.erode((~npy).astype(np.uint8), kernel)).astype(bool)
            judged = away & (np.abs(tinted - image).max(axis=2) >= 16)
            assert judged.sum() >= 200 and (decoded == npy)[judged].mean() >= 0.98


def test_images_batched_through_the_encoder_equal_one_by_one(capsys, tiny, reference, tmp_path):
    out = tmp_path / "out"
    code, _ = cli(capsys, tiny, "--img", str(tiny[2]), "--exp", "the cat", "--exp", "sky", "--sp", str(out),
                  "--batch-size", "3", "--text-batch", "3", "--save-prob")
    assert code == 0
    rows = rows_of(out / "results.jsonl")
    assert len(rows) == 8
    for row in rows:
        ref = reference(row["image"], row["expression"])
        assert np.abs(np.load(Path(row["output"]).with_suffix(".prob.npy")) - ref.prob).max() <= 1e-4
        assert_same_mask(read_mask(Path(row["output"])), ref)


def test_shards_cover_every_item_exactly_once(capsys, tiny, tmp_path):
    images = write_images(tmp_path / "images", 7, seed=3)
    args = ["--img", str(tmp_path / "images"), "--exp", "the cat", "--exp", "sky"]
    whole = tmp_path / "whole"
    assert cli(capsys, tiny, *args, "--sp", str(whole))[0] == 0
    shards = tmp_path / "shards"
    for i in range(3):
        assert cli(capsys, tiny, *args, "--sp", str(shards), "--shard", f"{i}/3")[0] == 0
    logged = [Path(r["output"]).name for i in range(3) for r in rows_of(shards / f"results.shard-{i}-of-3.jsonl")]
    expected = sorted(p.name for p in whole.glob("*.png"))
    assert len(expected) == 2 * len(images) and sorted(logged) == expected  # once each, none missing
    assert sorted(p.name for p in shards.glob("*.png")) == expected
    for name in expected:
        assert np.array_equal(read_mask(whole / name), read_mask(shards / name))
    sizes = [len(rows_of(shards / f"results.shard-{i}-of-3.jsonl")) for i in range(3)]
    assert sizes == [6, 4, 4]  # images dealt round-robin, both expressions of an image together


@pytest.mark.slow  # a subprocess, killed
def test_skip_existing_after_a_killed_run(capsys, tiny, reference, tmp_path):
    images = write_images(tmp_path / "images", 60, seed=1)
    out = tmp_path / "out"
    args = ["--img", str(tmp_path / "images"), "--exp", "the cat", "--exp", "sky", "--sp", str(out), "--save-prob",
            "--config", str(tiny[0]), "--weights", str(tiny[1]), "--device", "cpu"]
    proc = subprocess.Popen([sys.executable, str(ROOT / "general_inference.py"), *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(list(out.glob("*.png"))) < 6 and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.iterdir() if not p.name.startswith(".")}
    masks_before = {n for n in before if n.endswith(".png")}
    assert 6 <= len(masks_before) < 120, "the run was not killed midway"

    code, err = cli(capsys, tiny, *args[:-6], "--skip-existing")
    assert code == 0 and err == []
    names = {f"{img.stem}__{slug}" for img in images for slug in ("the-cat", "sky")}
    assert {p.name for p in out.glob("*.png")} == {n + ".png" for n in names}
    assert {p.name for p in out.glob("*.prob.npy")} == {n + ".prob.npy" for n in names}
    for mask in masks_before:  # finished items were not redone: same files, untouched
        for name in (mask, mask.removesuffix(".png") + ".prob.npy"):
            p = out / name
            assert (p.stat().st_ino, p.stat().st_mtime_ns) == before[name]
    rows = rows_of(out / "results.jsonl")
    assert sorted(Path(r["output"]).stem for r in rows) == sorted(names)  # one row per item
    assert all(r["error"] is None for r in rows)
    redone = [r for r in rows if Path(r["output"]).name not in masks_before]
    assert len(redone) == 120 - len(masks_before) and all(r["score"] is not None for r in redone)
    for row in redone[:3] + [r for r in rows if Path(r["output"]).name in masks_before][:3]:
        assert_same_mask(read_mask(Path(row["output"])), reference(row["image"], row["expression"]))
    assert not list(out.glob(".*"))  # temporary files of the killed write were cleared


def test_progress_bar_only_when_asked_off_a_terminal(capsys, tiny, tmp_path):
    args = ["--img", str(tiny[2]), "--exp", "sky"]
    assert cli(capsys, tiny, *args, "--sp", str(tmp_path / "a")) == (0, [])
    code, err = cli(capsys, tiny, *args, "--sp", str(tmp_path / "b"), "--progress")
    assert code == 0 and "4/4" in err[-1] and "100%" in err[-1]


def test_single_image_extras(capsys, tiny, reference, tmp_path):
    img = tiny[2] / "img001.png"
    sp = tmp_path / "m.json"
    code, err = cli(capsys, tiny, "--img", str(img), "--exp", "the cat", "--sp", str(sp), "--format", "rle-json",
                    "--save-prob", "--overlay", str(tmp_path / "over.png"))
    assert code == 0 and err == []
    from unilseg.io.writers import rle_decode

    ref = reference(img, "the cat")
    assert_same_mask(rle_decode(json.loads(sp.read_text())), ref)
    assert np.abs(np.load(tmp_path / "m.prob.npy") - ref.prob).max() <= 1e-4
    assert cv2.imread(str(tmp_path / "over.png")).shape == ref.mask.shape + (3,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.prob.npy", "over.png"]  # no results.jsonl
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    code, _ = cli(capsys, tiny, "--img", str(img), "--exp", "the cat", "--sp", str(sp), "--format", "rle-json",
                  "--save-prob", "--overlay", str(tmp_path / "over.png"), "--skip-existing")
    assert code == 0 and stamps == {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.iterdir()}


def test_batch_with_a_bad_checkpoint_leaves_nothing(capsys, tiny, tmp_path):
    code = main(["--img", str(tiny[2]), "--exp", "sky", "--sp", str(tmp_path / "out"), "--config", str(tiny[0]),
                 "--weights", str(tmp_path / "missing.pth"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "weights file not found" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_precision_flags(capsys, tiny, tmp_path):
    out = tmp_path / "out"
    from unilseg.inference.backends.precision import native_cpu_bf16

    code, err = cli(capsys, tiny, "--img", str(tiny[2]), "--exp", "sky", "--sp", str(out), "--precision", "bf16")
    assert code == 0 and len(list(out.glob("*.png"))) == 4
    # a CPU without bf16 instructions keeps the convolutions fp32 and says so in one line
    assert err == ([] if native_cpu_bf16() else
                   ["warning: this CPU has no bf16 instructions (AVX512-BF16 or AMX): convolutions stay fp32, and "
                    "bf16 is likely slower than fp32 here"])
    code, err = cli(capsys, tiny, "--img", str(tiny[2]), "--exp", "sky", "--sp", str(tmp_path / "o2"),
                    "--precision", "fp16")
    assert code == 2 and len(err) == 1 and "fp16 needs a GPU" in err[0]


@pytest.mark.parametrize("argv,needle", [
    (["--img", "{images}", "--exp", "sky"], "pass --sp DIR"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{file}"], "is a file"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{tmp}/masks.png"], "looks like a file name"),
    (["--manifest", "{file}", "--img", "{images}", "--sp", "{tmp}/o"], "drop --img"),
    (["--img", "{images}/*.gif", "--exp", "sky", "--sp", "{tmp}/o"], "matches no images"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{tmp}/o", "--shard", "3/3"], "I counts from 0"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{tmp}/o", "--save-prob", "p.npy"], "takes no path"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{tmp}/o", "--overlay", "o.gif"], "jpg or png"),
    (["--img", "{images}", "--sp", "{tmp}/o"], "give --exp"),
    (["--exp", "sky", "--sp", "{tmp}/o"], "give --img"),
    (["--img", "{images}", "--exp", "sky", "--sp", "{tmp}/o", "--batch-size", "0"], "at least 1"),
])
def test_batch_usage_errors(capsys, tiny, tmp_path, argv, needle):
    file = tmp_path / "file.txt"
    file.write_text("x")
    fill = {"images": str(tiny[2]), "file": str(file), "tmp": str(tmp_path)}
    code, err = cli(capsys, tiny, *(a.format(**fill) for a in argv))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["file.txt"]  # nothing written


def test_help_lists_batch_flags_without_torch():
    code = ("import sys; from unilseg.cli.segment import get_parser; h = get_parser().format_help(); "
            "print('torch' in sys.modules, all(f in h for f in ('--manifest', '--shard', '--skip-existing')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["False", "True"]


def test_fixture_images_named_from_their_stems(capsys, tiny, tmp_path):
    img = FIXTURES / "images/chelsea.png"
    code, _ = cli(capsys, tiny, "--img", str(img), "--exp", "Chelsea's left ear", "--exp", "猫", "--sp",
                  str(tmp_path))
    assert code == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names[0] == "chelsea__chelsea-s-left-ear.png" and names[1].startswith("chelsea__u")


def test_cli_choices_match_the_library():
    from unilseg.cli import args
    from unilseg.inference.backends import precision
    from unilseg.io import writers

    assert args.FORMATS == writers.FORMATS
    assert args.PRECISIONS == (*precision.PRECISIONS, "int8")  # int8: ONNX Runtime's (--runtime onnx)
