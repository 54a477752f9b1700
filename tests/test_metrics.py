"""Metrics against hand-computed values, and the evaluation pipeline with models whose answer is known."""
import json

import numpy as np
import pytest
import torch

from unilseg.cli.eval import main as eval_main
from unilseg.data.manifest import Sample
from unilseg.eval.evaluate import evaluate
from unilseg.eval.metrics import (
    Record,
    best_min_score,
    format_absent_table,
    format_table,
    intersection_union,
    presence_auc,
    stats,
    summarize,
)
from unilseg.inference.backends.info import DeviceName
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
    # fractions with four decimals, as --json has them: mIoU 3.5857/6, oIoU 98/142, Prec@X 4, 3, 3, 3, 2 of 6
    assert overall == ["overall", "6", "0.5976", "0.6901", "0.6667", "0.5000", "0.5000", "0.5000", "0.3333"]
    assert len({len(line) for line in table}) == 1  # columns line up
    assert any(line.startswith("source=b") for line in table)
    assert stats([]) == {"count": 0}


class ConstantBackend:
    """A Backend whose logits are one value everywhere: predicts the whole image (value > 0) or nothing."""

    spec = InferenceSpec(size=64, threshold=0.35)
    device = DeviceName("cpu")

    def __init__(self, value: float) -> None:
        self.value = value

    def encode_image(self, x: np.ndarray) -> list[np.ndarray]:
        return [x.mean(1, keepdims=True)[:, :, ::4, ::4]]

    def encode_text(self, tokens: np.ndarray) -> tuple[np.ndarray]:
        return (tokens,)

    def decode(self, features, text) -> np.ndarray:
        b, _, h, w = features[0].shape
        return np.full((b, 1, h, w), self.value, np.float32)


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
    assert full["absent"]["empty_targets"] == 1 and full["absent"]["N-acc"] == 0.0  # the whole image "found"
    assert full["absent"]["T-acc"] == 1.0


def test_absent_metrics_by_hand():
    """gRefCOCO's N-acc, T-acc, gIoU, cIoU, the presence AUC and the best min score on five records."""
    records = [
        Record(0, 0, "no-target", "s", presence=0.2, gt_pixels=0, pred_pixels=0),  # nothing, nothing found: IoU 1
        Record(0, 30, "no-target", "s", presence=0.6, gt_pixels=0, pred_pixels=30),  # a false alarm: IoU 0
        Record(8, 10, "object", "s", presence=0.9, gt_pixels=9, pred_pixels=9),  # found: IoU 0.8
        Record(0, 5, "object", "s", presence=0.3, gt_pixels=5, pred_pixels=0),  # missed: IoU 0
        Record(5, 10, "part", "s", presence=0.6, gt_pixels=8, pred_pixels=7),  # found: IoU 0.5
    ]
    a = summarize(records)["absent"]
    assert (a["empty_targets"], a["targets"]) == (2, 3)
    assert a["N-acc"] == pytest.approx(1 / 2)  # one of the two empty targets predicted empty
    assert a["T-acc"] == pytest.approx(2 / 3)  # two of the three targets predicted non-empty
    assert a["gIoU"] == pytest.approx((1 + 0 + 0.8 + 0 + 0.5) / 5)
    assert a["cIoU"] == pytest.approx((0 + 0 + 8 + 0 + 5) / (0 + 30 + 10 + 5 + 10))
    # target scores 0.9, 0.3, 0.6 against empty 0.2, 0.6: pairs won 2 + 1 + (1 + a tie's 0.5) of 6
    assert a["presence_auc"] == pytest.approx(4.5 / 6)
    # min score t: a found mask stays found iff presence >= t. t <= 0.6: N 1/2, T 2/3; t = 0.9 drops the false
    # alarm (N 1) and the 0.6 target (T 1/3): 1.33 beats 1.17
    assert (a["best_min_score"], a["best_N-acc"], a["best_T-acc"]) == pytest.approx((0.9, 1.0, 1 / 3))
    # on the scores alone (every prediction found): t = 0.3 keeps all targets and drops the 0.2 one (N 1/2, T 1)
    scores = np.array([r.presence for r in records])
    has_target = np.array([not r.target_empty for r in records])
    assert best_min_score(scores, has_target) == pytest.approx((0.3, 0.5, 1.0))
    table = format_absent_table(summarize(records)).splitlines()
    assert table[0].split() == ["empty", "target", "N-acc", "T-acc", "gIoU", "cIoU", "AUC"]
    assert table[1].split() == ["absent", "2", "3", "0.5000", "0.6667", "0.4600", "0.2364", "0.7500"]
    assert table[2].startswith("best min score 0.9000") and "N-acc 1.0000, T-acc 0.3333" in table[2]


def test_presence_auc_ties_and_edges():
    assert presence_auc([0.9, 0.8], [0.1]) == 1.0 and presence_auc([0.1], [0.9, 0.8]) == 0.0
    assert presence_auc([0.5, 0.5], [0.5]) == 0.5  # all tied: half
    assert presence_auc([], [0.5]) is None and presence_auc([0.5], []) is None
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 5, 40) / 4, rng.integers(0, 5, 30) / 4  # many ties
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert presence_auc(pos, neg) == pytest.approx(pairs / (40 * 30))
    assert best_min_score(np.array([0.4, 0.7]), np.array([True, True])) == (0.0, None, 1.0)


