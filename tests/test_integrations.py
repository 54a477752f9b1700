"""unilseg.integrations with the real libraries: supervision's Detections and annotators, cvat-sdk's types.

The predictions are the shipped demo model's on one of its example scenes (192 x 192), where
"the blue car" finds two components and "all the trees" one. CVAT is exercised without a
server: the function is built through its `create` factory (what `cvat-cli --function-module`
calls), `detect` gets a context implementing the SDK's public `DetectionFunctionContext`
(the driver's own implementation of it is private), the masks are decoded with the SDK's
`cvat_sdk.masks.decode_mask`, and the shapes go through the driver's own label mapping and
validation (`_AnnotationMapper`, what `annotate_task` runs on every frame before uploading).
Uploading needs a CVAT server and is not tested here.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import subprocess
import sys

import cv2
import numpy as np
import PIL.Image
import pytest
from conftest import ROOT

from unilseg.errors import UnilsegError
from unilseg.inference import load_predictor
from unilseg.inference.predictor import Prediction

SCENE = ROOT / "src" / "unilseg" / "demo" / "examples" / "demo_scene_2.png"
TEXTS = ["the blue car", "all the trees"]
CLASSES = "car: the blue car,tree: all the trees"


@pytest.fixture(scope="module")
def predictor():
    return load_predictor(model="unilseg-demo", device="cpu")


@pytest.fixture(scope="module")
def predictions(predictor) -> list[Prediction]:
    predictor.set_image(str(SCENE))
    preds = predictor.predict(TEXTS)
    assert all(p.mask.any() for p in preds)
    assert len(preds[0].instances().instances) >= 2  # the scene gives a mask of several components
    return preds


# --- supervision -------------------------------------------------------------------------------------------------


def test_to_detections_keeps_masks_boxes_scores_and_classes(predictions):
    import supervision as sv

    from unilseg.integrations import to_detections

    det = to_detections(predictions)
    assert isinstance(det, sv.Detections) and len(det) == 2
    masks = np.stack([p.mask for p in predictions])
    assert det.mask.dtype == bool and np.array_equal(det.mask, masks)
    assert det.xyxy.dtype == np.float32 and np.array_equal(det.xyxy, sv.mask_to_xyxy(masks).astype(np.float32))
    for box, mask in zip(det.xyxy, masks):  # supervision's convention: x2, y2 the last covered pixel
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    assert det.confidence.tolist() == [np.float32(p.presence) for p in predictions]
    assert det.class_id.tolist() == [0, 1]
    assert det.data["class_name"].tolist() == TEXTS
    single = to_detections(predictions[1])
    assert len(single) == 1 and np.array_equal(single.mask[0], predictions[1].mask)


def test_to_detections_instances(predictions):
    import supervision as sv

    from unilseg.integrations import to_detections

    det = to_detections(predictions, instances=True)
    expected = [(k, p, inst) for k, p in enumerate(predictions) for inst in p.instances().instances]
    assert len(det) == len(expected) >= 3
    for i, (k, p, inst) in enumerate(expected):
        assert np.array_equal(det.mask[i], inst.mask(p.mask.shape))
        x, y, w, h = inst.bbox
        assert det.xyxy[i].tolist() == [x, y, x + w - 1, y + h - 1]
        assert det.confidence[i] == np.float32(inst.score)
        assert det.class_id[i] == k and det.data["class_name"][i] == p.text
    assert np.array_equal(det.xyxy, sv.mask_to_xyxy(det.mask).astype(np.float32))
    capped = to_detections(predictions, instances=True, max_instances=1, min_area=1)
    assert capped.data["class_name"].tolist() == TEXTS  # one instance per mask, the largest
    assert np.array_equal(capped.mask[0], predictions[0].instances().instances[0].mask(predictions[0].mask.shape))


def test_to_detections_round_trips_through_supervision(predictions):
    import supervision as sv

    from unilseg.integrations import to_detections

    det = to_detections(predictions, instances=True)
    merged = sv.Detections.merge([to_detections(p, instances=True, class_names=TEXTS) for p in predictions])
    assert merged == det  # masks, boxes, scores, class ids and class names survive supervision's own merge
    trees = det[det.class_id == 1]
    assert trees.data["class_name"].tolist() == ["all the trees"]
    assert np.array_equal(trees.mask[0], predictions[1].instances().instances[0].mask(predictions[1].mask.shape))
    assert np.array_equal(trees.xyxy, sv.mask_to_xyxy(trees.mask).astype(np.float32))


def test_to_detections_class_names_and_empty_masks(predictor, predictions):
    from unilseg.integrations import to_detections

    det = to_detections(predictions, class_names=["the sky", "all the trees", "the blue car"])
    assert det.class_id.tolist() == [2, 1] and det.data["class_name"].tolist() == TEXTS
    with pytest.raises(UnilsegError, match="'all the trees' is not in class_names"):
        to_detections(predictions, class_names=["the blue car"])
    empty = predictor.predict(TEXTS, threshold=2.0)  # nothing clears a threshold above every probability
    assert not any(p.mask.any() for p in empty)
    none = to_detections(empty)
    assert len(none) == 0 and none.mask.shape == (0, 192, 192) and none.data["class_name"].shape == (0,)
    assert len(to_detections(empty, instances=True)) == 0
    mixed = to_detections([empty[0], predictions[1]])  # ids follow the texts, found or not
    assert mixed.class_id.tolist() == [1] and mixed.data["class_name"].tolist() == ["all the trees"]
    assert len(to_detections([])) == 0


def test_to_detections_refuses_predictions_of_two_images(predictions):
    from unilseg.integrations import to_detections

    other = Prediction("the sky", np.ones((10, 12), bool), np.ones((10, 12), np.float32), 1.0)
    with pytest.raises(UnilsegError, match="predictions of one image"):
        to_detections([predictions[0], other])


def test_supervision_annotators_render_the_detections(predictions):
    import supervision as sv

    from unilseg.integrations import to_detections

    scene = cv2.imread(str(SCENE))
    det = to_detections(predictions, instances=True)
    union = det.mask.any(axis=0)

    masked = sv.MaskAnnotator().annotate(scene.copy(), det)
    changed = (masked != scene).any(axis=2)
    assert changed[union].mean() > 0.99  # the masks are tinted
    far = ~cv2.dilate(union.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert not changed[far].any()  # pixels away from the masks are as they were

    boxed = sv.BoxAnnotator(thickness=2).annotate(scene.copy(), det)
    changed = (boxed != scene).any(axis=2)
    near_box = np.zeros_like(union)
    for x1, y1, x2, y2 in det.xyxy.astype(int):
        assert changed[y1, x1:x2 + 1].mean() > 0.9 and changed[y1:y2 + 1, x1].mean() > 0.9  # the outline
        near_box[max(y1 - 3, 0):y2 + 4, max(x1 - 3, 0):x2 + 4] = True
        near_box[y1 + 3:y2 - 2, x1 + 3:x2 - 2] = False
    assert not changed[~near_box].any()

    labelled = sv.LabelAnnotator().annotate(scene.copy(), det)
    changed = (labelled != scene).any(axis=2)
    for x1, y1, _, _ in det.xyxy.astype(int):
        assert changed[max(y1 - 30, 0):y1 + 1, x1:x1 + 30].any()  # a label at each box's top-left corner
    assert not changed[: int(det.xyxy[:, 1].min()) - 40].any()  # nothing far above the boxes


# --- CVAT ----------------------------------------------------------------------------------------------------------


def context(conf_threshold: float | None = None, conv_mask_to_poly: bool = False):
    """A DetectionFunctionContext: the SDK's public abstract class, implemented as its driver does."""
    import cvat_sdk.auto_annotation as cvataa

    @dataclasses.dataclass(frozen=True)
    class Context(cvataa.DetectionFunctionContext):
        frame_name: str = SCENE.name
        conf_threshold: float | None = None
        conv_mask_to_poly: bool = False

    return Context(conf_threshold=conf_threshold, conv_mask_to_poly=conv_mask_to_poly)


