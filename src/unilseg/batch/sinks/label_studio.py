"""Label Studio sink (`--label-studio`): one importable task per image, its masks as brush pre-annotations.

Each task is `{"data": {"image": URL}, "predictions": [{"model_version", "score", "result": [...]}]}`,
one `brushlabels` result per annotation (mask or instance) in Label Studio's own RLE, made
by label-studio-sdk's encoder. `data.image` is `ls_image_root` + the URL-quoted path of the
image relative to `image_root`: with the default `/data/local-files/?d=` and a local-files
storage whose document root is `image_root`, Label Studio serves the images itself. The
results' `from_name` / `to_name` match the config `label_studio_config` writes (and
`unilseg label-studio-config` prints). The same records give the same bytes.
"""
from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from unilseg.batch.sinks import SCORE_DIGITS, Records
from unilseg.batch.sinks.coco import file_name, write_json_array
from unilseg.errors import UnilsegError
from unilseg.io.writers import rle_decode

LOCAL_FILES = "/data/local-files/?d="  # Label Studio's local-files URL prefix
SDK_MISSING = "--label-studio needs label-studio-sdk: pip install 'unilseg[label-studio]'"


def _sdk_brush() -> ModuleType:
    """label-studio-sdk's brush converter (its RLE encoder and decoder), or the one-line install hint."""
    try:
        from label_studio_sdk.converter import brush
    except ImportError as e:
        raise UnilsegError(SDK_MISSING) from e
    return brush


def brush_rle(mask: np.ndarray) -> list[int]:
    """Bool (H, W) -> Label Studio brush RLE (bytes as ints) of an RGBA image, every channel 255 on the
    mask and 0 off it, as Label Studio's own brush writes it (label-studio-sdk's `mask2rle`)."""
    return [int(b) for b in _sdk_brush().mask2rle(mask.astype(np.uint8) * np.uint8(255))]


def brush_mask(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> bool (H, W): the alpha channel, decoded by label-studio-sdk's `decode_rle`."""
    return _sdk_brush().decode_rle(bytes(rle)).reshape(height, width, 4)[:, :, 3] > 0


def region_id(image: str, n: int) -> str:
    """The id of an image's n-th result: the same for the same image and position, 10 hex digits."""
    return hashlib.sha1(f"{image}\0{n}".encode("utf-8", "surrogatepass")).hexdigest()[:10]


def brush_result(mask: np.ndarray, label: str, score: float, region: str, from_name: str = "label",
                 to_name: str = "image") -> dict[str, Any]:
    """One Label Studio `brushlabels` result: bool (H, W) `mask` labelled `label`, as a task's prediction holds it
    (the batch sink and the ML backend both build theirs here)."""
    height, width = mask.shape
    return {"id": region, "from_name": from_name, "to_name": to_name, "type": "brushlabels",
            "original_width": int(width), "original_height": int(height), "image_rotation": 0,
            "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [label]}, "score": score}


@dataclass
class LabelStudioSink:
    """`--label-studio PATH.json`: a JSON list of Label Studio tasks with brush predictions."""

    path: Path
    image_root: Path | None = None  # data.image is the image's path relative to it
    ls_image_root: str = LOCAL_FILES  # prefix of data.image: a URL, or Label Studio's local-files path
    model_version: str = "unilseg"
    from_name: str = "label"  # the BrushLabels tag of the labeling config
    to_name: str = "image"  # its Image tag
    what: str = "the Label Studio tasks file"

    def __post_init__(self) -> None:  # refused when the sink is made, before any model work
        if importlib.util.find_spec("label_studio_sdk") is None:
            raise UnilsegError(SDK_MISSING)

    def image_url(self, image: str) -> str:
        return self.ls_image_root + quote(file_name(image, self.image_root), safe="/", errors="surrogateescape")

    def _results(self, recs: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        anns = ((rec, ann) for rec in recs for ann in rec["annotations"])
        for n, (rec, ann) in enumerate(anns):
            yield brush_result(rle_decode(ann["rle"]), ann["category"], ann["score"], region_id(rec["image"], n),
                               self.from_name, self.to_name)

    def _tasks(self, records: Records) -> Iterator[dict[str, Any]]:
        for first, recs in records.by_image():
            result = list(self._results(recs))
            score = round(sum(r["score"] for r in result) / len(result), SCORE_DIGITS) if result else 0.0
            yield {"data": {"image": self.image_url(first["image"])},
                   "predictions": [{"model_version": self.model_version, "score": score, "result": result}]}

    def write(self, f: IO[bytes], records: Records) -> None:
        _sdk_brush()
        write_json_array(f, self._tasks(records))
        f.write(b"\n")


def label_studio_config(classes: Sequence[str], from_name: str = "label", to_name: str = "image") -> str:
    """Label Studio's labeling config for brush pre-annotations: an Image (`$image`) and BrushLabels with one
    Label per class, each its own colour (the label maps' palette)."""
    from unilseg.tasks.labelmap import palette

    if not classes:
        raise UnilsegError("a labeling config needs at least one class")
    colours = palette(len(classes) + 1)[1:]
    labels = "".join(f'    <Label value={quoteattr(name)} background="#{r:02x}{g:02x}{b:02x}"/>\n'
                     for name, (r, g, b) in zip(classes, colours.tolist()))
    return (f"<View>\n  <Image name={quoteattr(to_name)} value=\"$image\" zoom=\"true\"/>\n"
            f"  <BrushLabels name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n{labels}"
            f"  </BrushLabels>\n</View>\n")
