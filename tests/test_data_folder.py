"""A folder of images and masks with a CSV of texts."""
import cv2
import numpy as np
import pytest

from unilseg.data.folder import load_folder
from unilseg.data.manifest import load_image, load_mask
from unilseg.data.sources import open_samples
from unilseg.errors import UnilsegError


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "pets"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(2)
    masks = {}
    for name in ("cat", "dog"):
        cv2.imwrite(str(root / f"images/{name}.jpg"), rng.integers(0, 255, (10, 14, 3), np.uint8))
        m = rng.random((10, 14)) > 0.5
        masks[name] = m
        cv2.imwrite(str(root / f"masks/{name}.png"), m.astype(np.uint8))  # 0/1 masks work too
    ear = np.zeros((10, 14), bool)
    ear[1:3, 2:5] = True
    cv2.imwrite(str(root / "masks/cat_ear.png"), ear.astype(np.uint8) * 255)
    masks["cat_ear"] = ear
    (root / "texts.csv").write_text(
        "image,expression,mask,granularity\n"
        "images/cat.jpg,the cat,,object\n"
        'images/cat.jpg,"the cat\'s ear, the left one",masks/cat_ear.png,part\n'
        "images/dog.jpg,a dog,masks/dog.png,\n"
    )
    return root, masks


def test_rows_become_samples(folder):
    root, masks = folder
    samples = load_folder(root)
    assert [s.expressions for s in samples] == [["the cat"], ["the cat's ear, the left one"], ["a dog"]]
    assert [s.granularity for s in samples] == ["object", "part", "object"]
    assert {s.source for s in samples} == {"pets"}
    assert samples[1].origin.endswith("texts.csv:3")
    for s, name in zip(samples, ("cat", "cat_ear", "dog")):
        assert np.array_equal(load_mask(s, load_image(s).shape), masks[name])
    assert [s.id for s in open_samples(str(root))] == [s.id for s in samples]
    assert len(open_samples(str(root / "texts.csv"))) == 3


def test_bad_rows_are_reported_by_line(folder):
    root, _ = folder
    csv = root / "texts.csv"
    csv.write_text(csv.read_text() + "images/bird.jpg,a bird,,\nimages/dog.jpg,,,\n")
    with pytest.raises(UnilsegError) as info:
        load_folder(root)
    text = str(info.value)
    assert "line 5: file not found: " in text and "images/bird.jpg" in text and "masks/bird.png" in text
    assert "line 6: empty expression" in text and "line 4" not in text


def test_bad_header(folder):
    root, _ = folder
    (root / "texts.csv").write_text("img,expression\nimages/cat.jpg,x\n")
    with pytest.raises(UnilsegError, match=r"header must have column\(s\) image"):
        load_folder(root)
    (root / "texts.csv").write_text("image,expression,colour\nimages/cat.jpg,x,red\n")
    with pytest.raises(UnilsegError, match=r"unknown column\(s\) colour"):
        load_folder(root)
    with pytest.raises(UnilsegError, match="a folder data set needs a texts.csv"):
        load_folder(root / "images")