def driver_check(function, shapes, conv_mask_to_poly: bool = False, frame: int = 7):
    """The checks and label remapping `annotate_task` applies to a function's output, against a task's labels."""
    import cvat_sdk.models as models
    from cvat_sdk.auto_annotation.driver import _AnnotationMapper

    task_labels = [models.Label(name="tree", id=41, type="any", attributes=[], sublabels=[]),
                   models.Label(name="car", id=40, type="any", attributes=[], sublabels=[])]
    mapper = _AnnotationMapper(logging.getLogger("cvat-test"), function.spec.labels, task_labels,
                               allow_unmatched_labels=False, conv_mask_to_poly=conv_mask_to_poly)
    tags, remapped = mapper.validate_and_remap(shapes, frame)
    assert tags == [] and len(remapped) == len(shapes)
    return remapped


@pytest.fixture(scope="module")
def cvat_function(predictor):
    module = importlib.import_module("unilseg.integrations.cvat")  # as cvat-cli loads --function-module
    return module.create(classes=CLASSES, predictor=predictor)


def test_cvat_spec_has_one_mask_label_per_class(cvat_function):
    import cvat_sdk.auto_annotation as cvataa

    spec = cvat_function.spec
    assert isinstance(spec, cvataa.DetectionFunctionSpec)  # its validator checked the label ids on creation
    assert [(label.id, label.name, label.type) for label in spec.labels] == [(0, "car", "mask"), (1, "tree", "mask")]


