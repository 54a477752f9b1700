"""What `/v1/segment` takes and answers, checked and built apart from the web framework.

A request is a JSON body (the image base64-encoded) or a multipart form (the image as a
file part); both become the same `SegmentRequest` through `check_fields`, so every rule
is written once. Every refusal is a `RequestError`: an HTTP status and one sentence.

The answer, per instruction: score, presence (its presence score), present (false: that fell
below the request's `min_score`, else the server's, so the mask is empty), area, bbox
[x, y, w, h] and the mask in each asked `outputs` form: `rle` (COCO compressed RLE,
`pycocotools.mask.decode` reads it), `png` (base64 of the PNG file `unilseg segment`
writes for it) and `polygons` (outer contours, [x0, y0, x1, y1, ...]); with `instances`,
its 8-connected components too. With
`classes`, the instructions are a label map's classes (`name` or `name: instruction`):
one answer per class, and the label map as a PNG (the file `unilseg segment --classes`
writes).
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.inference.instances import (
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MIN_AREA,
    mask_bbox,
    mask_polygons,
    split_instances,
)
from unilseg.inference.transforms import decode_image
from unilseg.io.paths import text_problem
from unilseg.io.writers import encode_mask, rle_encode
from unilseg.model.spec import check_min_score as spec_min_score
from unilseg.model.spec import check_threshold as spec_threshold
from unilseg.serve.engine import JobResult
from unilseg.tasks.labelmap import ClassSpec, check_classes, encode_label_png, make_legend, merge_predictions

OUTPUTS = ("rle", "png", "polygons")
FIELDS = ("image", "instructions", "threshold", "min_score", "outputs", "instances", "min_area", "max_instances",
          "classes")


class RequestError(Exception):
    """A request the server refuses: `status` (4xx) and one sentence for `{"error": ...}`."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server; every limit is a `unilseg serve` flag."""

    max_body_bytes: int = 20 * 1024 * 1024  # --max-body-mb 20
    max_pixels: int = 40_000_000  # --max-pixels: decoded width x height
    max_instructions: int = 64  # --max-instructions
    max_instruction_chars: int = 1000  # --max-instruction-chars
    timeout_s: float = 60.0  # --timeout: from arrival to answer
    queue_size: int = 32  # --queue-size: requests waiting for the model
    batch_images: int = 4  # --batch-images: distinct images per Swin batch
    batch_wait_ms: float = 10.0  # --batch-wait-ms: how long a batch waits for more requests
    cache_bytes: int = 512 * 1024 * 1024  # --cache-mb 512: image embeddings kept


