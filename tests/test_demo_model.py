"""The shipped demo model (unilseg/weights/unilseg-demo.safetensors) still segments held-out scenes.

Scores generated scenes of stream 3 (training used stream 0, its periodic evaluation
stream 1, the docs' table stream 2) through the same evaluation command users run,
so a regression in the model code or the weights fails here. Each scene also gets one
instruction that names nothing in it (`:absent=1`, the model's min score in force): the model
must say so (N-acc) without losing what is there (T-acc).
"""
import json

import pytest
from conftest import ROOT

from unilseg.cli.eval import main as eval_main
from unilseg.model.registry import cached_weights, get_spec

# Floors a little under what the shipped weights score on this set (present targets: 0.815 overall;
# object 0.751, part 0.637, group 0.868, stuff 0.980; see docs/demo-model.md), and the issue's
# goal for absent ones (N-acc and T-acc at least 0.90).
FLOOR_OVERALL = 0.77
FLOOR = {"object": 0.68, "part": 0.60, "group": 0.82, "stuff": 0.95}
FLOOR_N_ACC = FLOOR_T_ACC = 0.90


def test_demo_weights_are_shipped_small_and_registered():
    path = cached_weights(get_spec("unilseg-demo"))
    assert path is not None and path.parent == ROOT / "src" / "unilseg" / "weights" and path.suffix == ".safetensors"
    assert path.stat().st_size <= 25 * 2**20


@pytest.mark.slow  # a quality floor
def test_demo_model_held_out_quality(tmp_path, capsys):
    out = tmp_path / "summary.json"
    code = eval_main(["--model", "unilseg-demo", "--data", "synthetic:75:3:absent=1", "--device", "cpu",
                      "--no-progress", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    groups = summary["granularity"]
    assert summary["overall"]["count"] == 375 and groups["no-target"]["count"] == 75
    present = [g for name, g in groups.items() if name != "no-target"]
    overall = sum(g["mIoU"] * g["count"] for g in present) / sum(g["count"] for g in present)
    assert overall >= FLOOR_OVERALL
    for granularity, floor in FLOOR.items():
        assert groups[granularity]["mIoU"] >= floor, granularity
    assert summary["min_score"] == 0.8  # the config's
    assert summary["absent"]["N-acc"] >= FLOOR_N_ACC and summary["absent"]["T-acc"] >= FLOOR_T_ACC
