"""Instance evaluation on generated scenes: COCO mask AP, AP50, AP75 and AR, by granularity.

Generated scenes know their instances (`unilseg.data.synthetic.target_instances`: "all
houses" is each house, "the wheels of the car" each wheel). The evaluation is a segment
job like any other: each scene's image is written as a PNG, its instructions planned with
`plan_items`, and the job run through the one job loop (`run_job` with a `MaskStep` that
splits masks into instances) into a COCO results file (`CocoResultsSink`). The ground
truth is written as a COCO instances file with the job's own ids (`Catalog.of` the same
items), and `pycocotools.cocoeval.COCOeval(truth, results, "segm")` scores the two files:
once over every instruction, then once per granularity (its instructions as
`params.catIds`).

Definitions (COCO's): each instruction is a category, so a detection can only match the
ground truth of its own (image, instruction). AP = precision averaged over recall
0:0.01:1, IoU thresholds 0.50:0.05:0.95 and the categories; AP50 and AP75 at one IoU
threshold; AR = recall with at most 100 detections per (image, instruction), averaged
over the IoU thresholds and categories. All object sizes (area range "all"). A
detection's score is the mean soft probability inside it.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from unilseg.batch.plan import Item, OutputOptions, plan_items
from unilseg.batch.run import MaskStep, run_job
from unilseg.batch.sinks import AnnotateOptions, AnnotationLog, Catalog, mask_categories
from unilseg.batch.sinks.coco import CocoResultsSink, file_name
from unilseg.data.dataset import SyntheticSamples
from unilseg.data.synthetic import GRANULARITIES, target_instances
from unilseg.errors import UnilsegError
from unilseg.eval.metrics import fraction
from unilseg.inference.predictor import Predictor
from unilseg.io.paths import json_text
from unilseg.io.writers import rle_encode, write_atomic

METRICS = ("AP", "AP50", "AP75", "AR")
_STATS = {"AP": 0, "AP50": 1, "AP75": 2, "AR": 8}  # positions in COCOeval.stats (AR: maxDets 100)
TRUTH_NAME, RESULTS_NAME = "truth.json", "predictions.json"


@dataclass
class InstancePlan:
    """An instance evaluation's job and its ground truth, before any model work.

    items: the segment job's Items (one per distinct (scene, instruction)), in plan order;
    truth: per item, its instances as COCO RLEs; granularity: per item; catalog: the image
    and category ids the job's files and the ground truth share.
    """

    workdir: Path
    items: list[Item]
    truth: list[list[dict[str, Any]]]
    granularity: list[str]
    catalog: Catalog
    size: int

    @property
    def truth_path(self) -> Path:
        return self.workdir / TRUTH_NAME

    @property
    def results_path(self) -> Path:
        return self.workdir / RESULTS_NAME

    def category_granularity(self) -> dict[str, str]:
        """Each instruction's granularity (a scene's instruction text always has one)."""
        out: dict[str, str] = {}
        for item, g in zip(self.items, self.granularity):
            if out.setdefault(item.expression, g) != g:
                raise ValueError(f"instruction {item.expression!r} is both {out[item.expression]} and {g}")
        return out


def plan_instances(samples: SyntheticSamples, workdir: str | Path, limit: int | None = None) -> InstancePlan:
    """Write the scenes' images under workdir/images and plan their instructions as a segment job
    (masks into workdir/masks) -> the plan with its ground truth; `limit`: the first N samples only.

    A scene's instruction that repeats (two draws that picked one text) is asked once.
    """
    workdir = Path(workdir)
    images, masks = workdir / "images", workdir / "masks"
    images.mkdir(parents=True, exist_ok=True)
    count = len(samples) if limit is None else min(limit, len(samples))
    requests: list[tuple[str, str, None]] = []
    truth: list[list[dict[str, Any]]] = []
    granularity: list[str] = []
    seen: set[tuple[int, str]] = set()
    written: set[int] = set()
    for k in range(count):
        scene_index = k // samples.per_scene
        scene, image, labels, inst = samples.instruction(k)
        if (scene_index, inst.text) in seen:
            continue
        seen.add((scene_index, inst.text))
        path = images / f"scene{scene_index:05d}.png"
        if scene_index not in written:
            if not cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1])):
                raise UnilsegError(f"cannot write {path}")
            written.add(scene_index)
        requests.append((str(path), inst.text, None))
        truth.append([rle_encode(m) for m in target_instances(scene, labels, inst.target)])
        granularity.append(inst.granularity)
    items = plan_items(requests, masks, OutputOptions(), reserved=[masks / "results.jsonl"])
    catalog = Catalog.of(items, mask_categories(items))
    return InstancePlan(workdir, items, truth, granularity, catalog, samples.scene.size)


def write_truth(plan: InstancePlan) -> Path:
    """The ground truth as a COCO instances file (plan.truth_path), ids as the job's files have them."""
    catalog = plan.catalog
    annotations = []
    for item, instances in zip(plan.items, plan.truth):
        for rle in instances:
            mask_area = int(_area(rle))
            annotations.append({"id": len(annotations) + 1, "image_id": catalog.images[str(item.image)],
                                "category_id": catalog.categories[item.expression], "segmentation": rle,
                                "area": mask_area, "bbox": _bbox(rle), "iscrowd": 0})
    images = [{"id": i, "file_name": file_name(path, plan.workdir / "images"), "width": plan.size,
               "height": plan.size} for path, i in catalog.images.items()]
    categories = [{"id": i, "name": name, "supercategory": ""} for name, i in catalog.categories.items()]
    doc = {"info": {"description": "unilseg generated scenes: instance ground truth"}, "licenses": [],
           "images": images, "categories": categories, "annotations": annotations}
    write_atomic(plan.truth_path, (json_text(doc) + "\n").encode())
    return plan.truth_path


