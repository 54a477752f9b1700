"""CVAT: an auto-annotation function module for cvat-sdk (`cvat-cli --function-module unilseg.integrations.cvat`).

cvat-cli loads this module, finds `create` (a factory) and calls it with the `-p NAME=TYPE:VALUE`
parameters; the function it returns has a `spec` (one CVAT label of type mask per class) and
`detect(context, image)`, which segments the image once per class and returns CVAT shapes:

    cvat-cli task auto-annotate TASK_ID --function-module unilseg.integrations.cvat \\
        -p classes=str:"car: the blue car,tree: all the trees" -p model=str:unilseg-demo -p instances=bool:true

    cvat-cli function create-native "unilseg" --function-module unilseg.integrations.cvat -p classes=str:...
    cvat-cli function run-agent FUNCTION_ID --function-module unilseg.integrations.cvat -p classes=str:...

    from unilseg.integrations.cvat import create
    function = create(classes="car: the blue car,tree: all the trees", model="unilseg-demo")

Parameters: `classes` ("name" or "name: instruction", comma-separated; the CVAT labels are the
names) or `classes_file` (one class a line, as `unilseg segment --classes-file` reads);
`model`, `weights`, `runtime`, `precision`, `device`, `threads`, `threshold`, `min_score` (as
`load_predictor` takes them); `instances` (one shape per connected component instead of one
per class), `min_area`, `max_instances` (as `Prediction.instances`).

Each shape carries its score: a class's presence score (an instance's: the mean soft
probability inside it). A class found absent (presence below `min_score`) gives no shape. The driver's context is
honoured: shapes scoring under `context.conf_threshold` are dropped, and with
`context.conv_mask_to_poly` each mask becomes one polygon per outer contour (CVAT polygons
have no holes: a hole is filled). cvat-sdk is imported on first use (`pip install 'unilseg[cvat]'`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.inference.instances import DEFAULT_MAX_INSTANCES, DEFAULT_MIN_AREA, check_instance_limits, mask_polygons
from unilseg.tasks.labelmap import ClassSpec, check_classes, read_classes_file

if TYPE_CHECKING:
    import PIL.Image

    from unilseg.inference.predictor import Prediction, Predictor


def import_cvataa() -> Any:
    """cvat_sdk.auto_annotation, or a UnilsegError saying how to install it."""
    try:
        import cvat_sdk.auto_annotation as cvataa
    except ImportError:
        raise UnilsegError("the CVAT function needs the cvat-sdk package: pip install 'unilseg[cvat]'") from None
    return cvataa


class UnilsegFunction:
    """A CVAT detection function: each class's mask (or each of its instances) -> a CVAT mask shape.

    `spec.labels[k]` is class k (id k, its name, type "mask"); the instructions are encoded
    once here, the image once per `detect`.
    """

    def __init__(self, classes: Sequence[str | tuple[str, str] | ClassSpec], predictor: Predictor,
                 instances: bool = False, min_area: int = DEFAULT_MIN_AREA,
                 max_instances: int = DEFAULT_MAX_INSTANCES) -> None:
        cvataa = import_cvataa()
        try:
            check_instance_limits(min_area, max_instances)
        except ValueError as e:
            raise UnilsegError(str(e)) from None
        self.classes = check_classes(list(classes), "classes")
        self.predictor = predictor
        self.instances, self.min_area, self.max_instances = bool(instances), min_area, max_instances
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(c.name, k, type="mask") for k, c in enumerate(self.classes)])
        self._texts = predictor.encode_texts([c.instruction for c in self.classes])

    def predict(self, image: PIL.Image.Image) -> list[Prediction]:
        """One Prediction per class, in class order (image: a PIL image, as CVAT's driver passes it)."""
        embedding = self.predictor.embed([image])[0]
        return self.predictor.predict_pairs([embedding] * len(self._texts), self._texts)

    def detect(self, context: Any, image: PIL.Image.Image) -> list[Any]:
        """The image's shapes (`cvat_sdk.models.LabeledShapeRequest`, frame 0, label_id = class index)."""
        cvataa = import_cvataa()
        from cvat_sdk.masks import encode_mask

        floor = getattr(context, "conf_threshold", None)
        to_polygons = bool(getattr(context, "conv_mask_to_poly", False))
        shapes = []
        for label_id, prediction in enumerate(self.predict(image)):
            for mask, bbox, score in self._pieces(prediction):
                if floor is not None and score < floor:
                    continue
                if to_polygons:
                    shapes += [cvataa.polygon(label_id, points, score=score) for points in mask_polygons(mask)]
                else:
                    shapes.append(cvataa.mask(label_id, encode_mask(mask, bbox), score=score))
        return shapes

    def _pieces(self, prediction: Prediction) -> list[tuple[np.ndarray, list[int], float]]:
        """(mask bool (H, W), box [x1, y1, x2, y2] with x2/y2 exclusive, score) per shape: the mask's presence score
        (instances: each one's mean probability); none for an empty mask."""
        shape = prediction.mask.shape
        if self.instances:
            found = prediction.instances(self.min_area, self.max_instances).instances
            return [(inst.mask(shape), list(inst.xyxy), float(inst.score)) for inst in found]
        if not prediction.mask.any():  # also a target found absent (present False)
            return []
        ys, xs = np.nonzero(prediction.mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        return [(prediction.mask, box, float(prediction.presence))]


def create(classes: str | Sequence[str] | None = None, classes_file: str | None = None, model: str | None = None,
           weights: str | None = None, runtime: str = "torch", precision: str = "fp32", device: str = "auto",
           threads: int | None = None, threshold: float | None = None, instances: bool = False,
           min_area: int = DEFAULT_MIN_AREA, max_instances: int = DEFAULT_MAX_INSTANCES,
           predictor: Predictor | None = None, min_score: float | None = None) -> UnilsegFunction:
    """The factory cvat-cli calls with the `-p` parameters (see the module docstring) -> a CVAT detection function.

    predictor: a ready Predictor (Python callers), instead of model/weights/runtime/precision/device/threads/threshold/
    min_score.
    """
    if (classes is None) == (classes_file is None):
        raise UnilsegError("give the classes: -p classes=str:\"car,tree: all the trees\" or -p classes_file=str:PATH "
                           "(one of the two)")
    if classes_file is not None:
        specs = read_classes_file(classes_file)
    else:
        specs = check_classes(classes.split(",") if isinstance(classes, str) else list(classes), "classes")
    if predictor is None:
        from unilseg.inference import load_predictor

        predictor = load_predictor(model=model or None, weights=weights or None, runtime=runtime, precision=precision,
                                   device=device, threads=threads or None, threshold=threshold,
                                   min_score=min_score)
    return UnilsegFunction(specs, predictor, instances=instances, min_area=min_area, max_instances=max_instances)
