"""Label maps: several classes at once, each pixel the class of highest probability.

`label_map(predictor, classes, embedding)` is the task step: one soft map per class (one
Swin pass for all of them), merged; the rest is array code that merges, colours and encodes.

- `ClassSpec`, `parse_classes` / `read_classes_file` / `check_classes`: "sky,road,car" or
  a file of `name` / `name: instruction` lines -> classes, refused with one message if
  empty, duplicated, reserved or too many.
- `merge_soft_maps`: K soft maps (H, W) -> class indices (H, W): argmax + 1, or 0
  (background) where no class scores above the threshold; `merge_predictions` the same from
  K Predictions, a class found absent (presence below the min score) painting no pixel.
- `palette`, `make_legend`, `legend_json`: colours and the legend (index 0 = background).
- `encode_label_png`: up to 255 classes a palette PNG (uint8, Pillow mode
  'P', the colours embedded); more a 16-bit greyscale PNG of the indices (a PNG palette
  holds 256 entries), the colours then only in the legend.
- `render_label_overlay`: the image tinted in class colours with a legend drawn on it.
"""
from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.io.paths import json_text, read_lines

if TYPE_CHECKING:
    from unilseg.inference.predictor import EncodedTexts, ImageEmbedding, Prediction, Predictor

BACKGROUND = "background"  # the name of index 0: pixels no class claims
MAX_PALETTE_CLASSES = 255  # a PNG palette holds 256 entries, index 0 being the background
MAX_CLASSES = 65535  # a 16-bit PNG holds indices up to 65535
LEGEND_SUFFIX = ".legend.json"
OVERLAY_ALPHA = 0.55


@dataclass(frozen=True)
class ClassSpec:
    """A class of the label map: its name, and the instruction that segments it (default: the name)."""

    name: str
    instruction: str

    @classmethod
    def of(cls, value: str | tuple[str, str] | ClassSpec) -> ClassSpec:
        """'car', 'car: all the cars', ('car', 'all the cars') or a ClassSpec -> ClassSpec (not checked)."""
        if isinstance(value, ClassSpec):
            return value
        if isinstance(value, tuple):
            name, instruction = value
            return cls(name.strip(), instruction.strip())
        name, sep, instruction = str(value).partition(":")
        return cls(name.strip(), instruction.strip() if sep else name.strip())


@dataclass(frozen=True)
class LegendEntry:
    """One row of a label map's legend; index 0 is the background (instruction None)."""

    index: int
    name: str
    instruction: str | None
    color: tuple[int, int, int]  # RGB
    share: float  # fraction of the image's pixels with this index
    presence: float | None = None  # the class's presence score in [0, 1] (None: the background, or not known)
    present: bool | None = None  # False: its presence fell below the min score, so it paints no pixel


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip()).casefold()


def check_classes(classes: Sequence[str | tuple[str, str] | ClassSpec], what: str = "--classes") -> list[ClassSpec]:
    """Classes -> ClassSpecs, or a UnilsegError naming the first problem.

    Refused: no classes; an empty name or instruction; a name or instruction given twice
    (compared without case and extra spaces); the reserved name 'background' (index 0);
    more than MAX_CLASSES classes.
    """
    specs = [ClassSpec.of(c) for c in classes]
    if not specs:
        raise UnilsegError(f"{what}: no classes given; name at least one, e.g. \"sky,road,car\"")
    if len(specs) > MAX_CLASSES:
        raise UnilsegError(f"{what}: {len(specs)} classes, but a label map holds at most {MAX_CLASSES} "
                           "(16-bit PNG indices, 0 being the background)")
    names: dict[str, int] = {}
    instructions: dict[str, int] = {}
    for k, spec in enumerate(specs, start=1):
        if not spec.name:
            raise UnilsegError(f"{what}: class {k} is empty; give every class a name (\"sky,road,car\")")
        if not spec.instruction:
            raise UnilsegError(f"{what}: class {k} ({spec.name}) has an empty instruction after ':'")
        if _key(spec.name) == BACKGROUND:
            raise UnilsegError(f"{what}: '{spec.name}' is reserved for index 0 (pixels no class claims); "
                               "name the class otherwise")
        if _key(spec.name) in names:
            raise UnilsegError(f"{what}: class '{spec.name}' is given twice (classes {names[_key(spec.name)]} "
                               f"and {k}); every class needs its own name")
        if _key(spec.instruction) in instructions:
            raise UnilsegError(f"{what}: classes {instructions[_key(spec.instruction)]} and {k} have the same "
                               f"instruction '{spec.instruction}'; the second could never win a pixel")
        names[_key(spec.name)] = k
        instructions[_key(spec.instruction)] = k
    return specs


