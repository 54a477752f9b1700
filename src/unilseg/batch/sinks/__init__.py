"""Annotation sinks: one file for the whole job (COCO dataset, COCO results, Label Studio tasks).

The same for masks and label maps, the local loop and `unilseg ray`.

Each finished item becomes one record: its image, size and annotations (one per mask,
or one per instance with `instances=True`: category, COCO RLE, box, area, score: a mask's presence
score, an instance's mean probability; a prediction found absent gives none). The
record is appended to the job's annotation log (`annotations.jsonl` beside
results.jsonl) as the item ends, after its files. When the job ends each sink reads the
log in plan order, one record at a time, and writes its file atomically: memory does
not grow with the job, and a job killed and resumed (`--skip-existing`) writes the same
bytes as one never killed (ids follow the plan, not the order items finished in). An item
counts as done only once its record is in the log.

    record = {"key": output path, "index": plan position, "image": path, "height": H, "width": W,
              "dropped": components cut by max_instances,
              "annotations": [{"category": name, "rle": {"size": [H, W], "counts": str},
                               "bbox": [x, y, w, h], "area": px, "score": s, "instance": k | None}]}
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from unilseg.batch.results import JsonlAppender
from unilseg.inference.instances import (
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MIN_AREA,
    check_instance_limits,
    mask_bbox,
    split_instances,
)
from unilseg.io.paths import MANIFEST_LIMIT, check_regular, json_text
from unilseg.io.writers import atomic_writer, rle_encode

SCORE_DIGITS = 6


@dataclass(frozen=True)
class AnnotateOptions:
    """How a finished item becomes annotations: one per mask, or one per instance."""

    instances: bool = False  # split each mask into 8-connected components
    min_area: int = DEFAULT_MIN_AREA  # instances: smaller components are dropped
    max_instances: int = DEFAULT_MAX_INSTANCES  # instances: at most this many per mask, largest first

    def __post_init__(self) -> None:
        check_instance_limits(self.min_area, self.max_instances)


def annotation(category: str, mask: np.ndarray, score: float, instance: int | None = None) -> dict[str, Any]:
    """One annotation of a bool (H, W) mask: its COCO RLE, box [x, y, w, h], pixel area and score."""
    return {"category": category, "rle": rle_encode(mask), "bbox": mask_bbox(mask), "area": int(mask.sum()),
            "score": round(float(score), SCORE_DIGITS), "instance": instance}


Mask = tuple[str, np.ndarray, np.ndarray | None] | tuple[str, np.ndarray, np.ndarray | None, float | None]


def make_record(item: Any, shape: tuple[int, int], masks: Iterable[Mask], options: AnnotateOptions) -> dict[str, Any]:
    """An item's record from its (category, mask bool (H, W), soft map float (H, W) or None[, score]) tuples.

    An empty mask gives no annotation (so does a prediction found absent: its mask is empty).
    Without instances, a mask's score is the score given (the predictions' presence score),
    else its mean probability (1.0 without a soft map); with them, each component's mean
    probability.
    """
    annotations: list[dict[str, Any]] = []
    dropped = 0
    for category, mask, prob, *given in masks:
        if not mask.any():
            continue
        if not options.instances:
            score = given[0] if given and given[0] is not None else (
                float(prob[mask].mean()) if prob is not None else 1.0)
            annotations.append(annotation(category, mask, score))
            continue
        found = split_instances(mask, prob, options.min_area, options.max_instances)
        dropped += found.dropped_over_cap
        annotations += [annotation(category, inst.mask(mask.shape), inst.score, k)
                        for k, inst in enumerate(found.instances)]
    return {"key": str(item.output), "index": item.index, "image": str(item.image), "height": int(shape[0]),
            "width": int(shape[1]), "dropped": dropped, "annotations": annotations}


def failed_record(item: Any, error: str) -> dict[str, Any]:
    """What the log keeps for an item that failed: it has no annotations (an earlier run's are void)."""
    return {"key": str(item.output), "index": item.index, "image": str(item.image), "error": error}


@dataclass
class Catalog:
    """The ids a job's files share: images (1, 2, ... in plan order of first appearance) and categories
    (1, 2, ... in the order given: the plan's instructions, or the label map's classes)."""

    images: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, items: Sequence[Any], categories: Iterable[str]) -> Catalog:
        images: dict[str, int] = {}
        for item in items:
            images.setdefault(str(item.image), len(images) + 1)
        names: dict[str, int] = {}
        for name in categories:
            if name.strip():  # an empty instruction never becomes a category
                names.setdefault(name, len(names) + 1)
        return cls(images, names)