def test_summaries_without_empty_targets_are_unchanged():
    """No empty target: no 'absent' key, and the same JSON whether or not the records carry the new fields."""
    old = [Record(4, 14, "object", "a"), Record(9, 9, "part", "b"), Record(0, 9, "object", "a")]
    new = [Record(4, 14, "object", "a", 0.7, 9, 9), Record(9, 9, "part", "b", 0.9, 9, 9),
           Record(0, 9, "object", "a", 0.1, 9, 0)]
    for records in (old, new):
        summary = summarize(records)
        assert set(summary) == {"overall", "granularity", "source"}
        assert json.dumps(summary) == json.dumps({
            "overall": stats(records),
            "granularity": {"object": stats([old[0], old[2]]), "part": stats([old[1]])},
            "source": {"a": stats([old[0], old[2]]), "b": stats([old[1]])},
        })
        assert format_absent_table(summary) == ""
    assert not Record(0, 9).target_empty and Record(0, 0).target_empty  # without pixel counts: union 0 only


def test_evaluate_rows_carry_presence_and_min_score_empties_masks():
    rng = np.random.default_rng(0)
    samples = [
        Sample(rng.integers(0, 255, (20, 20, 3), np.uint8), box((20, 20), 5, 15, 0, 20), ["a"], "stuff", "s"),
        Sample(rng.integers(0, 255, (16, 24, 3), np.uint8), np.zeros((16, 24), bool), ["b"], "no-target", "s"),
    ]
    rows = []
    evaluate(constant(10.0), samples, on_record=rows.append)
    peak = round(float(torch.sigmoid(torch.tensor(10.0))), 6)  # the soft map's peak: the presence score
    assert [(r["presence"], r["present"], r["target_empty"]) for r in rows] == [(peak, True, False),
                                                                               (peak, True, True)]
    rows.clear()
    off = evaluate(constant(10.0), samples, on_record=rows.append, min_score=0.99999)  # above the peak: emptied
    assert [(r["present"], r["iou"]) for r in rows] == [(False, 0.0), (False, 1.0)]
    assert (off["absent"]["N-acc"], off["absent"]["T-acc"]) == (1.0, 0.0)
    kept = evaluate(Predictor(ConstantBackend(10.0), min_score=0.99999), samples, min_score=0)  # 0: off
    assert (kept["absent"]["N-acc"], kept["absent"]["T-acc"]) == (0.0, 1.0)


def test_eval_command_reports_absent_targets_and_plots(tmp_path, capsys):
    plot, report = tmp_path / "presence.png", tmp_path / "report.json"
    code = eval_main(["--model", "unilseg-demo", "--device", "cpu", "--data", "synthetic:2:1:absent=1",
                      "--no-progress", "--plot", str(plot), "--json", str(report)])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "synthetic:2:1:absent=1: 10 texts, threshold 0.35, min score 0.8"  # the demo config's
    head = next(i for i, line in enumerate(out) if line.split()[:3] == ["empty", "target", "N-acc"])
    assert out[head + 1].split()[:3] == ["absent", "2", "8"] and out[head + 2].startswith("best min score ")
    data = json.loads(report.read_text())
    assert data["absent"]["empty_targets"] == 2 and data["granularity"]["no-target"]["count"] == 2
    a = data["absent"]  # the printed row is the JSON's fractions, four decimals
    assert out[head + 1].split()[3:] == [f"{a[k]:.4f}" for k in ("N-acc", "T-acc", "gIoU", "cIoU", "presence_auc")]
    overall = next(line for line in out if line.startswith("overall")).split()
    assert overall[2:4] == [f"{data['overall']['mIoU']:.4f}", f"{data['overall']['oIoU']:.4f}"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["presence.png", "report.json"]  # no temporary left


BAD_MIN_SCORE = ["--model", "unilseg-demo", "--device", "cpu", "--data", "synthetic:2:1:absent=1", "--no-progress",
                 "--min-score"]


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_eval_min_score_out_of_range_is_one_line(value, tmp_path, capsys):
    plot = tmp_path / "p.png"
    assert eval_main([*BAD_MIN_SCORE, value, "--plot", str(plot)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: --min-score must be a number from 0 (off) to 1, not {value}"]
    assert not plot.exists()


@pytest.mark.parametrize("value, message", [("abc", "'abc' is not a number"), ("nan", "'nan': give a finite number")])
def test_eval_min_score_not_a_number_is_an_argparse_error(value, message, capsys):
    with pytest.raises(SystemExit) as e:
        eval_main([*BAD_MIN_SCORE, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith(f"unilseg eval: error: argument --min-score: {message}")


def test_presence_plot_from_records_and_without_matplotlib(tmp_path, monkeypatch):
    from unilseg.errors import UnilsegError
    from unilseg.eval.plots import presence_plot

    records = [Record(0, 0, "no-target", presence=0.2, gt_pixels=0, pred_pixels=0),
               Record(0, 30, "no-target", presence=0.6, gt_pixels=0, pred_pixels=30),
               Record(8, 10, presence=0.9, gt_pixels=9, pred_pixels=9)]
    path = tmp_path / "p.png"
    assert presence_plot(records, path) == summarize(records)["absent"]["best_min_score"] == 0.9
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert presence_plot(([0.9, 0.8], []), tmp_path / "q.png") is None  # scores: no line unless given
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    with pytest.raises(UnilsegError, match=r"^the presence plot needs matplotlib: pip install 'unilseg\[plot\]'"):
        presence_plot(records, tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()
