"""The shipped demo model (unilseg/weights/unilseg-demo.safetensors) still segments held-out scenes.

Scores generated scenes of stream 3 (training used stream 0, its periodic evaluation
stream 1, the README's table stream 2) through the same evaluation command users run,
so a regression in the model code or the weights fails here.
"""
import json

from conftest import ROOT

from unilseg.cli.eval import main as eval_main
from unilseg.model.registry import cached_weights, get_spec

# Floors a little under what the shipped weights score on this set (0.811 overall; object 0.730,
# part 0.645, group 0.867, stuff 0.983; see README, "The demo model").
FLOOR_OVERALL = 0.77
FLOOR = {"object": 0.68, "part": 0.60, "group": 0.82, "stuff": 0.95}


def test_demo_weights_are_shipped_small_and_registered():
    path = cached_weights(get_spec("unilseg-demo"))
    assert path is not None and path.parent == ROOT / "src" / "unilseg" / "weights" and path.suffix == ".safetensors"
    assert path.stat().st_size <= 25 * 2**20


def test_demo_model_held_out_quality(tmp_path, capsys):
    out = tmp_path / "summary.json"
    code = eval_main(["--model", "unilseg-demo", "--data", "synthetic:75:3", "--device", "cpu",
                      "--no-progress", "--json", str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["overall"]["count"] == 300
    assert summary["overall"]["mIoU"] >= FLOOR_OVERALL
    for granularity, floor in FLOOR.items():
        assert summary["granularity"][granularity]["mIoU"] >= floor, granularity