def parse_classes(text: str) -> list[ClassSpec]:
    """'sky,road,car: all the cars' -> checked ClassSpecs (an instruction holding a comma needs a file)."""
    return check_classes(text.split(","), "--classes")


def read_classes_file(path: str | Path) -> list[ClassSpec]:
    """One class per line, `name` or `name: instruction`; blank lines and `#` comments skipped."""
    lines = [line for line in read_lines(path, "--classes-file") if not line.startswith("#")]
    return check_classes(lines, f"--classes-file {path}")


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 up to 255 classes, else uint16."""
    return np.uint8 if num_classes <= MAX_PALETTE_CLASSES else np.uint16


def merge_soft_maps(probs: Iterable[np.ndarray], threshold: float, num_classes: int | None = None) -> np.ndarray:
    """K soft maps -> class indices (H, W); see `merge_with_confidence`."""
    return merge_with_confidence(probs, threshold, num_classes)[0]


def merge_with_confidence(probs: Iterable[np.ndarray], threshold: float,
                          num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """K soft maps, each float (H, W) -> class indices (H, W) uint8 (K <= 255) or uint16.

    Pixel value = 1 + argmax_k probs[k] (the first class wins a tie), or 0 where no class
    is above `threshold` (a class's own mask is prob > threshold). `probs` may be a
    generator: the maps are folded in one at a time, so K full-size maps are never held.
    `num_classes` (default: counted) picks the dtype before the first map arrives.
    Also returns the confidence: float32 (H, W), each pixel's winning probability.
    """
    best: np.ndarray | None = None
    labels: np.ndarray | None = None
    count = 0
    dtype = label_dtype(num_classes) if num_classes is not None else np.uint16
    for k, prob in enumerate(probs, start=1):
        prob = np.asarray(prob, np.float32)
        if best is None:
            best, labels = prob.copy(), np.full(prob.shape, k, dtype)
        else:
            if prob.shape != best.shape:
                raise ValueError(f"soft map {k} is {prob.shape}, the first was {best.shape}")
            wins = prob > best
            np.copyto(best, prob, where=wins)
            labels[wins] = k
        count = k
    if best is None or labels is None:
        raise ValueError("no soft maps to merge")
    labels[best <= threshold] = 0
    return (labels if num_classes is not None else labels.astype(label_dtype(count))), best


def merge_predictions(preds: Iterable[Prediction], threshold: float, num_classes: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, list[tuple[float, bool]]]:
    """Each class's Prediction (in class order) -> (class indices, confidence; see `merge_with_confidence`)
    and each class's (presence, present). A class found absent (present False) joins with a map of zeros:
    it paints no pixel, which goes to the next class above the threshold, or to the background. The
    predictions may be a generator: one soft map is held at a time."""
    found: list[tuple[float, bool]] = []

    def maps() -> Iterator[np.ndarray]:
        for p in preds:
            found.append((p.presence, p.present))
            yield p.prob if p.present else np.zeros_like(p.prob)

    labels, confidence = merge_with_confidence(maps(), threshold, num_classes)
    return labels, confidence, found


def palette(count: int) -> np.ndarray:
    """RGB uint8 (count, 3): index 0 black, then the PASCAL VOC colour sequence (index bits spread
    over the three channels, high bits first), distinct for every index below 2**24."""
    index = np.arange(count, dtype=np.int64)
    colors = np.zeros((count, 3), np.int64)
    for shift in range(8):  # bit 3j + c of the index -> bit 7 - j of channel c
        for c in range(3):
            colors[:, c] |= ((index >> (3 * shift + c)) & 1) << (7 - shift)
    return colors.astype(np.uint8)


def make_legend(labels: np.ndarray, classes: Sequence[ClassSpec],
                found: Sequence[tuple[float, bool]] | None = None) -> list[LegendEntry]:
    """The legend of a label map: background (0) and every class, with its colour and pixel share, and
    (with `found`: (presence, present) per class, as `merge_predictions` gives it) its presence."""
    colors = palette(len(classes) + 1)
    counts = np.bincount(labels.ravel(), minlength=len(classes) + 1).astype(np.float64)
    shares = counts / max(labels.size, 1)
    entries = [LegendEntry(0, BACKGROUND, None, _rgb(colors[0]), round(float(shares[0]), 6))]
    for k, c in enumerate(classes, start=1):
        presence, present = found[k - 1] if found is not None else (None, None)
        entries.append(LegendEntry(k, c.name, c.instruction, _rgb(colors[k]), round(float(shares[k]), 6),
                                   None if presence is None else round(float(presence), 6),
                                   None if present is None else bool(present)))
    return entries


def _rgb(color: np.ndarray) -> tuple[int, int, int]:
    return int(color[0]), int(color[1]), int(color[2])


def legend_json(legend: Sequence[LegendEntry], **meta: Any) -> bytes:
    """{**meta, "classes": [{index, name, instruction, color: [r, g, b], share, presence, present}, ...]} as
    UTF-8 JSON."""
    rows = [{**asdict(e), "color": list(e.color)} for e in legend]
    return (json_text({**meta, "classes": rows}, indent=1) + "\n").encode()  # a non-UTF-8 image name escaped


def encode_label_png(labels: np.ndarray, num_classes: int) -> bytes:
    """Class indices (H, W) -> PNG bytes: a palette PNG for <= 255 classes, else 16-bit greyscale."""
    from PIL import Image

    buf = io.BytesIO()
    if num_classes <= MAX_PALETTE_CLASSES:
        if labels.max(initial=0) > num_classes:
            raise ValueError(f"label {int(labels.max())} beyond {num_classes} classes")
        image = Image.frombytes("P", labels.shape[::-1], np.ascontiguousarray(labels, np.uint8).tobytes())
        image.putpalette(palette(num_classes + 1).ravel().tolist())
    else:
        image = Image.fromarray(labels.astype(np.uint16))  # mode I;16: a 16-bit greyscale PNG
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def render_label_overlay(
    image_bgr: np.ndarray, labels: np.ndarray, legend: Sequence[LegendEntry], alpha: float = OVERLAY_ALPHA,
    draw_legend: bool = True,
) -> np.ndarray:
    """The image (BGR uint8 (H, W, 3)) tinted in class colours, class borders darkened, and a
    legend (colour, name, share of each present class) drawn in its top-left corner; BGR uint8."""
    colors_bgr = np.array([e.color[::-1] for e in legend], np.float32)
    out = image_bgr.astype(np.float32)
    fg = labels > 0
    out[fg] = out[fg] * (1 - alpha) + colors_bgr[labels[fg]] * alpha
    lab32 = labels.astype(np.int32)
    edge = np.zeros(labels.shape, bool)
    edge[:-1] |= lab32[:-1] != lab32[1:]
    edge[:, :-1] |= lab32[:, :-1] != lab32[:, 1:]
    out[edge] *= 0.35
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    if draw_legend:
        draw_legend_box(out, [e for e in legend if e.index > 0 and e.share > 0])
    return out


def draw_legend_box(canvas: np.ndarray, entries: Sequence[LegendEntry], origin: tuple[int, int] = (4, 4),
                    scale: float | None = None) -> None:
    """Draw a white box listing `entries` (swatch, name, share) on BGR `canvas` in place; rows
    that do not fit are summed up as '+N more'."""
    import cv2

    h, w = canvas.shape[:2]
    scale = scale or max(0.3, min(h, w) / 900)
    thick = max(1, round(scale * 1.5))
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    row, pad = th + max(4, th // 2), max(3, th // 3)
    texts = [f"{e.name} {100 * e.share:.0f}%" for e in entries]
    fits = max(0, (h - origin[1] - 2 * pad) // row)
    if len(texts) > fits and fits > 0:
        shown, texts = entries[: fits - 1], texts[: fits - 1] + [f"+{len(entries) - fits + 1} more"]
    else:
        shown = entries[:fits]
        texts = texts[:fits]
    if not texts:
        return
    width = max(cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0] for t in texts)
    x0, y0 = origin
    x1, y1 = min(w - 1, x0 + 3 * pad + th + width), min(h - 1, y0 + 2 * pad + row * len(texts))
    box = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (box * 0.2 + 255 * 0.8).astype(np.uint8)
    for i, text in enumerate(texts):
        top = y0 + pad + i * row
        if i < len(shown):
            color = tuple(int(c) for c in shown[i].color[::-1])
            cv2.rectangle(canvas, (x0 + pad, top + 1), (x0 + pad + th, top + th + 1), color, -1)
            cv2.rectangle(canvas, (x0 + pad, top + 1), (x0 + pad + th, top + th + 1), (60, 60, 60), 1)
        cv2.putText(canvas, text, (x0 + 2 * pad + th, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20),
                    thick, cv2.LINE_AA)


def label_map(
    predictor: Predictor, classes: Sequence[str | tuple[str, str] | ClassSpec],
    embedding: ImageEmbedding | None = None, threshold: float | None = None, encoded: EncodedTexts | None = None,
    min_score: float | None = None,
) -> tuple[np.ndarray, list[LegendEntry]]:
    """Several classes at once -> (class indices (H, W), legend); see `label_map_confidence`."""
    labels, legend, _ = label_map_confidence(predictor, classes, embedding, threshold, encoded, min_score)
    return labels, legend


def label_map_confidence(
    predictor: Predictor, classes: Sequence[str | tuple[str, str] | ClassSpec],
    embedding: ImageEmbedding | None = None, threshold: float | None = None, encoded: EncodedTexts | None = None,
    min_score: float | None = None,
) -> tuple[np.ndarray, list[LegendEntry], np.ndarray]:
    """Several classes at once -> (class indices (H, W) uint8, or uint16 past 255 classes; legend).

    classes: names ('sky'), 'name: instruction' strings, (name, instruction) pairs or
    `ClassSpec`s. One soft map per class against one image (default: the one
    `predictor.set_image` set; Swin is not run again), merged by `merge_soft_maps`: each
    pixel takes 1 + the index of its most probable class, or 0 (background) where none is
    above the threshold. legend: a `LegendEntry` per index (0 = background) with colour and
    pixel share, and each class's presence score; a class whose presence is below `min_score`
    (default the predictor's; 0: off) is absent (present False in the legend) and paints no pixel
    (`merge_predictions`). `encoded`: the classes' instructions already through `predictor.encode_texts`.
    confidence: float32 (H, W), each pixel's winning class probability (a class's score is its
    mean over the class's pixels).
    """
    from unilseg.inference.predictor import to_prediction
    from unilseg.model.spec import effective_min_score

    specs = check_classes(classes, "classes")
    if embedding is None:
        if predictor.embedding is None:
            raise UnilsegError("call set_image() before label_map(), or pass embedding=")
        embedding = predictor.embedding
    if encoded is None:
        encoded = predictor.encode_texts([c.instruction for c in specs])
    elif encoded.texts != [c.instruction for c in specs]:
        raise ValueError("`encoded` holds other texts than the classes' instructions")
    logits = predictor.pair_logits([embedding] * len(specs), encoded)
    threshold = predictor.threshold if threshold is None else threshold
    min_score = effective_min_score(predictor.min_score, min_score)
    preds = (to_prediction(c.instruction, lg, embedding, threshold, min_score) for c, lg in zip(specs, logits))
    labels, confidence, found = merge_predictions(preds, threshold, len(specs))
    return labels, make_legend(labels, specs, found), confidence
