"""supervision: the Predictions of one image as a `supervision.Detections` (masks, boxes, scores, classes).

    detections = to_detections(predictions)                  # one detection per non-empty mask
    detections = to_detections(predictions, instances=True)  # one per connected component

Fields: `mask` bool (N, H, W); `xyxy` float32 (N, 4) in supervision's own convention, the one
`sv.mask_to_xyxy` uses by default (x2, y2 the last covered pixel: inclusive); `confidence`
float32 (N,), the prediction's presence score (instances: each one's mean soft probability);
`class_id` int (N,), the index of the prediction's text in `class_names` (default: the texts
in the order they first appear, empty masks included, so ids do not shift with what was
found); `data["class_name"]` str (N,), the text. An empty mask gives no detection, so neither does
a prediction found absent (present False: its presence below the min score).
supervision is imported on the first call (`pip install 'unilseg[supervision]'`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.inference.instances import DEFAULT_MAX_INSTANCES, DEFAULT_MIN_AREA

if TYPE_CHECKING:
    import supervision as sv

    from unilseg.inference.predictor import Prediction


def import_supervision() -> Any:
    """The supervision module, or a UnilsegError saying how to install it."""
    try:
        import supervision
    except ImportError:
        raise UnilsegError("to_detections needs the supervision package: pip install 'unilseg[supervision]'") from None
    return supervision


def class_ids(texts: Sequence[str], class_names: Sequence[str] | None) -> tuple[list[int], list[str]]:
    """Each text's index in `class_names` (default: the texts in first-seen order) -> (ids, the names used)."""
    if class_names is None:
        names = list(dict.fromkeys(texts))
    else:
        names = [str(n) for n in class_names]
        if len(set(names)) != len(names):
            raise UnilsegError("class_names holds a name twice; give each class once")
    index = {name: i for i, name in enumerate(names)}
    missing = [t for t in dict.fromkeys(texts) if t not in index]
    if missing:
        raise UnilsegError(f"prediction text {missing[0]!r} is not in class_names; add it, or leave class_names out")
    return [index[t] for t in texts], names


def to_detections(
    predictions: Prediction | Sequence[Prediction], instances: bool = False, min_area: int = DEFAULT_MIN_AREA,
    max_instances: int = DEFAULT_MAX_INSTANCES, class_names: Sequence[str] | None = None,
) -> sv.Detections:
    """A Prediction or the Predictions of ONE image -> `sv.Detections` (see the module docstring).

    instances: one detection per 8-connected component of each mask (largest first, those
    under `min_area` pixels dropped, at most `max_instances` per mask; see
    `Prediction.instances`) instead of one per mask.
    """
    sv = import_supervision()
    preds = [predictions] if hasattr(predictions, "mask") else list(predictions)
    if not preds:
        return sv.Detections.empty()
    shape = preds[0].mask.shape
    for p in preds[1:]:
        if p.mask.shape != shape:
            raise UnilsegError(f"to_detections takes the predictions of one image; got masks of {shape[1]}x{shape[0]} "
                               f"and {p.mask.shape[1]}x{p.mask.shape[0]} pixels")
    ids, _ = class_ids([p.text for p in preds], class_names)
    masks: list[np.ndarray] = []
    scores: list[float] = []
    classes: list[int] = []
    texts: list[str] = []
    for p, class_id in zip(preds, ids):
        if instances:
            parts = [(inst.mask(shape), inst.score) for inst in p.instances(min_area, max_instances).instances]
        else:
            parts = [(np.asarray(p.mask, bool), p.presence)] if p.mask.any() else []
        for mask, score in parts:
            masks.append(mask)
            scores.append(score)
            classes.append(class_id)
            texts.append(p.text)
    stack = np.stack(masks) if masks else np.zeros((0, *shape), bool)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(stack).astype(np.float32).reshape(-1, 4),
        mask=stack,
        confidence=np.asarray(scores, np.float32),
        class_id=np.asarray(classes, int),
        data={"class_name": np.asarray(texts, dtype=str)},
    )
