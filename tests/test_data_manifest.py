"""The unified JSONL manifest: good rows read back exactly, bad rows are reported by line."""
import json

import cv2
import numpy as np
import pytest

from unilseg.data.manifest import Sample, load_image, load_mask, read_manifest, write_manifest
from unilseg.errors import UnilsegError
from unilseg.io.writers import rle_encode as encode_rle


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


@pytest.fixture()
def dataset(tmp_path):
    """Two images; a PNG mask (0/255) and an RLE mask; rows written as JSONL."""
    rng = np.random.default_rng(0)
    img_a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    img_b = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)
    mask_a = np.zeros((20, 30), bool)
    mask_a[5:12, 3:20] = True
    mask_b = np.zeros((16, 12), bool)
    mask_b[2:9, 1:4] = True
    mask_b[10:15, 6:11] = True
    _write_png(tmp_path / "images/a.png", img_a)
    _write_png(tmp_path / "images/b.png", img_b)
    _write_png(tmp_path / "masks/a.png", mask_a.astype(np.uint8) * 255)
    rows = [
        {"image": "images/a.png", "mask": "masks/a.png", "expression": "the box", "granularity": "object",
         "source": "toy", "id": "a"},
        {"image": str(tmp_path / "images/b.png"), "mask": encode_rle(mask_b),
         "expression": ["two blobs", "both blobs"], "granularity": "group", "source": "toy", "note": 7},
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path, (img_a, img_b), (mask_a, mask_b)


def test_good_rows_read_back_exactly(dataset):
    path, images, masks = dataset
    samples = read_manifest(path)
    assert [s.expressions for s in samples] == [["the box"], ["two blobs", "both blobs"]]
    assert [s.granularity for s in samples] == ["object", "group"]
    assert samples[0].id == "a" and samples[1].id == "2"  # default id: the line number
    assert samples[1].meta == {"note": 7}
    assert samples[0].origin == f"{path}:1"
    for s, img, mask in zip(samples, images, masks):
        assert np.array_equal(load_image(s), img)
        assert np.array_equal(load_mask(s, img.shape), mask)


def test_defaults_and_round_trip(dataset, tmp_path):
    path, _, masks = dataset
    minimal = tmp_path / "minimal.jsonl"
    minimal.write_text(json.dumps({"image": "images/a.png", "mask": "masks/a.png", "expression": "x"}) + "\n")
    (s,) = read_manifest(minimal)
    assert (s.granularity, s.source) == ("object", "minimal")

    samples = read_manifest(path)
    out = tmp_path / "copy" / "again.jsonl"
    out.parent.mkdir()
    assert write_manifest(out, samples) == 2
    again = read_manifest(out)
    assert [a.expressions for a in again] == [s.expressions for s in samples]
    assert [a.meta for a in again] == [s.meta for s in samples]
    for a, m in zip(again, masks):
        assert np.array_equal(load_mask(a), m)


@pytest.mark.parametrize(
    "row, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps(["a", "b"]), "expected a JSON object"),
        (json.dumps({"image": "images/a.png", "mask": "masks/a.png"}), "missing key(s) expression"),
        (json.dumps({"image": "images/a.png", "mask": "masks/a.png", "expression": []}), "'expression' must be"),
        (json.dumps({"image": "images/a.png", "mask": "masks/a.png", "expression": ["ok", " "]}), "'expression'"),
        (json.dumps({"image": "images/a.png", "mask": {"size": [4], "counts": "x"}, "expression": "x"}), "'size'"),
        (json.dumps({"image": "images/a.png", "mask": {"size": [4, 4], "counts": 3}, "expression": "x"}), "'counts'"),
        (json.dumps({"image": "images/a.png", "mask": "masks/a.png", "expression": "x", "granularity": ""}),
         "'granularity' must be"),
        (json.dumps({"image": "images/nope.png", "mask": "masks/a.png", "expression": "x"}),
         "image file not found: "),
        (json.dumps({"image": "images/a.png", "mask": "masks/nope.png", "expression": "x"}), "masks/nope.png"),
    ],
)
def test_bad_row_is_reported_with_its_line(dataset, row, message):
    path, _, _ = dataset
    lines = path.read_text().splitlines()
    lines.insert(1, row)  # becomes line 2
    path.write_text("\n".join(lines))
    with pytest.raises(UnilsegError) as info:
        read_manifest(path)
    text = str(info.value)
    assert text.startswith(f"manifest {path}: line 2: ") and message in text
    assert "line 1" not in text and "line 3" not in text


def test_many_bad_rows_are_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(["{}"] * 7))
    with pytest.raises(UnilsegError, match=r"line 1: missing key.*line 5: .*\(7 bad rows in all\)"):
        read_manifest(path)


def test_unreadable_or_mismatched_mask_names_the_row(dataset, tmp_path):
    path, images, _ = dataset
    (tmp_path / "masks/a.png").write_bytes(b"not a png")
    samples = read_manifest(path)
    with pytest.raises(UnilsegError, match=rf"{path}:1: cannot read mask"):
        load_mask(samples[0])
    with pytest.raises(UnilsegError, match=rf"{path}:2: mask is 16x12 but the image is 20x30"):
        load_mask(samples[1], images[0].shape)


def test_array_samples_cannot_be_written(tmp_path):
    s = Sample(image=np.zeros((2, 2, 3), np.uint8), mask=np.zeros((2, 2), bool), expressions=["x"])
    with pytest.raises(UnilsegError, match="save arrays as PNGs"):
        write_manifest(tmp_path / "m.jsonl", [s])


def test_export_generated_scenes_as_a_manifest(tmp_path, capsys):
    from unilseg.cli.data import main
    from unilseg.data.sources import open_samples

    out = tmp_path / "held" / "manifest.jsonl"
    assert main(["synthetic:3:4:64", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 12 rows to {out}"
    samples = read_manifest(out)
    generated = open_samples("synthetic:3:4:64")
    assert len(samples) == 12 and len(list((out.parent / "images").iterdir())) == 3  # one PNG per scene
    for s, g in zip(samples, generated):
        assert s.expressions == g.expressions and s.granularity == g.granularity and s.source == "synthetic"
        assert np.array_equal(load_image(s), g.image[:, :, ::-1]) and np.array_equal(load_mask(s), g.mask)
    assert main(["synthetic:1", "--out", str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err == f"error: --out {tmp_path / 'm.json'}: a manifest is a .jsonl file\n"