def test_cvat_detect_returns_mask_shapes_that_decode_to_our_masks(cvat_function, predictions):
    import cvat_sdk.models as models
    from cvat_sdk.masks import decode_mask

    with PIL.Image.open(SCENE) as image:
        shapes = cvat_function.detect(context(), image)
    assert len(shapes) == 2
    for label_id, (shape, prediction) in enumerate(zip(shapes, predictions)):
        assert isinstance(shape, models.LabeledShapeRequest)
        assert shape.type.value == "mask" and shape.frame == 0 and shape.label_id == label_id
        assert np.array_equal(decode_mask(shape.points, image_width=192, image_height=192), prediction.mask)
        assert shape.score == pytest.approx(prediction.presence, abs=1e-6)
    remapped = driver_check(cvat_function, shapes)
    assert [(s.label_id, s.frame, s.source) for s in remapped] == [(40, 7, "auto"), (41, 7, "auto")]


def test_cvat_instances_through_create_parameters(predictions):
    from cvat_sdk.masks import decode_mask

    module = importlib.import_module("unilseg.integrations.cvat")
    # what `-p classes=str:... -p model=str:unilseg-demo -p device=str:cpu -p instances=bool:true ...` passes
    function = module.create(classes=CLASSES, model="unilseg-demo", device="cpu", instances=True, min_area=16,
                             max_instances=10)
    with PIL.Image.open(SCENE) as image:
        shapes = function.detect(context(), image)
    expected = [(k, inst) for k, p in enumerate(predictions) for inst in p.instances(16, 10).instances]
    assert len(shapes) == len(expected) >= 3
    for shape, (k, inst) in zip(shapes, expected):
        assert shape.label_id == k and shape.score == pytest.approx(inst.score, abs=1e-6)
        assert np.array_equal(decode_mask(shape.points, image_width=192, image_height=192), inst.mask((192, 192)))
        x1, y1, x2, y2 = (int(v) for v in shape.points[-4:])  # CVAT's encoding ends with the inclusive box
        assert (x1, y1, x2 + 1, y2 + 1) == inst.xyxy
    driver_check(function, shapes)


