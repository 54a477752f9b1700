"""Label maps over many images: one Swin pass and one label map per image, a results row each.

    from unilseg.batch.labels import plan_label_items, run_label_maps
    from unilseg.tasks.labelmap import parse_classes

    items = plan_label_items(["a.jpg", "b.jpg"], "labels/", overlay="jpg")
    report = run_label_maps(predictor, items, parse_classes("sky,road,car"), results="labels/results.jsonl")

Each image writes `{stem}__labels.png` (class indices), `{stem}__labels.legend.json` and,
if asked, `{stem}__labels.overlay.jpg`; the label PNG last, so its presence means done.
The classes' instructions go through the text encoder once for the whole run.
"""
from __future__ import annotations

import time
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.batch.plan import UniqueNames, claim_images, safe_stem
from unilseg.batch.results import results_row
from unilseg.batch.run import BatchReport, ItemResult, PredictorSource, describe, embed_chunk, run_job
from unilseg.batch.sinks import AnnotateOptions, make_record
from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Predictor
from unilseg.io.paths import path_problem, shown, user_path
from unilseg.io.writers import OutputRegistry, confine, encode_image, intact, sidecar, write_atomic
from unilseg.tasks.labelmap import (
    LEGEND_SUFFIX,
    ClassSpec,
    encode_label_png,
    label_map_confidence,
    legend_json,
    render_label_overlay,
)

LABELS_SUFFIX = "__labels"


@dataclass
class LabelItem:
    """One image and where its label map, legend and overlay go."""

    index: int  # position in the whole plan (before sharding)
    image: Hashable
    output: Path  # the label PNG
    legend_path: Path
    overlay_path: Path | None = None
    error: str | None = None  # a planning failure (none from plan_label_items: a bad target stops the job)

    def outputs(self) -> list[Path]:
        """Every file the item writes; the label PNG last (written last: its presence means done)."""
        return [p for p in (self.legend_path, self.overlay_path, self.output) if p is not None]

    def is_done(self) -> bool:
        """Whether every file exists and is whole (an empty or cut file is redone)."""
        return all(intact(p) for p in self.outputs())


def label_item(index: int, image: Hashable, output: Path, overlay_path: Path | None = None) -> LabelItem:
    """An item whose legend sits beside `output`: labels.png -> labels.legend.json."""
    return LabelItem(index, image, output, sidecar(output, LEGEND_SUFFIX), overlay_path)


def plan_label_items(images: Sequence[str], out_dir: str | Path, overlay: str | None = None,
                     registry: OutputRegistry | None = None) -> list[LabelItem]:
    """Image paths -> items named `{safe image stem}__labels.png` under out_dir (a repeated name
    gets `__2`, `__3`, ..., compared case-insensitively); overlay: None, 'jpg' or 'png'.
    An output that leads out of out_dir (through a symlink) raises a UnilsegError, and so
    does one that would write over an input or another output (registry: the job's claims
    so far; every image is claimed as an input, every file the items write as an output)."""
    out_dir = Path(out_dir)
    registry = registry if registry is not None else OutputRegistry()
    claim_images(registry, ((image, None) for image in images))
    names = UniqueNames(out_dir)
    items = []
    for i, image in enumerate(images):

        def files(name: str, i: int = i, image: str = image) -> LabelItem:
            output = out_dir / (name + ".png")
            return label_item(i, image, output, sidecar(output, f".overlay.{overlay}") if overlay else None)

        name = names.claim(safe_stem(Path(image).stem) + LABELS_SUFFIX, i,
                           lambda n: all(registry.is_free(p) for p in files(n).outputs()))
        item = files(name)
        items.append(item)
        for path in item.outputs():  # only a symlink planted in out_dir leads out: the whole job stops
            confine(path, out_dir)
        kinds = {item.legend_path: "the legend", item.overlay_path: "the overlay", item.output: "the label map"}
        registry.write_all((path, f"{kinds[path]} {path} of the image {image}") for path in item.outputs())
    return items


def read_manifest_images(path: str | Path) -> list[str]:
    """A CSV (header with `image`) or JSONL manifest -> its distinct image paths, in order (relative
    paths taken from the manifest's folder); other columns are ignored."""
    from unilseg.data.manifest import iter_records

    path = Path(path)
    images: dict[str, None] = {}
    problems = []
    for number, rec, problem in iter_records(path, "--manifest"):
        image = rec.get("image") if isinstance(rec, dict) else None
        if problem is None and isinstance(image, str):
            problem = path_problem(image) and f"`image` {path_problem(image)}"
        if problem or not isinstance(image, str) or not image.strip():
            problems.append(f"line {number}: {problem or 'no `image`'}")
            continue
        p = user_path(image.strip())
        images.setdefault(str(p if p.is_absolute() else path.parent / p))
    if problems:
        raise UnilsegError(f"--manifest {shown(path)}: " + "; ".join(problems[:5]))
    if not images:
        raise UnilsegError(f"--manifest {shown(path)} names no images")
    return list(images)


