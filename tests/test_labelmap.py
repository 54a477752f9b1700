"""Label maps: the merge, the PNG and legend files, class checks, the CLI, and eval --task semantic."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from tiny import write_images, write_tiny_model

from unilseg.cli.eval import main as eval_main
from unilseg.cli.segment import main
from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Predictor
from unilseg.model.build import load_model
from unilseg.tasks.labelmap import (
    ClassSpec,
    encode_label_png,
    label_map,
    make_legend,
    merge_soft_maps,
    palette,
    parse_classes,
    read_classes_file,
)

CLASSES = ["a red circle", "the blue thing", "background stuff: the big square"]

# A little under what the demo model scores on synthetic:20:3 (mIoU 0.916; sky 0.991, ground 0.979,
# house 0.928, tree 0.923, car 0.893, ball 0.855, sun 0.846; docs/label-maps.md).
SEMANTIC_FLOOR = 0.88


def read_label_png(path) -> tuple[np.ndarray, np.ndarray | None]:
    """A label PNG -> (indices (H, W) uint8 or uint16, its palette RGB (N, 3) uint8 or None)."""
    with Image.open(path) as image:
        if image.mode == "P":
            return np.asarray(image, np.uint8), np.asarray(image.getpalette() or [], np.uint8).reshape(-1, 3)
        return np.asarray(image).astype(np.uint16), None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    config, weights = write_tiny_model(root)
    write_images(root / "images", 3)
    return config, weights, root / "images"


@pytest.fixture(scope="module")
def predictor(tiny):
    return Predictor(load_model(tiny[1], tiny[0]))


def expected_labels(predictor, image, texts, threshold):
    """The label map computed directly from `predict`'s soft maps."""
    predictor.set_image(image)
    probs = np.stack([p.prob for p in predictor.predict(texts)])
    return np.where(probs.max(0) > threshold, probs.argmax(0) + 1, 0)


@pytest.mark.parametrize("threshold", [None, 0.4, 0.6])
def test_label_map_is_argmax_of_soft_maps_with_background(predictor, tiny, threshold):
    image = sorted(tiny[2].iterdir())[0]
    classes = [ClassSpec.of(c) for c in CLASSES]
    predictor.set_image(image)
    labels, legend = label_map(predictor, classes, threshold=threshold)
    t = predictor.threshold if threshold is None else threshold
    expected = expected_labels(predictor, image, [c.instruction for c in classes], t)
    assert labels.dtype == np.uint8 and labels.shape == cv2.imread(str(image)).shape[:2]
    np.testing.assert_array_equal(labels, expected)
    assert [e.index for e in legend] == [0, 1, 2, 3] and legend[0].name == "background"
    assert [e.name for e in legend[1:]] == ["a red circle", "the blue thing", "background stuff"]
    assert legend[3].instruction == "the big square"
    for e in legend:
        assert e.share == pytest.approx(float((labels == e.index).mean()), abs=1e-6)
    assert sum(e.share for e in legend) == pytest.approx(1.0, abs=1e-5)


def test_merge_rules():
    probs = np.array([[[0.9, 0.2, 0.5, 0.3]], [[0.8, 0.3, 0.5, 0.1]]], np.float32)  # (K=2, 1, 4)
    labels = merge_soft_maps(iter(probs), threshold=0.35)
    # argmax, ties to the first class, background where no class passes the threshold
    np.testing.assert_array_equal(labels, [[1, 0, 1, 0]])
    assert merge_soft_maps(probs, 0.35, num_classes=300).dtype == np.uint16


@pytest.mark.parametrize("count", [3, 255, 256, 700])
def test_label_png_and_legend_round_trip(tmp_path, count):
    rng = np.random.default_rng(count)
    labels = rng.integers(0, count + 1, size=(37, 53)).astype(np.uint8 if count <= 255 else np.uint16)
    labels[0, 0] = count
    path = tmp_path / "labels.png"
    path.write_bytes(encode_label_png(labels, count))
    back, pal = read_label_png(path)
    np.testing.assert_array_equal(back, labels)
    with Image.open(path) as im:
        assert im.mode == ("P" if count <= 255 else "I;16")
    classes = [ClassSpec(f"c{k}", f"the c{k}") for k in range(1, count + 1)]
    legend = make_legend(labels, classes)
    if count <= 255:
        assert back.dtype == np.uint8
        for e in legend:  # the palette holds each legend colour at its index
            assert tuple(pal[e.index]) == e.color
    else:
        assert pal is None and back.dtype == np.uint16
    assert len({e.color for e in legend}) == count + 1  # distinct colours
    assert tuple(palette(1)[0]) == (0, 0, 0)


@pytest.mark.parametrize("text, problem", [
    ("sky,,road", "class 2 is empty"),
    ("sky,road,", "class 3 is empty"),
    ("sky,Sky ", "given twice"),
    ("car: all cars,auto: all  cars", "same instruction"),
    ("car:", "empty instruction"),
    ("background", "reserved"),
])
def test_bad_class_lists(text, problem):
    with pytest.raises(UnilsegError, match=problem):
        parse_classes(text)