def test_cvat_conf_threshold_drops_low_scores(cvat_function, predictions):
    low, high = sorted(p.presence for p in predictions)
    with PIL.Image.open(SCENE) as image:
        kept = cvat_function.detect(context(conf_threshold=(low + high) / 2), image)
        assert [s.score for s in kept] == [pytest.approx(high, abs=1e-6)]
        assert len(cvat_function.detect(context(conf_threshold=low), image)) == 2  # a score equal to it is kept
        assert cvat_function.detect(context(conf_threshold=min(high + 1e-3, 1.0)), image) == []


def test_cvat_polygons_when_the_driver_asks(cvat_function, predictions):
    with PIL.Image.open(SCENE) as image:
        shapes = cvat_function.detect(context(conv_mask_to_poly=True), image)
    assert {s.type.value for s in shapes} == {"polygon"}
    for k, prediction in enumerate(predictions):
        mine = [s for s in shapes if s.label_id == k]
        assert len(mine) == len(prediction.instances(min_area=1).instances)  # one polygon per component
        drawn = np.zeros((192, 192), np.uint8)
        for s in mine:
            assert len(s.points) >= 6 and len(s.points) % 2 == 0
            assert s.score == pytest.approx(prediction.presence, abs=1e-6)
            cv2.fillPoly(drawn, [np.asarray(s.points, np.int32).reshape(-1, 2)], 1)
        drawn = drawn.astype(bool)
        iou = (drawn & prediction.mask).sum() / (drawn | prediction.mask).sum()
        assert iou > 0.95, iou
    driver_check(cvat_function, shapes, conv_mask_to_poly=True)


def test_cvat_empty_masks_give_no_shapes(cvat_function):
    black = PIL.Image.new("RGB", (64, 48))  # the demo model finds neither class in a black image
    assert not any(p.mask.any() for p in cvat_function.predict(black))
    assert cvat_function.detect(context(), black) == []
    assert cvat_function.detect(context(conv_mask_to_poly=True), black) == []


def test_cvat_bad_parameters(predictor, tmp_path):
    from unilseg.integrations.cvat import create

    with pytest.raises(UnilsegError, match="give the classes"):
        create(predictor=predictor)
    with pytest.raises(UnilsegError, match="given twice"):
        create(classes="car,car", predictor=predictor)
    with pytest.raises(UnilsegError, match="min_area"):
        create(classes="car", predictor=predictor, min_area=0)
    listed = tmp_path / "classes.txt"
    listed.write_text("# the task's labels\ncar: the blue car\ntree: all the trees\n")
    function = create(classes_file=str(listed), predictor=predictor)
    assert [label.name for label in function.spec.labels] == ["car", "tree"]


# --- optional imports --------------------------------------------------------------------------------------------


def test_importing_the_package_imports_no_optional_library():
    code = ("import sys, unilseg.integrations, unilseg.integrations.supervision, unilseg.integrations.cvat; "
            "print('supervision' in sys.modules, 'cvat_sdk' in sys.modules); "
            "f = unilseg.integrations.to_detections; "
            "print(f is unilseg.integrations.supervision.to_detections, 'supervision' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.split() == ["False", "False", "True", "False"], proc.stderr


def test_a_missing_library_names_its_extra(monkeypatch, predictor, predictions):
    from unilseg.integrations import to_detections
    from unilseg.integrations.cvat import create

    monkeypatch.setitem(sys.modules, "supervision", None)  # as if it were not installed
    with pytest.raises(UnilsegError, match=r"pip install 'unilseg\[supervision\]'"):
        to_detections(predictions)
    monkeypatch.setitem(sys.modules, "cvat_sdk.auto_annotation", None)
    with pytest.raises(UnilsegError, match=r"pip install 'unilseg\[cvat\]'"):
        create(classes=CLASSES, predictor=predictor)
