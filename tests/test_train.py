"""Training pieces on a tiny model: loss, schedule, parameter groups, one step, sampler, bit-exact resume."""
import math

import pytest
import torch
from conftest import ROOT

from unilseg.data.sources import train_dataset
from unilseg.model.build import build_model
from unilseg.model.config import load_config
from unilseg.model.spec import InferenceSpec
from unilseg.train.checkpointing import latest_checkpoint, load_training_checkpoint
from unilseg.train.loop import Trainer, train_step, with_train_defaults
from unilseg.train.losses import bce_dice_loss, resize_target
from unilseg.train.optim import param_groups
from unilseg.train.sampler import StepBatchSampler
from unilseg.train.schedule import make_scheduler, warmup_cosine

TINY = ROOT / "src/unilseg/configs/unilseg-tiny.yaml"


def tiny_config(**train):
    cfg = with_train_defaults(load_config(TINY))
    cfg["train"].update({"val_data": None, "log_every": 1, **train})
    return cfg


def test_bce_dice_loss_values():
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, :8] = 1
    perfect = (resize_target(mask, (4, 4)) * 2 - 1) * 30
    loss, parts = bce_dice_loss(perfect, mask)
    assert loss.item() < 1e-6 and set(parts) == {"bce", "dice"}
    wrong, parts = bce_dice_loss(-perfect, mask)
    assert parts["dice"].item() == pytest.approx(1 - 1 / 17, abs=1e-4)  # smooth 1: 8 target px, 8 predicted px
    assert parts["bce"].item() == pytest.approx(30, rel=1e-3)
    zero, parts = bce_dice_loss(torch.zeros(2, 1, 4, 4), mask, bce_weight=2.0, dice_weight=0.5)
    assert parts["bce"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert zero.item() == pytest.approx(2 * math.log(2) + 0.5 * parts["dice"].item(), rel=1e-6)
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., :, :3] = 1  # columns 0-2: the 4x4 target's first column is fully covered, the second half
    assert resize_target(edge, (4, 4))[0, 0, 0].tolist() == [1.0, 0.5, 0.0, 0.0]