def _area(rle: dict[str, Any]) -> float:
    from pycocotools import mask as coco_mask

    return float(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))


def _bbox(rle: dict[str, Any]) -> list[int]:
    from pycocotools import mask as coco_mask

    box = coco_mask.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return [int(v) for v in box]


def annotate_options(min_area: int | None = None, max_instances: int | None = None) -> AnnotateOptions:
    """AnnotateOptions with instances on (the defaults of `--instances` where not given)."""
    given = {k: v for k, v in (("min_area", min_area), ("max_instances", max_instances)) if v is not None}
    try:
        return AnnotateOptions(instances=True, **given)
    except ValueError as e:
        raise UnilsegError(str(e)) from None


def predict_instances(predictor: Predictor, plan: InstancePlan, options: AnnotateOptions,
                      batch_size: int | None = None, progress: bool = False) -> Path:
    """Run the plan's segment job (masks, results log, annotation log) into plan.results_path -> that path."""
    masks = plan.workdir / "masks"
    log = AnnotationLog(plan.workdir / "annotations.jsonl", [CocoResultsSink(plan.results_path)], plan.catalog)
    report = run_job(predictor, plan.items, MaskStep(OutputOptions(), annotate=options),
                     results=masks / "results.jsonl", batch_size=batch_size, progress=progress, annotations=log)
    if report.failed:
        item, why = report.failed[0]
        raise UnilsegError(f"{len(report.failed)} of {len(plan.items)} items failed, first {item.image} "
                           f"{item.expression!r}: {why}")
    return plan.results_path


def coco_scores(truth: str | Path, results: str | Path, granularity: dict[str, str]) -> dict[str, Any]:
    """COCOeval(segm) of a results file against a ground-truth file -> {'overall': stats, 'granularity':
    {name: stats}}; stats: instructions and instances (ground truth), detections, AP, AP50, AP75, AR
    (fractions; None where there is nothing to score). granularity: category name -> granularity."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(str(truth))
        detections = json.loads(Path(results).read_text())
        dt = gt.loadRes(str(results)) if detections else None
    by_name = {c["name"]: c["id"] for c in gt.dataset["categories"]}
    groups = {"overall": sorted(by_name.values())}
    for g in (*GRANULARITIES, *sorted(set(granularity.values()) - set(GRANULARITIES))):
        ids = sorted(by_name[n] for n, v in granularity.items() if v == g and n in by_name)
        if ids:
            groups[g] = ids
    out: dict[str, Any] = {"overall": {}, "granularity": {}}
    for name, cat_ids in groups.items():
        stats = _subset_stats(gt, dt, cat_ids, detections)
        if name == "overall":
            out["overall"] = stats
        else:
            out["granularity"][name] = stats
    return out


def _subset_stats(gt: Any, dt: Any, cat_ids: list[int], detections: list[dict[str, Any]]) -> dict[str, Any]:
    from pycocotools.cocoeval import COCOeval

    wanted = set(cat_ids)
    anns = [a for a in gt.dataset["annotations"] if a["category_id"] in wanted]
    stats: dict[str, Any] = {"instructions": len({(a["image_id"], a["category_id"]) for a in anns}),
                             "instances": len(anns),
                             "detections": sum(d["category_id"] in wanted for d in detections)}
    if dt is None or not anns:
        return {**stats, **{m: 0.0 if anns else None for m in METRICS}}
    ev = COCOeval(gt, dt, "segm")
    ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {**stats, **{m: (None if ev.stats[i] < 0 else float(ev.stats[i])) for m, i in _STATS.items()}}


def evaluate_instances(predictor: Predictor, samples: SyntheticSamples, workdir: str | Path,
                       options: AnnotateOptions | None = None, batch_size: int | None = None,
                       limit: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Plan, write the ground truth, run the job, score -> `coco_scores` output plus 'images'.

    Files (kept in workdir): images/, masks/ (+ results.jsonl), annotations.jsonl,
    truth.json (COCO instances), predictions.json (COCO results).
    """
    plan = plan_instances(samples, workdir, limit)
    write_truth(plan)
    predict_instances(predictor, plan, options or annotate_options(), batch_size, progress)
    summary = coco_scores(plan.truth_path, plan.results_path, plan.category_granularity())
    return {"images": len(plan.catalog.images), **summary}


def format_table(summary: dict[str, Any]) -> str:
    """Plain text: one row overall and one per granularity; counts, then AP, AP50, AP75, AR as fractions
    (`metrics.fraction`)."""
    cols = ("instructions", "instances", "detections", *METRICS)
    rows = [("overall", summary["overall"])] + [(f"granularity={g}", s) for g, s in summary["granularity"].items()]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>12}" if k < 3 else f"{c:>7}" for k, c in enumerate(cols))]
    for name, s in rows:
        cells = [f"{s[c]:>12}" for c in cols[:3]]
        cells += [fraction(s[m], 7) for m in METRICS]
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines)


def instance_samples(spec: str) -> SyntheticSamples:
    """The samples a data spec names, if they know their instances (generated scenes), else a UnilsegError."""
    from unilseg.data.sources import open_samples

    if spec != "synthetic" and not spec.startswith("synthetic:"):
        raise UnilsegError(f"--task instances needs instance ground truth; so far only generated scenes give it "
                           f"(synthetic:SCENES[:SEED[:SIZE]]), not {spec!r}")
    samples = open_samples(spec)
    assert isinstance(samples, SyntheticSamples)
    return samples
