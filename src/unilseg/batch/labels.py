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

import sys
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.batch.plan import UniqueNames, claim_images, safe_stem
from unilseg.batch.results import ResultsLog, results_row
from unilseg.batch.run import BatchReport, Loader, describe
from unilseg.errors import UnilsegError
from unilseg.inference.predictor import Predictor
from unilseg.inference.transforms import read_image
from unilseg.io.paths import path_problem, shown, user_path
from unilseg.io.writers import OutputRegistry, confine, encode_image, intact, sidecar, write_atomic
from unilseg.tasks.labelmap import (
    LEGEND_SUFFIX,
    ClassSpec,
    encode_label_png,
    label_map,
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


def run_label_maps(
    predictor: Predictor | Callable[[], Predictor],
    items: Sequence[LabelItem],
    classes: Sequence[ClassSpec],
    *,
    results: str | Path | None = None,
    skip_existing: bool = False,
    batch_size: int | None = None,
    load: Loader = read_image,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
) -> BatchReport:
    """Make and write each item's label map -> what was done, skipped and failed (the run goes on).

    predictor: a Predictor, or a function making one (called only if some item has work
    left). batch_size: images per Swin batch (default 1 on CPU, 4 on a GPU).
    """
    say = report or (lambda line: print(line, file=sys.stderr))
    done = [skip_existing and item.is_done() for item in items]
    todo = [item for item, d in zip(items, done) if not d]
    out = BatchReport(skipped=sum(done), results=Path(results) if results is not None else None)
    log = ResultsLog(results, keep_existing=skip_existing) if results is not None else None
    if log is not None:
        for item in (item for item, d in zip(items, done) if d and not log.has_success(item.output)):
            log.note_skipped(_row(item))
    if todo:
        if not isinstance(predictor, Predictor):
            predictor = predictor()
        if batch_size is None:
            batch_size = 1 if predictor.device.type == "cpu" else 4
        from tqdm import tqdm

        encoded = predictor.encode_texts([c.instruction for c in classes])
        with tqdm(total=len(todo), unit="image", file=sys.stderr, disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(todo), batch_size):
                for item, row in _run_chunk(predictor, todo[start : start + batch_size], classes, encoded, load):
                    if row["error"] is not None:
                        out.failed.append((item, row["error"]))  # type: ignore[arg-type]
                        (tqdm.write if progress else say)(shown(f"failed: {item.image}: {row['error']}"))
                    else:
                        out.done += 1
                    if log is not None:
                        log.append(row)
                    bar.update(1)
    if log is not None:
        log.finish(items)  # type: ignore[arg-type]
    return out


def _run_chunk(
    predictor: Predictor, chunk: Sequence[LabelItem], classes: Sequence[ClassSpec], encoded: Any, load: Loader
):
    """Load, encode (one Swin batch), merge and write a chunk's items -> (item, results row) each."""
    t0 = time.perf_counter()
    loaded: list[tuple[LabelItem, np.ndarray]] = []
    for item in chunk:
        try:
            loaded.append((item, load(item.image)))
        except UnilsegError as e:
            yield item, _row(item, error=str(e))
    if not loaded:
        return
    try:
        embeddings = predictor.embed([bgr for _, bgr in loaded])
    except Exception as e:  # e.g. out of memory: these items fail, the run goes on
        for item, _ in loaded:
            yield item, _row(item, error=describe(e))
        return
    share = (time.perf_counter() - t0) / len(loaded)
    for (item, bgr), embedding in zip(loaded, embeddings):
        t1 = time.perf_counter()
        try:
            labels, legend = label_map(predictor, classes, embedding, encoded=encoded)
            meta = {"image": str(item.image), "size": list(labels.shape), "threshold": predictor.threshold,
                    "png": "palette" if labels.dtype == np.uint8 else "uint16"}
            write_atomic(item.legend_path, legend_json(legend, **meta))
            if item.overlay_path is not None:
                write_atomic(item.overlay_path, encode_image(item.overlay_path,
                                                             render_label_overlay(bgr, labels, legend)))
            write_atomic(item.output, encode_label_png(labels, len(classes)))
        except Exception as e:
            yield item, _row(item, seconds=share + time.perf_counter() - t1, error=describe(e))
            continue
        present = {e.name: e.share for e in legend if e.index > 0 and e.share > 0}
        yield item, _row(item, present, legend[0].share, share + time.perf_counter() - t1)


def _row(item: LabelItem, classes: dict[str, float] | None = None, background: float | None = None,
         seconds: float = 0.0, error: str | None = None) -> dict[str, Any]:
    """The results row of one image: its files, the share of each class present and of the background."""
    return results_row(image=str(item.image), output=str(item.output), legend=str(item.legend_path),
                       overlay=None if item.overlay_path is None else str(item.overlay_path), classes=classes,
                       background=background, seconds=seconds, error=error)
