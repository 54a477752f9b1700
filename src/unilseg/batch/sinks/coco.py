"""COCO sinks: one instances file for the whole job (`--coco`), and the results list `COCOeval` reads
(`--coco-results`).

The instances file holds `images` (id, file_name, width, height), `categories` (id, name:
the instruction or class) and `annotations` (id, image_id, category_id, segmentation as
COCO compressed RLE or, with polygons, outer contours, area in pixels, bbox [x, y, w, h],
iscrowd 0, score). Ids follow the plan (see `unilseg.batch.sinks`). An image whose items
all failed is left out of `images`; an image with no mask above the threshold is kept,
with no annotations.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Any

from unilseg.batch.sinks import Records
from unilseg.inference.instances import mask_polygons
from unilseg.io.paths import json_text
from unilseg.io.writers import rle_decode


def file_name(image: str, root: Path | None) -> str:
    """An image's `file_name`: its path relative to `root` (when given), with forward slashes."""
    path = Path(image)
    if root is not None:
        path = Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root)))
    return PurePath(path).as_posix()


def write_json_array(f: IO[bytes], entries: Iterator[dict[str, Any]]) -> None:
    """Stream `entries` into `f` as one JSON array (each entry encoded as it comes, none held)."""
    f.write(b"[")
    for n, entry in enumerate(entries):
        f.write((", " if n else "").encode() + json_text(entry).encode())
    f.write(b"]")


def _annotations(records: Records, use_polygons: bool, results: bool) -> Iterator[dict[str, Any]]:
    """Every record's annotations, numbered 1, 2, ... in plan order."""
    images, categories = records.catalog.images, records.catalog.categories
    n = 0
    for rec in records:
        for ann in rec["annotations"]:
            segmentation = mask_polygons(rle_decode(ann["rle"])) if use_polygons else ann["rle"]
            if use_polygons and not segmentation:
                continue
            n += 1
            out = {"image_id": images[rec["image"]], "category_id": categories[ann["category"]],
                   "segmentation": segmentation, "area": ann["area"], "bbox": ann["bbox"], "score": ann["score"]}
            yield out if results else {"id": n, **out, "iscrowd": 0}


@dataclass
class CocoSink:
    """`--coco PATH.json`: a COCO instances file (images, categories, annotations)."""

    path: Path
    image_root: Path | None = None  # file_name relative to it
    use_polygons: bool = False
    description: str = "unilseg pre-annotations"
    what: str = "the COCO file"

    def write(self, f: IO[bytes], records: Records) -> None:
        catalog = records.catalog
        head = {"info": {"description": self.description}, "licenses": [],
                "categories": [{"id": i, "name": name, "supercategory": ""} for name, i in catalog.categories.items()]}
        f.write(json_text(head)[:-1].encode() + b', "images": ')
        images = ({"id": catalog.images[first["image"]], "file_name": file_name(first["image"], self.image_root),
                   "width": first["width"], "height": first["height"]} for first, _ in records.by_image())
        write_json_array(f, images)
        f.write(b', "annotations": ')
        write_json_array(f, _annotations(records, self.use_polygons, results=False))
        f.write(b"}\n")


@dataclass
class CocoResultsSink:
    """`--coco-results PATH.json`: the detections list `COCO.loadRes` / `COCOeval` read (ids as in --coco)."""

    path: Path
    use_polygons: bool = False
    what: str = "the COCO results file"

    def write(self, f: IO[bytes], records: Records) -> None:
        write_json_array(f, _annotations(records, self.use_polygons, results=True))
        f.write(b"\n")