def test_classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("# my classes\nsky\n\ncar: all the cars, vans too\n")
    assert read_classes_file(path) == [ClassSpec("sky", "sky"), ClassSpec("car", "all the cars, vans too")]


def cli(capsys, tiny, *argv):
    code = main([*argv, "--config", str(tiny[0]), "--weights", str(tiny[1]), "--device", "cpu"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv, problem", [
    (["--classes", "sky,,road"], "class 2 is empty"),
    (["--classes", "sky,SKY"], "given twice"),
    (["--classes", "sky", "--exp", "the sky"], "drop --exp"),
    (["--classes", "sky", "--sp", "x.jpg"], "end the name in .png"),
    (["--classes", "sky", "--classes-file", "c.txt"], "not both"),
])
def test_cli_refuses_bad_classes_before_loading(capsys, tiny, tmp_path, monkeypatch, argv, problem):
    import unilseg.model.build

    monkeypatch.setattr(unilseg.model.build, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    image = sorted(tiny[2].iterdir())[0]
    code, err = cli(capsys, tiny, "--img", str(image), *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and problem in err[0], err
    assert not list(tmp_path.iterdir())


def test_cli_single_image(capsys, tiny, tmp_path, predictor):
    image = sorted(tiny[2].iterdir())[1]
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "out.png"
    code, err = cli(capsys, tiny, "--img", str(image), "--classes-file", str(classes), "--sp", str(out), "--overlay")
    assert code == 0 and err == []
    labels, pal = read_label_png(out)
    specs = [ClassSpec.of(c) for c in CLASSES]
    np.testing.assert_array_equal(labels, expected_labels(predictor, image, [c.instruction for c in specs],
                                                          predictor.threshold))
    legend = json.loads((tmp_path / "out.legend.json").read_text())
    assert [c["index"] for c in legend["classes"]] == [0, 1, 2, 3]
    assert [c["name"] for c in legend["classes"]] == ["background", *(c.name for c in specs)]
    for c in legend["classes"]:
        assert tuple(pal[c["index"]]) == tuple(c["color"])
        assert c["share"] == pytest.approx(float((labels == c["index"]).mean()), abs=1e-6)
    overlay = cv2.imread(str(tmp_path / "out.overlay.jpg"))
    assert overlay.shape == cv2.imread(str(image)).shape


def test_cli_folder_and_manifest(capsys, tiny, tmp_path, predictor):
    out = tmp_path / "labels"
    code, err = cli(capsys, tiny, "--img", str(tiny[2]), "--classes", ",".join(CLASSES), "--sp", str(out),
                    "--overlay", "png")
    assert code == 0 and err == []
    images = sorted(tiny[2].iterdir())
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in images] and all(r["error"] is None for r in rows)
    specs = [ClassSpec.of(c) for c in CLASSES]
    for image, row in zip(images, rows):
        assert row["output"] == str(out / f"{image.stem}__labels.png")
        labels, _ = read_label_png(row["output"])
        np.testing.assert_array_equal(labels, expected_labels(predictor, image, [c.instruction for c in specs],
                                                              predictor.threshold))
        assert (out / f"{image.stem}__labels.legend.json").is_file()
        assert (out / f"{image.stem}__labels.overlay.png").is_file()
        assert row["background"] == pytest.approx(float((labels == 0).mean()), abs=1e-6)
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("image,expression\n" + "".join(f"{p},ignored\n" for p in images[:2]))
    code, err = cli(capsys, tiny, "--manifest", str(manifest), "--classes", "x: a red circle", "--sp",
                    str(tmp_path / "m"))
    assert code == 0 and err == []
    assert sorted(p.name for p in (tmp_path / "m").glob("*__labels.png")) == [f"{p.stem}__labels.png"
                                                                             for p in images[:2]]


@pytest.mark.slow  # a quality floor
def test_semantic_eval_floor_on_demo_model(tmp_path, capsys):
    out = tmp_path / "semantic.json"
    code = eval_main(["--model", "unilseg-demo", "--task", "semantic", "--data", "synthetic:20:3", "--device", "cpu",
                      "--text-batch", "8", "--no-progress", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["images"] == 20
    assert [c["name"] for c in summary["classes"]] == ["sky", "ground", "house", "tree", "car", "ball", "sun"]
    assert summary["mIoU"] >= SEMANTIC_FLOOR
    lines = capsys.readouterr().out.splitlines()  # fractions with four decimals, as the JSON holds them
    assert lines[2].split() == ["sky", "the", "sky", f"{summary['classes'][0]['iou']:.4f}"]
    assert lines[-2].split() == ["mIoU", f"{summary['mIoU']:.4f}"]
    assert lines[-1].split() == ["pixel", "accuracy", f"{summary['pixel_accuracy']:.4f}"]
    assert len({len(line) for line in lines[1:]}) == 1