def test_warmup_cosine_schedule():
    f = [warmup_cosine(s, 100, 10, 0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert f[55] == pytest.approx(0.1 + 0.9 * 0.5) and f[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = make_scheduler(opt, 100, 10, 0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5 * v for v in f[:12]])


def test_param_groups_learning_rates_and_freezing():
    torch.manual_seed(0)
    model = build_model(tiny_config())
    t = tiny_config(lr=1e-3, lr_image=1e-4, freeze_text=True, weight_decay=0.1)["train"]
    groups = {g["name"]: g for g in param_groups(model, t)}
    assert not any(name.startswith("text/") for name in groups)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert groups["image/decay"]["lr"] == 1e-4 and groups["head/decay"]["lr"] == 1e-3
    assert groups["head/no_decay"]["weight_decay"] == 0.0 and groups["image/decay"]["weight_decay"] == 0.1
    no_decay = {id(p) for p in groups["image/no_decay"]["params"]}
    assert id(model.backbone_visual.layers[0].blocks[0].attn.relative_position_bias_table) in no_decay
    assert id(model.backbone_visual.patch_embed.norm.weight) in no_decay
    groups = param_groups(model, tiny_config()["train"])  # unfreezes again; logit_scale is never trained
    assert {g["name"] for g in groups} >= {"text/decay", "text/no_decay"}
    assert not model.backbone.logit_scale.requires_grad


def fixed_batch(cfg, n=4):
    data = train_dataset("synthetic:50:3:96", InferenceSpec.from_config(cfg))
    items = [data[i] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_one_training_step_reduces_the_loss_on_a_fixed_batch():
    cfg = tiny_config(lr=1e-4, warmup_steps=0)
    torch.manual_seed(0)
    model = build_model(cfg)
    batch = fixed_batch(cfg)
    opt = torch.optim.AdamW(param_groups(model, cfg["train"]))
    sched = make_scheduler(opt, 10, 0)
    first = train_step(model, batch, opt, sched, cfg["train"], torch.device("cpu"))
    with torch.no_grad():
        after, _ = bce_dice_loss(model(batch["image"], batch["tokens"]), batch["mask"])
    assert after.item() < first["loss"].item() - 1e-3
    cfg["train"]["bf16"] = True  # the autocast path runs and stays finite
    out = train_step(model, batch, opt, sched, cfg["train"], torch.device("cpu"))
    assert math.isfinite(out["loss"].item()) and out["grad_norm"].item() > 0


def test_sampler_shards_ranks_and_resumes():
    a = StepBatchSampler(20, 3, total_steps=9, seed=5, rank=0, world_size=2)
    b = StepBatchSampler(20, 3, total_steps=9, seed=5, rank=1, world_size=2)
    assert a.steps_per_epoch == 3
    for step in range(9):
        ka, kb = a.keys(step), b.keys(step)
        assert len(ka) == len(kb) == 3 and not {i for i, _ in ka} & {i for i, _ in kb}
        assert {e for _, e in ka} == {step // 3}
    epoch0 = {i for s in range(3) for i, _ in a.keys(s) + b.keys(s)}
    assert len(epoch0) == 18  # no index twice within a pass
    assert [a.keys(s) for s in range(3)] != [a.keys(s) for s in range(3, 6)]  # a new order each pass
    resumed = StepBatchSampler(20, 3, total_steps=9, seed=5, start_step=4, rank=0, world_size=2)
    assert list(resumed) == [a.keys(s) for s in range(4, 9)] and len(resumed) == 5


@pytest.mark.slow  # trains, twice
def test_resume_continues_bit_exactly(tmp_path):
    cfg = tiny_config(steps=4, ckpt_every=2, warmup_steps=1, keep_checkpoints=5)
    straight = Trainer(cfg, tmp_path / "a", progress=False).run()
    assert sorted(p.name for p in (tmp_path / "a").glob("step*.pt")) == ["step0000002.pt", "step0000004.pt"]
    half = tmp_path / "a" / "step0000002.pt"
    cfg["train"]["workers"] = 1  # a worker process makes the same batches
    resumed_trainer = Trainer(cfg, tmp_path / "b", resume=half, progress=False)
    assert resumed_trainer.step == 2
    resumed = resumed_trainer.run()
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    end_a = load_training_checkpoint(tmp_path / "a" / "step0000004.pt")
    end_b = load_training_checkpoint(latest_checkpoint(tmp_path / "b"))
    assert end_b["step"] == 4 and end_a["scheduler"] == end_b["scheduler"]
    for sa, sb in zip(end_a["optimizer"]["state"].values(), end_b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    log_a = (tmp_path / "a" / "log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    import json

    losses_a = {r["step"]: r["loss"] for r in map(json.loads, log_a)}
    losses_b = {r["step"]: r["loss"] for r in map(json.loads, log_b)}
    assert sorted(losses_b) == [3, 4] and all(losses_a[s] == losses_b[s] for s in (3, 4))
    assert not torch.equal(a["fusion_proj.weight"], build_model(cfg).state_dict()["fusion_proj.weight"])


def test_small_config_builds_and_steps():
    """The shipped small config is consistent: it builds, gives stride-4 logits and trains."""
    cfg = with_train_defaults(load_config(ROOT / "src/unilseg/configs/unilseg-small.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg)
    data = train_dataset("synthetic:4:0", InferenceSpec.from_config(cfg))
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("image", "tokens", "mask")}
    assert batch["image"].shape == (2, 3, 192, 192)
    assert model(batch["image"], batch["tokens"]).shape == (2, 1, 48, 48)
    opt = torch.optim.AdamW(param_groups(model, cfg["train"]))
    out = train_step(model, batch, opt, make_scheduler(opt, 10, 1), cfg["train"], torch.device("cpu"))
    assert math.isfinite(out["loss"].item())
