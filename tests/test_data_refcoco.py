"""RefCOCO / RefCOCO+ / RefCOCOg in the refer layout, on a tiny fake copy built here."""
import json
import pickle

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from unilseg.data.manifest import load_image, load_mask
from unilseg.data.refcoco import load_refcoco, read_refs
from unilseg.data.sources import open_samples
from unilseg.errors import UnilsegError
from unilseg.io.writers import rle_decode as decode_rle

H, W = 24, 32
RECT = [4.0, 3.0, 20.0, 3.0, 20.0, 15.0, 4.0, 15.0]  # polygon x0,y0,x1,y0,... of image 1's object
TRI = [[2.0, 2.0, 10.0, 2.0, 2.0, 12.0], [20.0, 10.0, 28.0, 10.0, 28.0, 20.0]]  # two polygons, one object


def _crowd_mask() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[6:18, 10:25] = 1
    return m


def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a run of zeros (COCO's uncompressed RLE), written by hand."""
    flat = mask.flatten(order="F")
    runs, current, length = [], 0, 0
    for v in flat:
        if v == current:
            length += 1
        else:
            runs.append(length)
            current, length = v, 1
    runs.append(length)
    return runs


def _ref(ref_id, ann_id, image_id, split, sents):
    return {"ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "split": split, "category_id": 1,
            "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
            "sentences": [{"sent": s, "raw": s, "tokens": s.split(), "sent_id": 10 * ref_id + k}
                          for k, s in enumerate(sents)]}


@pytest.fixture()
def refer_root(tmp_path):
    root = tmp_path / "refer_data"
    images = root / "images/mscoco/images/train2014"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for image_id in (1, 2):
        cv2.imwrite(str(images / f"COCO_train2014_{image_id:012d}.jpg"), rng.integers(0, 255, (H, W, 3), np.uint8))
    instances = {
        "images": [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg", "height": H, "width": W} for i in (1, 2)],
        "annotations": [
            {"id": 101, "image_id": 1, "segmentation": [RECT], "iscrowd": 0, "category_id": 1},
            {"id": 102, "image_id": 1, "segmentation": TRI, "iscrowd": 0, "category_id": 1},
            {"id": 201, "image_id": 2, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [H, W], "counts": _uncompressed_rle(_crowd_mask())}},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    for name, split_by, refs in (
        ("refcoco", "unc", [_ref(1, 101, 1, "val", ["left box", "the box"]), _ref(2, 102, 1, "testA", ["tri"]),
                            _ref(3, 201, 2, "val", ["crowd"]), _ref(4, 102, 1, "train", ["t"])]),
        ("refcocog", "umd", [_ref(5, 102, 1, "test", ["two triangles"]), _ref(6, 101, 1, "val", ["a box"])]),
    ):
        (root / name).mkdir()
        (root / name / "instances.json").write_text(json.dumps(instances))
        with open(root / name / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
    return root


def test_val_split_samples_and_masks(refer_root):
    samples = load_refcoco(refer_root, "refcoco", "val")
    assert [s.id for s in samples] == ["1", "3"]
    assert samples[0].expressions == ["left box", "the box"]
    assert {s.source for s in samples} == {"refcoco"} and {s.granularity for s in samples} == {"object"}
    assert samples[0].meta["sent_ids"] == [10, 11] and samples[0].meta["split"] == "val"
    img = load_image(samples[0])
    assert img.shape == (H, W, 3)
    box = load_mask(samples[0], img.shape)
    expected = decode_rle(mask_utils.merge(mask_utils.frPyObjects([RECT], H, W)))
    assert np.array_equal(box, expected)
    assert box[4:15, 5:20].all() and not box[:2].any() and not box[:, 22:].any()  # the rectangle, nothing else
    assert np.array_equal(load_mask(samples[1], (H, W)), _crowd_mask().astype(bool))  # uncompressed crowd RLE
    json.dumps(samples[1].mask)  # RLE stored JSON-ready (str counts)


def test_multi_polygon_object_and_refcocog_umd(refer_root):
    (s,) = load_refcoco(refer_root, "refcocog", "test")  # split_by defaults to umd
    assert s.expressions == ["two triangles"] and s.source == "refcocog"
    mask = load_mask(s, (H, W))
    assert mask[3, 3] and mask[18, 27]  # inside each of the two polygons
    assert not mask[20, 5]
    assert [x.id for x in load_refcoco(refer_root, "refcoco", "testA")] == ["2"]


def test_data_spec_and_errors(refer_root, tmp_path):
    assert [s.id for s in open_samples("refcoco:val", refer_root=refer_root)] == ["1", "3"]
    assert [s.id for s in open_samples("refcocog:umd:val", refer_root=refer_root)] == ["6"]
    with pytest.raises(UnilsegError, match="needs --refer-root"):
        open_samples("refcoco:val")
    with pytest.raises(UnilsegError, match="has no split 'testC'; use one of train, val, testA, testB"):
        load_refcoco(refer_root, "refcoco", "testC")
    with pytest.raises(UnilsegError, match=r"refcoco\+/refs\(unc\).p not found"):
        load_refcoco(refer_root, "refcoco+", "val")
    with pytest.raises(UnilsegError, match="not found; pass COCO's train2014 folder as --coco-images"):
        load_refcoco(refer_root, "refcoco", "val", images=tmp_path / "elsewhere")


def test_refs_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    with open(path, "wb") as f:
        pickle.dump([{"ref_id": 1, "oops": np.float64(1.0)}], f, protocol=2)  # names a class: numpy
    with pytest.raises(UnilsegError, match="refusing to load"):
        read_refs(path)
