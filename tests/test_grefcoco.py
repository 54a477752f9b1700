"""gRefCOCO in its released layout (grefs(unc).json + instances.json), on a tiny copy built here."""
import json

import cv2
import numpy as np
import pytest

from unilseg.data.grefcoco import load_grefcoco
from unilseg.data.manifest import load_image, load_mask
from unilseg.data.sources import open_samples
from unilseg.errors import UnilsegError

H, W = 24, 32
# Rectilinear polygons on the pixel grid (x0, y0, x1, y1, ...): COCO's rasteriser fills exactly the pixels
# [y0, y1) x [x0, x1) of each rectangle, so the expected masks are drawn by hand as numpy slices.
RECT = [4.0, 3.0, 20.0, 3.0, 20.0, 15.0, 4.0, 15.0]
ELL = [2.0, 16.0, 12.0, 16.0, 12.0, 19.0, 6.0, 19.0, 6.0, 23.0, 2.0, 23.0]  # an L in the lower left
SQUARE = [22.0, 2.0, 30.0, 2.0, 30.0, 10.0, 22.0, 10.0]


def drawn(*boxes: tuple[int, int, int, int]) -> np.ndarray:
    """The union of boxes (y0, y1, x0, x1), bool (H, W)."""
    m = np.zeros((H, W), bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


RECT_MASK = drawn((3, 15, 4, 20))
ELL_MASK = drawn((16, 19, 2, 12), (19, 23, 2, 6))
SQUARE_MASK = drawn((2, 10, 22, 30))


def _ref(ref_id, ann_ids, image_id, split, sents, no_target=False):
    return {"ref_id": ref_id, "ann_id": ann_ids, "image_id": image_id, "split": split, "no_target": no_target,
            "category_id": [1] * len(ann_ids), "file_name": f"COCO_train2014_{image_id:012d}.jpg",
            "sentences": [{"sent": s, "raw": s, "tokens": s.split(), "sent_id": 10 * ref_id + k}
                          for k, s in enumerate(sents)]}


@pytest.fixture()
def refer_root(tmp_path):
    root = tmp_path / "refer_data"
    images = root / "images/mscoco/images/train2014"
    images.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for image_id in (1, 2):
        cv2.imwrite(str(images / f"COCO_train2014_{image_id:012d}.png"), rng.integers(0, 255, (H, W, 3), np.uint8))
    from pycocotools import mask as mask_utils

    crowd_rle = mask_utils.encode(np.asfortranarray(SQUARE_MASK.astype(np.uint8)))  # a crowd region, as RLE
    crowd_rle["counts"] = crowd_rle["counts"].decode("ascii")
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.png", "height": H, "width": W} for i in (1, 2)],
        "annotations": [
            {"id": 101, "image_id": 1, "segmentation": [RECT], "iscrowd": 0, "category_id": 1},
            {"id": 102, "image_id": 1, "segmentation": [ELL], "iscrowd": 0, "category_id": 1},
            {"id": 103, "image_id": 1, "segmentation": crowd_rle, "iscrowd": 1, "category_id": 1},
            {"id": 201, "image_id": 2, "segmentation": [SQUARE], "iscrowd": 0, "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    refs = [
        _ref(1, [101], 1, "val", ["the box", "left box"]),  # one target
        _ref(2, [101, 102, 103], 1, "val", ["the box and the ell"]),  # several (the crowd one left out)
        _ref(3, [-1], 2, "val", ["the dog"], no_target=True),  # none
        _ref(4, [103], 1, "val", ["the crowd"]),  # only a crowd annotation: it is the target
        _ref(5, [201], 2, "testA", ["the square"]),
        _ref(6, [102], 1, "train", ["an ell"]),
    ]
    (root / "grefcoco").mkdir()
    (root / "grefcoco/instances.json").write_text(json.dumps(instances))
    (root / "grefcoco/grefs(unc).json").write_text(json.dumps(refs))
    return root


def test_val_split_masks_are_polygon_unions(refer_root):
    samples = load_grefcoco(refer_root, "val")
    assert [s.id for s in samples] == ["1", "2", "3", "4"]  # split filtered, file order kept
    one, many, none, crowd = samples
    assert one.expressions == ["the box", "left box"] and one.granularity == "object"
    assert many.granularity == "object" and many.meta["targets"] == 3  # three named, two in the union
    assert none.granularity == "no-target" and none.meta["ann_id"] == [-1] and none.expressions == ["the dog"]
    assert np.array_equal(load_mask(one, (H, W)), RECT_MASK)
    assert np.array_equal(load_mask(many, (H, W)), RECT_MASK | ELL_MASK)  # the crowd square left out
    assert np.array_equal(load_mask(crowd, (H, W)), SQUARE_MASK)  # nothing but the crowd: it is the target
    assert np.array_equal(load_mask(load_grefcoco(refer_root, "train")[0], (H, W)), ELL_MASK)
    assert not load_mask(none, (H, W)).any() and load_mask(none).shape == (H, W)
    assert load_image(none).shape == (H, W, 3)


def test_other_splits_and_the_data_spec(refer_root):
    assert [s.id for s in load_grefcoco(refer_root, "testA")] == ["5"]
    assert [s.id for s in open_samples("grefcoco:train", refer_root)] == ["6"]
    with pytest.raises(UnilsegError, match="grefcoco/grefs\\(unc\\).json has no refs in split 'testB'"):
        load_grefcoco(refer_root, "testB")


@pytest.mark.parametrize("spec, root, message", [
    ("grefcoco:dev", True, "grefcoco has no split 'dev'; use one of train, val, testA, testB"),
    ("grefcoco:", True, "bad data spec 'grefcoco:'"),
    ("grefcoco:unc:val", True, "bad data spec 'grefcoco:unc:val'"),
    ("grefcoco:val", False, "--data grefcoco:val needs --refer-root"),
])
def test_bad_specs_are_one_line(refer_root, spec, root, message):
    with pytest.raises(UnilsegError) as e:
        open_samples(spec, refer_root if root else None)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_missing_files_fail_fast(refer_root, tmp_path):
    with pytest.raises(UnilsegError, match="grefs\\(unc\\).json not found; --refer-root must be the refer data"):
        load_grefcoco(tmp_path / "nowhere")
    (refer_root / "grefcoco/instances.json").unlink()
    with pytest.raises(UnilsegError, match="instances.json not found"):
        load_grefcoco(refer_root)


def test_missing_image_and_bad_refs(refer_root, tmp_path):
    with pytest.raises(UnilsegError, match="ref_id 1: image .* not found; pass COCO's train2014 folder"):
        load_grefcoco(refer_root, images=tmp_path / "empty")
    refs_path = refer_root / "grefcoco/grefs(unc).json"
    refs = json.loads(refs_path.read_text())
    refs[0]["ann_id"] = [999]
    refs_path.write_text(json.dumps(refs))
    with pytest.raises(UnilsegError, match="ref_id 1: 999 not found"):
        load_grefcoco(refer_root)
    refs[0]["ann_id"], refs[0]["no_target"] = [101], True
    refs_path.write_text(json.dumps(refs))
    with pytest.raises(UnilsegError, match="no_target is set but ann_id names annotations"):
        load_grefcoco(refer_root)
    refs_path.write_text("{not json")
    with pytest.raises(UnilsegError, match="is not JSON"):
        load_grefcoco(refer_root)


def test_the_pickled_refs_are_read_too(refer_root):
    import pickle

    refs_json = refer_root / "grefcoco/grefs(unc).json"
    with open(refer_root / "grefcoco/grefs(unc).p", "wb") as f:
        pickle.dump(json.loads(refs_json.read_text()), f, protocol=2)
    refs_json.unlink()
    samples = load_grefcoco(refer_root, "val")
    assert [s.id for s in samples] == ["1", "2", "3", "4"] and samples[0].origin.startswith(str(refer_root))
    assert np.array_equal(load_mask(samples[1], (H, W)), RECT_MASK | ELL_MASK)
