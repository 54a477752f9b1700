"""`unilseg eval --task instances`: instance ground truth of generated scenes, COCO files, COCOeval by granularity."""
from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from unilseg.batch.sinks import AnnotationLog, make_record
from unilseg.batch.sinks.coco import CocoResultsSink
from unilseg.cli.eval import main as eval_main
from unilseg.data.dataset import SyntheticSamples
from unilseg.data.synthetic import Target, generate_scene, render, target_instances, target_mask
from unilseg.data.synthetic.instructions import instructions
from unilseg.eval.instances import annotate_options, coco_scores, format_table, plan_instances, write_truth
from unilseg.io.writers import rle_decode

# The demo model on synthetic:8:2 (32 instructions, 36 instances of held-out stream 2) measured AP 0.721,
# AP50 0.940, AR 0.731 (CPU, fp32); the floors sit 0.15 below.
AP_FLOOR, AP50_FLOOR, AR_FLOOR = 0.57, 0.79, 0.58


def test_target_instances_split_groups_and_pieces_and_cover_the_target():
    seen = set()
    for index in range(30):
        scene = generate_scene(2, index)
        _, labels = render(scene)
        for targets in instructions(scene, labels).values():
            for alts in targets:
                target = alts[0].target
                found = target_instances(scene, labels, target)
                union = np.zeros(labels.shape, bool)
                for mask in found:
                    assert mask.any() and not (union & mask).any()  # non-empty and disjoint
                    union |= mask
                assert np.array_equal(union, target_mask(scene, labels, target))
                if target.stuff is None and target.part is None:  # whole objects: one instance each
                    assert len(found) == len(target.objects)
                    seen.add("objects")
        for i, obj in enumerate(scene.objects):
            if obj.kind == "car":  # two wheels apart: two instances; the body's two touching shapes: one
                assert len(target_instances(scene, labels, Target((i,), "wheels"))) == 2
                assert len(target_instances(scene, labels, Target((i,), "body"))) == 1
                seen.add("car")
    assert seen == {"objects", "car"}


def _perfect_results(plan, drop: str | None = None) -> None:
    """Ground-truth instances fed back as predictions, through the annotation log and the results sink."""
    log = AnnotationLog(plan.workdir / "annotations.jsonl", [CocoResultsSink(plan.results_path)], plan.catalog)
    for item, truth, g in zip(plan.items, plan.truth, plan.granularity):
        mask = np.zeros((plan.size, plan.size), bool)
        if g != drop:
            for rle in truth:
                mask |= rle_decode(rle)
        log.add(make_record(item, mask.shape, [(item.expression, mask, None)], annotate_options()))
    log.finish(plan.items)


def test_perfect_predictions_score_one_and_missing_ones_zero(tmp_path):
    plan = plan_instances(SyntheticSamples(10, 2), tmp_path)
    write_truth(plan)
    gt = COCO(str(plan.truth_path))
    assert len(gt.getImgIds()) == 10 and len(gt.getCatIds()) == len({i.expression for i in plan.items})
    assert len(gt.getAnnIds()) == sum(len(t) for t in plan.truth) > len(plan.items)  # groups hold several
    for ann in gt.loadAnns(gt.getAnnIds()):
        assert gt.annToMask(ann).sum() == ann["area"] > 0
    _perfect_results(plan)
    summary = coco_scores(plan.truth_path, plan.results_path, plan.category_granularity())
    assert set(summary["granularity"]) == {"object", "part", "group", "stuff"}
    for stats in [summary["overall"], *summary["granularity"].values()]:
        assert stats["detections"] == stats["instances"]
        assert [stats[k] for k in ("AP", "AP50", "AP75", "AR")] == pytest.approx([1.0] * 4, abs=1e-9)

    _perfect_results(plan, drop="part")  # the same job with every part mask empty
    summary = coco_scores(plan.truth_path, plan.results_path, plan.category_granularity())
    part = summary["granularity"]["part"]
    assert part["detections"] == 0 and part["AP"] == 0.0 and part["AR"] == 0.0
    assert [summary["granularity"][g]["AP"] for g in ("object", "group", "stuff")] == pytest.approx([1.0] * 3)
    assert 0.0 < summary["overall"]["AP"] < 1.0
    table = format_table(summary).splitlines()  # fractions with four decimals, columns aligned
    assert table[0].split()[-4:] == ["AP", "AP50", "AP75", "AR"] and len({len(line) for line in table}) == 1
    rows = {line.split()[0]: line.split()[4:] for line in table[1:]}
    assert rows["granularity=part"] == ["0.0000"] * 4 and rows["granularity=stuff"] == ["1.0000"] * 4
    assert rows["overall"][0] == f"{summary['overall']['AP']:.4f}"


@pytest.mark.slow  # a quality floor
def test_demo_model_instance_ap_floor(tmp_path, capsys):
    out, report = tmp_path / "job", tmp_path / "instances.json"
    code = eval_main(["--model", "unilseg-demo", "--task", "instances", "--data", "synthetic:8:2", "--device", "cpu",
                      "--no-progress", "--out", str(out), "--json", str(report)])
    text = capsys.readouterr().out
    assert code == 0
    summary = json.loads(report.read_text())
    assert summary["task"] == "instances" and summary["images"] == 8 and summary["min_area"] == 16
    overall = summary["overall"]
    assert overall["AP"] >= AP_FLOOR and overall["AP50"] >= AP50_FLOOR and overall["AR"] >= AR_FLOOR
    assert set(summary["granularity"]) == {"object", "part", "group", "stuff"}
    assert "AP50" in text and "granularity=part" in text
    printed = next(line for line in text.splitlines() if line.startswith("overall")).split()[4:]
    assert printed == [f"{overall[k]:.4f}" for k in ("AP", "AP50", "AP75", "AR")]  # the JSON's fractions
    # the job's own files: ground truth and predictions share image and category ids (loadRes checks the images)
    gt = COCO(str(out / "truth.json"))
    dt = gt.loadRes(str(out / "predictions.json"))
    assert set(dt.getCatIds()) <= set(gt.getCatIds()) and len(dt.getAnnIds()) == overall["detections"]
    assert len(list((out / "masks").glob("*.png"))) == overall["instructions"]


@pytest.mark.parametrize("extra, message", [
    (["--data", "refcoco:val", "--refer-root", "nowhere"], "only generated scenes"),
    (["--data", "synthetic:2:2", "--per-sample", "x.jsonl"], "--per-sample"),
    (["--data", "synthetic:2:2", "--min-area", "0"], "min-area"),
])
def test_bad_instance_eval_requests_are_one_line(extra, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = eval_main(["--model", "unilseg-demo", "--task", "instances", "--device", "cpu", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and message in err[0]
