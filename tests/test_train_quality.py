"""A short run of the training command beats the untrained network on held-out generated scenes."""
import json

import pytest
import torch
from conftest import ROOT

from unilseg.cli.eval import main as eval_main
from unilseg.cli.train import main as train_main

pytestmark = pytest.mark.slow  # trains, then evaluates twice

TINY = str(ROOT / "src/unilseg/configs/unilseg-tiny.yaml")
HELD_OUT = "synthetic:30:1:96"  # seed 1: scenes the training stream (seed 0) never shows


def _train_and_score(tmp_path, steps: int) -> dict:
    out = tmp_path / f"steps{steps}"
    assert train_main([TINY, "--out", str(out), "--steps", str(steps), "--val-data", "none", "--no-progress"]) == 0
    report = tmp_path / f"eval{steps}.json"
    args = ["--weights", str(out / "model.pth"), "--data", HELD_OUT,  # model.pth carries its config
            "--json", str(report), "--no-progress"]
    assert eval_main(args) == 0
    return json.loads(report.read_text())


def test_short_training_beats_untrained(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: a second thread gains little and spins badly on a busy machine
    try:
        before = _train_and_score(tmp_path, 0)  # the same initial weights, never updated
        after = _train_and_score(tmp_path, 250)
    finally:
        torch.set_num_threads(threads)
    assert before["overall"]["count"] == after["overall"]["count"] == 120
    assert after["overall"]["mIoU"] > before["overall"]["mIoU"] + 0.1
    assert after["overall"]["oIoU"] > before["overall"]["oIoU"] + 0.1
    for g in ("object", "part", "group", "stuff"):
        assert after["granularity"][g]["mIoU"] > before["granularity"][g]["mIoU"], g