def mask_categories(items: Sequence[Any]) -> list[str]:
    """A mask job's categories: its items' instructions, first-seen in plan order (failed plans left out)."""
    return list(dict.fromkeys(item.expression for item in items if item.error is None))


class Records:
    """The log's latest record of each planned item, read back one at a time in plan order."""

    def __init__(self, path: Path, offsets: dict[str, int], items: Sequence[Any], catalog: Catalog) -> None:
        self.path, self.catalog = path, catalog
        self._order = [(str(item.output), item.index, str(item.image)) for item in items]
        self._offsets = offsets

    def _read(self, f: IO[bytes], key: str, index: int, image: str) -> dict[str, Any] | None:
        """The latest record of a planned item, if it has annotations (not a failure) and is that item's."""
        at = self._offsets.get(key)
        if at is None:
            return None
        f.seek(at)
        rec = json.loads(f.readline())
        ok = "error" not in rec and rec.get("index") == index and rec.get("image") == image
        return rec if ok else None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Each planned item's record with annotations (failed and missing items are left out)."""
        with open(self.path, "rb") as f:
            for planned in self._order:
                rec = self._read(f, *planned)
                if rec is not None:
                    yield rec

    def by_image(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """(the image's first record, every record of it) per image, in image-id order."""
        per_image: dict[str, list[tuple[str, int, str]]] = {}
        for planned in self._order:
            per_image.setdefault(planned[2], []).append(planned)
        with open(self.path, "rb") as f:
            for planned_items in per_image.values():
                recs = [rec for rec in (self._read(f, *p) for p in planned_items) if rec is not None]
                if recs:
                    yield recs[0], recs


class Sink(Protocol):
    """One job-wide file: where it goes, what messages call it, and how it is written from the records."""

    path: Path
    what: str  # e.g. "the COCO file --coco coco.json"

    def write(self, f: IO[bytes], records: Records) -> None: ...


class AnnotationLog:
    """The job's annotation log and its sinks (`annotations.jsonl`; see the module docstring).

    keep_existing: start from the records already there (a resumed run), else afresh. A
    damaged line (a killed run's torn tail, a foreign line) is ignored: its item is redone.
    temporary: the log lives in a folder of its own, removed once the files are written (a job
    with no output folder to keep it in).
    """

    def __init__(self, path: str | Path, sinks: Sequence[Sink], catalog: Catalog, keep_existing: bool = False,
                 temporary: bool = False) -> None:
        self.path, self.sinks, self.catalog, self.temporary = Path(path), list(sinks), catalog, temporary
        self._offsets: dict[str, int] = {}  # key -> offset of its latest record
        self._ok: set[str] = set()
        if keep_existing and os.path.lexists(self.path):
            check_regular(self.path, "annotation log")
            self._scan()
        elif os.path.lexists(self.path):
            self.path.unlink()
        self._file = JsonlAppender(self.path)
        self._size = self.path.stat().st_size

    def _scan(self) -> None:
        with open(self.path, "rb") as f:
            at = 0
            for line in f:
                if len(line) > MANIFEST_LIMIT:
                    break
                try:
                    rec = json.loads(line)
                except ValueError:
                    rec = None
                if isinstance(rec, dict) and isinstance(rec.get("key"), str) and line.endswith(b"\n"):
                    self._note(rec, at)
                at += len(line)

    def _note(self, rec: dict[str, Any], at: int) -> None:
        key = rec["key"]
        self._offsets[key] = at
        ok = "error" not in rec and isinstance(rec.get("annotations"), list)
        (self._ok.add if ok else self._ok.discard)(key)

    def has(self, item: Any) -> bool:
        """Whether the log holds the item's annotations (a resumed run may skip it)."""
        return str(item.output) in self._ok

    def add(self, record: dict[str, Any]) -> None:
        """Append an item's record (make_record / failed_record); on disk when this returns."""
        line = (json_text(record) + "\n").encode()
        self._file.append(record)
        self._note(record, self._size)
        self._size += len(line)

    def close(self) -> None:
        self._file.close()

    def finish(self, items: Sequence[Any]) -> None:
        """Close the log, then write every sink's file atomically from the planned items' records."""
        self.close()
        records = Records(self.path, self._offsets, items, self.catalog)
        try:
            for sink in self.sinks:
                with atomic_writer(sink.path) as f:
                    sink.write(f, records)
        finally:
            if self.temporary:
                self.path.unlink(missing_ok=True)
                self.path.parent.rmdir()