@dataclass
class SegmentRequest:
    """A checked `/v1/segment` request."""

    data: bytes  # the image file
    instructions: list[str]  # the texts to run (with `classes`: the classes' instructions)
    threshold: float | None = None  # None: the model's
    min_score: float | None = None  # None: the server's (--min-score, else the model's); 0: off
    outputs: tuple[str, ...] = ("rle",)
    instances: bool = False
    min_area: int = DEFAULT_MIN_AREA
    max_instances: int = DEFAULT_MAX_INSTANCES
    classes: list[ClassSpec] | None = None  # label-map mode
    image: np.ndarray | None = field(default=None, repr=False)  # decoded BGR (H, W, 3), once checked


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):  # a form field
        return value.lower() in ("true", "1")
    raise RequestError(400, f"{name} must be true or false, not {_shown(value)}")


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, str):  # a form field
        try:
            value = int(value)
        except ValueError:
            raise RequestError(400, f"{name} must be a whole number, not {_shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(400, f"{name} must be a whole number, not {_shown(value)}")
    if value < low:
        raise RequestError(400, f"{name} must be at least {low}, not {value}")
    return value


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _checked_number(value: Any, field: str, wanted: str, rule: Callable[[Any], float]) -> float | None:
    """None (the server's setting), or `value` checked by the CLI's `rule`; a refusal is one 400 sentence in the
    request's terms (`field`, not the CLI's flag: the server runs inside the CLI's wording)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):  # float() would take True
        raise RequestError(400, f"{field} must be a number {wanted}, not {_shown(value)}")
    try:
        return rule(value)  # NaN and the infinities fail its range check
    except UnilsegError as e:
        message = e.worded({})
        raise RequestError(400, message if len(message) <= 120 else message[:117] + "...") from None


def check_threshold(value: Any) -> float | None:
    """None (the model's threshold), or the CLI's rule (`model.spec.check_threshold`: finite, 0 < t < 1)."""
    return _checked_number(value, "threshold", "between 0 and 1", spec_threshold)


def check_min_score(value: Any) -> float | None:
    """None (the server's min score), or the CLI's rule (`model.spec.check_min_score`: a number from 0, off, to 1)."""
    return _checked_number(value, "min_score", "from 0 to 1", spec_min_score)


def check_instructions(value: Any, limits: Limits, what: str = "instructions") -> list[str]:
    """A list of 1..max_instructions non-empty strings of at most max_instruction_chars each."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RequestError(400, f"{what} must be a non-empty list of strings")
    if len(value) > limits.max_instructions:
        raise RequestError(400, f"{len(value)} {what}: at most {limits.max_instructions} per request")
    for text in value:
        if not isinstance(text, str):
            raise RequestError(400, f"{what} must be strings, not {type(text).__name__}")
        if len(text) > limits.max_instruction_chars:
            raise RequestError(400, f"an instruction of {len(text)} characters: at most "
                                    f"{limits.max_instruction_chars}")
        if not text.strip():
            raise RequestError(400, f"empty {what[:-1]}; give a text naming what to segment")
        problem = text_problem(text)
        if problem:
            raise RequestError(400, f"an instruction {problem}")
    return value


def check_outputs(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError(400, f"outputs must be a list of {', '.join(OUTPUTS)}")
    unknown = [v for v in value if v not in OUTPUTS]
    if unknown:
        raise RequestError(400, f"unknown output {_shown(unknown[0])}; use {', '.join(OUTPUTS)}")
    return tuple(dict.fromkeys(value))


def check_fields(fields: Mapping[str, Any], data: bytes, limits: Limits) -> SegmentRequest:
    """A request's fields (parsed JSON, or a form's strings) and image bytes -> SegmentRequest."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise RequestError(400, f"unknown field {_shown(unknown[0])}; the fields are {', '.join(FIELDS)}")
    if "instructions" not in fields:
        raise RequestError(400, "instructions missing; give a list of texts naming what to segment")
    texts = check_instructions(fields["instructions"], limits)
    classes = None
    if _bool("classes", fields.get("classes", False)):
        try:
            classes = check_classes(texts, "classes")
        except Exception as e:  # UnilsegError: duplicate or malformed class names
            raise RequestError(400, str(e)) from None
        texts = [c.instruction for c in classes]
    instances = _bool("instances", fields.get("instances", False))
    if classes is not None and instances:
        raise RequestError(400, "instances applies to masks, not to classes (a label map)")
    return SegmentRequest(
        data=data, instructions=texts, threshold=check_threshold(fields.get("threshold")),
        min_score=check_min_score(fields.get("min_score")),
        outputs=check_outputs(fields.get("outputs", ["rle"])), instances=instances,
        min_area=_int("min_area", fields.get("min_area", DEFAULT_MIN_AREA), 1),
        max_instances=_int("max_instances", fields.get("max_instances", DEFAULT_MAX_INSTANCES), 1), classes=classes)


def parse_json(body: bytes, limits: Limits) -> SegmentRequest:
    """A JSON body {"image": base64, "instructions": [...], ...} -> SegmentRequest (image not yet decoded)."""
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the body is not valid JSON") from None
    if not isinstance(fields, dict):
        raise RequestError(400, "the JSON body must be an object with image and instructions")
    image = fields.get("image")
    if not isinstance(image, str):
        raise RequestError(400, "image missing; give the image file base64-encoded as a string")
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "image is not valid base64") from None
    return check_fields({k: v for k, v in fields.items() if k != "image"}, data, limits)


def check_image(data: bytes, limits: Limits) -> np.ndarray:
    """Image file bytes -> BGR uint8 (H, W, 3), decoded as `unilseg segment` decodes a file.

    The header's size is checked against `max_pixels` before any pixel is decoded (a
    decompression bomb is refused cheaply), and the file is read once by Pillow in full, which
    refuses truncated data that OpenCV would decode with grey rows.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "the image is empty; send an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > limits.max_pixels:
                    raise RequestError(413, f"the image is {w}x{h} pixels: at most {limits.max_pixels} pixels "
                                            "(width x height)")
                im.load()
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestError(413, f"the image claims more than {limits.max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise RequestError(400, "the file is not an image the server reads; send a PNG, JPEG, WebP, BMP or "
                                "TIFF file") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # truncated or corrupt data
        raise RequestError(400, f"the image is truncated or corrupt ({str(e).splitlines()[0][:80]}); "
                                "send the whole file") from None
    try:
        return decode_image(np.frombuffer(data, np.uint8), "the uploaded image")
    except Exception as e:  # noqa: BLE001 (UnilsegError: OpenCV cannot decode what Pillow could)
        raise RequestError(400, str(e)) from None


def mask_fields(mask: np.ndarray, outputs: Sequence[str]) -> dict[str, Any]:
    """A bool (H, W) mask in each of `outputs`' forms."""
    out: dict[str, Any] = {}
    if "rle" in outputs:
        out["rle"] = rle_encode(mask)
    if "png" in outputs:
        out["png"] = base64.b64encode(encode_mask(mask, "png")).decode("ascii")
    if "polygons" in outputs:
        out["polygons"] = mask_polygons(mask)
    return out


def segment_answer(request: SegmentRequest, result: JobResult, threshold: float,
                   min_score: float | None = None) -> dict[str, Any]:
    """The JSON of a finished request (thresholded at `threshold`; predictions with a presence score below
    `min_score`, None: off, came back empty), without the `model` and `timings` the handler adds."""
    preds = result.predictions
    height, width = result.image_size
    answer: dict[str, Any] = {"image": {"height": int(height), "width": int(width)}, "threshold": threshold,
                              "min_score": min_score}
    if request.classes is not None:
        labels, confidence, found = merge_predictions(preds, threshold, len(request.classes))
        legend = make_legend(labels, request.classes, found)
        rows = []
        for k, (spec, entry) in enumerate(zip(request.classes, legend[1:]), start=1):
            mask = labels == k
            score = float(confidence[mask].mean()) if mask.any() else 0.0
            rows.append({"name": spec.name, "instruction": spec.instruction, "index": k, "color": list(entry.color),
                         "score": round(score, 6), "presence": entry.presence, "present": entry.present,
                         "area": int(mask.sum()), "bbox": mask_bbox(mask), **mask_fields(mask, request.outputs)})
        answer["classes"] = rows
        answer["label_map"] = base64.b64encode(encode_label_png(labels, len(request.classes))).decode("ascii")
        return answer
    rows = []
    for p in preds:
        row = {"instruction": p.text, "score": round(p.score, 6), "presence": round(p.presence, 6),
               "present": bool(p.present), "area": int(p.mask.sum()), "bbox": mask_bbox(p.mask),
               **mask_fields(p.mask, request.outputs)}
        if request.instances:
            found = split_instances(p.mask, p.prob, request.min_area, request.max_instances)
            row["instances"] = [{"bbox": list(i.bbox), "area": i.area, "score": round(i.score, 6),
                                 **mask_fields(i.mask(p.mask.shape), request.outputs)} for i in found.instances]
            row["instances_cut"] = found.dropped_over_cap
        rows.append(row)
    answer["results"] = rows
    return answer