@dataclass
class LabelStep:
    """Label maps: each image's item -> (class indices, legend, confidence), written as legend, overlay, label PNG.

    The classes' instructions go through the text encoder once (`prepare`), for the whole run.
    """

    classes: Sequence[ClassSpec]
    annotate: AnnotateOptions | None = None  # make each result's record for the job's sinks (COCO, ...)
    unit: str = "image"
    _encoded: Any = field(default=None, repr=False)
    _threshold: float = field(default=0.0, repr=False)
    _min_score: float | None = field(default=None, repr=False)
    _for: Any = field(default=None, repr=False)  # the predictor `_encoded` belongs to

    def prepare(self, predictor: Predictor) -> None:
        if self._encoded is not None and self._for is predictor:  # a Ray actor's step: prepared once
            return
        self._encoded = predictor.encode_texts([c.instruction for c in self.classes])
        self._threshold, self._min_score, self._for = predictor.threshold, predictor.min_score, predictor

    def predict(self, predictor: Predictor, chunk: list[tuple[np.ndarray, list[LabelItem]]]) -> Iterator[ItemResult]:
        """One Swin batch for the chunk's images, then a label map per image."""
        embeddings, share = yield from embed_chunk(predictor, chunk)
        if embeddings is None:
            return
        for (bgr, todo), embedding in zip(chunk, embeddings):
            for item in todo:
                t1 = time.perf_counter()
                try:
                    result = label_map_confidence(predictor, self.classes, embedding, encoded=self._encoded)
                except Exception as e:
                    yield ItemResult(item, None, describe(e), share + time.perf_counter() - t1, bgr)
                    continue
                yield ItemResult(item, result, None, share + time.perf_counter() - t1, bgr)

    def write(self, r: ItemResult) -> None:
        item, (labels, legend, _) = r.item, r.prediction
        meta = {"image": str(item.image), "size": list(labels.shape), "threshold": self._threshold,
                "min_score": self._min_score, "png": "palette" if labels.dtype == np.uint8 else "uint16"}
        write_atomic(item.legend_path, legend_json(legend, **meta))
        if item.overlay_path is not None:
            overlay = render_label_overlay(r.image, labels, legend)
            write_atomic(item.overlay_path, encode_image(item.overlay_path, overlay))
        write_atomic(item.output, encode_label_png(labels, len(self.classes)))

    def record(self, r: ItemResult) -> dict[str, Any]:
        """One category per class with pixels: its pixels, scored by the class's presence score (instances: each
        by its mean confidence)."""
        labels, legend, confidence = r.prediction
        masks = ((c.name, labels == k, confidence, legend[k].presence) for k, c in enumerate(self.classes, start=1))
        return make_record(r.item, labels.shape, masks, self.annotate or AnnotateOptions())

    def row(self, r: ItemResult) -> dict[str, Any]:
        if r.prediction is None:
            return _row(r.item, seconds=r.seconds, error=r.error)
        legend = r.prediction[1]
        shares = {e.name: e.share for e in legend if e.index > 0 and e.share > 0}
        absent = [e.name for e in legend if e.index > 0 and e.present is False]
        return _row(r.item, shares, legend[0].share, r.seconds, absent=absent)

    def skipped_row(self, item: LabelItem) -> dict[str, Any]:
        return _row(item)

    def failure(self, item: LabelItem, error: str) -> str:
        return f"failed: {item.image}: {error}"


def run_label_maps(
    predictor: PredictorSource,
    items: Sequence[LabelItem],
    classes: Sequence[ClassSpec],
    annotate: AnnotateOptions | None = None,
    **job: Any,
) -> BatchReport:
    """Make and write each item's label map -> what was done, skipped and failed (the run goes on).

    `run_job` with a LabelStep (annotate: how its results become records for the job's
    sinks); its keywords (results, skip_existing, batch_size, load, progress, report,
    annotations) pass through.
    """
    return run_job(predictor, items, LabelStep(classes, annotate), **job)


def _row(item: LabelItem, classes: dict[str, float] | None = None, background: float | None = None,
         seconds: float = 0.0, error: str | None = None, absent: list[str] | None = None) -> dict[str, Any]:
    """The results row of one image: its files, the share of each class with pixels and of the background, and
    the classes found absent (presence below the min score; none: an empty list)."""
    return results_row(image=str(item.image), output=str(item.output), legend=str(item.legend_path),
                       overlay=None if item.overlay_path is None else str(item.overlay_path), classes=classes,
                       absent=absent, background=background, seconds=seconds, error=error)
