"""Two processes under torchrun (gloo, CPU): different data per rank, identical replicas throughout."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT

pytestmark = pytest.mark.slow  # two torchrun processes

WORKER = textwrap.dedent("""
    import sys
    import torch
    from unilseg.model.config import load_config
    from unilseg.train.loop import Trainer

    cfg = load_config(sys.argv[1])
    cfg["train"].update(steps=4, batch_size=2, val_data="synthetic:2:1:96", val_limit=4, eval_every=4,
                        ckpt_every=2, log_every=1, workers=0)
    trainer = Trainer(cfg, sys.argv[2], device="cpu", progress=False)
    init = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    keys = [trainer.loader.batch_sampler.keys(s) for s in range(4)]
    model = trainer.run()
    torch.save({"world": trainer.dist.world_size, "init": init, "final": model.state_dict(), "keys": keys},
               f"{sys.argv[2]}/rank{trainer.dist.rank}.pt")
""")


def test_two_process_gloo_run_keeps_replicas_identical(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(ROOT / "src/unilseg/configs/unilseg-tiny.yaml"), str(tmp_path / "run")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    r0 = torch.load(tmp_path / "run/rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "run/rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for step in range(4):  # each process trained on its own part of every global batch
        assert not {i for i, _ in r0["keys"][step]} & {i for i, _ in r1["keys"][step]}
    for k in r0["final"]:  # parameters and BatchNorm statistics
        assert torch.equal(r0["init"][k], r1["init"][k]), k
        assert torch.equal(r0["final"][k], r1["final"][k]), k
    changed = [k for k in r0["final"] if not torch.equal(r0["final"][k], r0["init"][k])]
    assert "fusion_proj.weight" in changed and "backbone_visual.patch_embed.proj.weight" in changed
    run = tmp_path / "run"
    assert (run / "model.pth").is_file() and (run / "step0000004.pt").is_file()
    log = (run / "log.jsonl").read_text().splitlines()
    assert len(log) == 5 and '"eval"' in log[-1]  # rank 0 alone writes: 4 steps + 1 evaluation
