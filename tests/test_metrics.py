"""Metrics against hand-computed values, and the evaluation pipeline with models whose answer is known."""
import numpy as np
import pytest
import torch

from unilseg.data.manifest import Sample
from unilseg.eval.evaluate import evaluate
from unilseg.eval.metrics import Record, format_table, intersection_union, stats, summarize
from unilseg.inference.predictor import Predictor
from unilseg.model.spec import InferenceSpec


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_intersection_union_by_hand():
    gt = box((6, 6), 0, 3, 0, 3)  # 9 pixels
    pred = box((6, 6), 1, 4, 1, 4)  # 9 pixels, overlap 2x2
    assert intersection_union(pred, gt) == (4, 14)
    assert intersection_union(gt, gt) == (9, 9)
    assert intersection_union(np.zeros((6, 6), bool), gt) == (0, 9)  # empty prediction
    assert intersection_union(gt, np.zeros((6, 6), bool)) == (0, 9)  # empty target, something predicted
    assert intersection_union(np.zeros((6, 6), bool), np.zeros((6, 6), bool)) == (0, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        intersection_union(gt, gt[:5])


def test_miou_oiou_and_precision_by_hand():
    records = [
        Record(4, 14, "object", "a"),  # IoU 2/7
        Record(9, 9, "object", "b"),  # 1
        Record(0, 9, "part", "a"),  # empty prediction: 0
        Record(0, 0, "part", "a"),  # both empty: 1, adds nothing to oIoU
        Record(5, 10, "stuff", "b"),  # exactly 0.5 counts at Prec@0.5
        Record(80, 100, "stuff", "b"),  # 0.8
    ]
    s = stats(records)
    ious = [2 / 7, 1, 0, 1, 0.5, 0.8]
    assert s["count"] == 6
    assert s["mIoU"] == pytest.approx(sum(ious) / 6)
    assert s["oIoU"] == pytest.approx((4 + 9 + 0 + 0 + 5 + 80) / (14 + 9 + 9 + 0 + 10 + 100))
    assert s["prec@0.5"] == pytest.approx(4 / 6)
    assert s["prec@0.6"] == pytest.approx(3 / 6)
    assert s["prec@0.8"] == pytest.approx(3 / 6)
    assert s["prec@0.9"] == pytest.approx(2 / 6)

    summary = summarize(records)
    assert set(summary["granularity"]) == {"object", "part", "stuff"} and set(summary["source"]) == {"a", "b"}
    assert summary["granularity"]["part"]["mIoU"] == pytest.approx(0.5)
    assert summary["granularity"]["part"]["oIoU"] == 0.0
    assert summary["source"]["a"]["count"] == 3
    assert summary["source"]["b"]["oIoU"] == pytest.approx(94 / 119)
    table = format_table(summary).splitlines()
    assert table[0].split() == ["count", "mIoU", "oIoU", "prec@0.5", "prec@0.6", "prec@0.7", "prec@0.8", "prec@0.9"]
    overall = table[1].split()
    assert overall[:3] == ["overall", "6", f"{100 * s['mIoU']:.2f}"]
    assert any(line.startswith("source=b") for line in table)
    assert stats([]) == {"count": 0}


class ConstantBackend:
    """A Backend whose logits are one value everywhere: predicts the whole image (value > 0) or nothing."""

    spec = InferenceSpec(size=64, threshold=0.35)
    device = torch.device("cpu")

    def __init__(self, value: float) -> None:
        self.value = value

    def encode_image(self, x):
        return [x.mean(1, keepdim=True)[:, :, ::4, ::4]]

    def encode_text(self, tokens):
        return (tokens,)

    def decode(self, features, text):
        b, _, h, w = features[0].shape
        return torch.full((b, 1, h, w), self.value)


def constant(value: float) -> Predictor:
    return Predictor(ConstantBackend(value))


def test_evaluate_pipeline_with_known_answers():
    """A whole-image prediction scores |gt| / image area per text; an empty one scores 0 (or 1 if gt is empty)."""
    rng = np.random.default_rng(0)
    samples = [
        Sample(rng.integers(0, 255, (30, 40, 3), np.uint8), box((30, 40), 0, 10, 0, 12), ["a", "b"], "object", "s1"),
        Sample(rng.integers(0, 255, (20, 20, 3), np.uint8), box((20, 20), 5, 15, 0, 20), ["c"], "stuff", "s2"),
        Sample(rng.integers(0, 255, (16, 24, 3), np.uint8), np.zeros((16, 24), bool), ["d"], "part", "s1"),
    ]
    rows = []
    full = evaluate(constant(10.0), samples, batch_size=3, on_record=rows.append)
    assert [r["text"] for r in rows] == ["a", "b", "c", "d"]  # every expression of a sample is scored
    expected = [120 / 1200, 120 / 1200, 200 / 400, 0.0]
    assert [r["iou"] for r in rows] == pytest.approx(expected)
    assert full["overall"]["mIoU"] == pytest.approx(np.mean(expected))
    assert full["overall"]["oIoU"] == pytest.approx((120 + 120 + 200) / (1200 + 1200 + 400 + 384))
    assert full["granularity"]["stuff"]["prec@0.5"] == 1.0
    empty = evaluate(constant(-10.0), samples, limit=3)
    assert empty["overall"]["count"] == 3 and empty["overall"]["mIoU"] == 0.0
    assert evaluate(constant(-10.0), samples)["granularity"]["part"]["mIoU"] == 1.0
