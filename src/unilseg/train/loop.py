"""The training loop (`Trainer` / `train`), driven entirely by the config's `train` section."""
from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from unilseg.data.sources import open_samples, train_dataset
from unilseg.errors import CheckpointError, UnilsegError
from unilseg.eval.evaluate import evaluate
from unilseg.eval.metrics import fraction
from unilseg.inference.predictor import Predictor, resolve_device
from unilseg.io.paths import user_path
from unilseg.io.writers import write_atomic
from unilseg.model.build import build_model
from unilseg.model.checkpoint import load_weights, read_checkpoint
from unilseg.train.checkpointing import (
    checkpoint_name,
    latest_checkpoint,
    load_training_checkpoint,
    restore,
    save_training_checkpoint,
    save_weights,
)
from unilseg.train.ddp import average_buffers, barrier, cleanup, init_distributed, mean_across
from unilseg.train.losses import bce_dice_loss
from unilseg.train.optim import param_groups
from unilseg.train.sampler import StepBatchSampler
from unilseg.train.schedule import make_scheduler

TRAIN_DEFAULTS: dict[str, Any] = {
    "data": "synthetic:50000:0",  # a data spec (unilseg.data.sources)
    "val_data": "synthetic:100:1",  # held-out: another seed; null for none
    "val_limit": 400,  # texts scored at each periodic evaluation
    "steps": 6000,
    "batch_size": 8,  # per process
    "lr": 4.0e-4,  # decoders and fusion
    "lr_text": None,  # null: same as lr
    "lr_image": None,
    "freeze_text": False,
    "freeze_image": False,
    "weight_decay": 0.05,
    "betas": [0.9, 0.999],
    "warmup_steps": 200,
    "min_lr_ratio": 0.02,
    "clip_grad": 1.0,  # max global gradient norm; 0 disables clipping
    "bf16": False,  # bfloat16 autocast for the forward pass
    "bce_weight": 1.0,
    "dice_weight": 1.0,
    "granularity_weights": None,  # generated scenes: {object: 3, part: 3, group: 2, stuff: 1}; null = uniform
    "absent_share": 0.0,  # generated scenes: the share of draws that name nothing in the scene (empty target)
    "init": None,  # weights to start from (official .pth or a training checkpoint)
    "seed": 0,
    "workers": 1,  # DataLoader worker processes
    "log_every": 10,
    "eval_every": 500,
    "ckpt_every": 500,
    "keep_checkpoints": 2,
}


def with_train_defaults(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of cfg whose `train` section has every key (defaults filled in); unknown keys and a batch of one
    are refused."""
    cfg = copy.deepcopy(cfg)
    given = cfg.get("train") or {}
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise UnilsegError(f"unknown train setting(s) {', '.join(unknown)}; known: {', '.join(TRAIN_DEFAULTS)}")
    cfg["train"] = {**TRAIN_DEFAULTS, **given}
    if int(cfg["train"]["batch_size"]) < 2:
        raise UnilsegError(f"train.batch_size is {cfg['train']['batch_size']}; it must be at least 2 per process "
                           "(the query decoder's BatchNorm needs two samples to train)")
    return cfg


def train_step(
    model: nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, scheduler: Any,
    train: dict[str, Any], device: torch.device,
) -> dict[str, Any]:
    """One optimiser step on a batch (image (B,3,S,S), tokens (B,L), mask (B,1,S,S)).

    Returns detached scalar tensors loss, bce, dice, grad_norm (before clipping) and the lr used.
    """
    model.train()
    image, tokens, mask = (batch[k].to(device, non_blocking=True) for k in ("image", "tokens", "mask"))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bool(train["bf16"])):
        logits = model(image, tokens)
    loss, parts = bce_dice_loss(logits, mask, train["bce_weight"], train["dice_weight"])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    clip = float(train["clip_grad"])
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    scheduler.step()
    return {"loss": loss.detach(), **parts, "grad_norm": grad_norm.detach(), "lr": lr}


def _due(step: int, every: int, last: int) -> bool:
    return (every > 0 and step % every == 0) or step == last


def _prune(run_dir: Path, keep: int) -> None:
    ckpts = sorted(run_dir.glob("step*.pt"))
    for p in ckpts[: max(0, len(ckpts) - keep)]:
        p.unlink(missing_ok=True)


class Trainer:
    """Owns the model, optimiser, data and outputs of one run; `run()` trains to `train.steps`.

    run_dir receives config.yaml, log.jsonl (one JSON object per logged step or
    evaluation), stepNNNNNNN.pt training checkpoints and model.pth (final weights).
    Under torchrun every process builds a Trainer; rank 0 writes the files.
    """

    def __init__(
        self, cfg: dict[str, Any], run_dir: str | Path, resume: str | Path | None = None, device: str = "auto",
        refer_root: str | Path | None = None, coco_images: str | Path | None = None, progress: bool = True,
    ) -> None:
        self.cfg = cfg = with_train_defaults(cfg)
        self.t = t = cfg["train"]
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = resolve_device(device)
        self.dist = init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        if resume == "auto":
            resume = latest_checkpoint(self.run_dir)
            if resume is None:
                state = "holds no stepNNNNNNN.pt checkpoint" if self.run_dir.is_dir() else "does not exist"
                raise CheckpointError(f"nothing to resume in {self.run_dir}: the folder {state}; "
                                      "drop --resume to start afresh")
        ckpt = load_training_checkpoint(resume) if resume is not None else None

        torch.manual_seed(int(t["seed"]))  # the same initial weights on every process
        self.model = build_model(cfg)  # with cfg and its InferenceSpec attached, as load_model does
        if t["init"] and ckpt is None:
            load_weights(self.model, read_checkpoint(user_path(t["init"])), source=str(t["init"]))
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, t), betas=tuple(t["betas"]))
        self.total = int(t["steps"])
        self.scheduler = make_scheduler(self.optimizer, self.total, int(t["warmup_steps"]), float(t["min_lr_ratio"]))
        self.step = restore(ckpt, self.model, self.optimizer, self.scheduler) if ckpt is not None else 0
        self.net: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

        data = train_dataset(t["data"], self.model.spec, int(t["seed"]), refer_root, coco_images,
                             t["granularity_weights"], t["absent_share"])
        sampler = StepBatchSampler(len(data), int(t["batch_size"]), self.total, int(t["seed"]), self.step,
                                   self.dist.rank, self.dist.world_size)
        workers = int(t["workers"])
        self.loader = DataLoader(data, batch_sampler=sampler, num_workers=workers,
                                 pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None)
        self.val = None
        if self.dist.is_main:
            import yaml

            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.run_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False).encode("utf-8"))
            if self.step:
                _truncate_log(self.run_dir / "log.jsonl", self.step)
            if t["val_data"]:
                self.val = open_samples(t["val_data"], refer_root, coco_images)

    def log(self, row: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def evaluate(self) -> dict[str, Any]:
        """Score the validation data through the inference path; the model goes back to training mode."""
        batch = int(self.t["batch_size"])
        was_training = self.model.training
        try:
            return evaluate(Predictor(self.model, max_batch=batch), self.val, batch, int(self.t["val_limit"]))
        finally:
            self.model.train(was_training)

    def checkpoint_and_eval(self, bar: Any) -> None:
        t, step = self.t, self.step
        average_buffers(self.model, self.dist)  # replicas' BatchNorm statistics drift apart; keep their mean
        if self.dist.is_main:
            if _due(step, int(t["ckpt_every"] or 0), self.total):
                save_training_checkpoint(self.run_dir / checkpoint_name(step), self.model, self.optimizer,
                                         self.scheduler, step, self.cfg)
                _prune(self.run_dir, int(t["keep_checkpoints"]))
            if self.val is not None and _due(step, int(t["eval_every"] or 0), self.total):
                summary = self.evaluate()
                self.log({"step": step, "eval": summary})
                if bar is not None:
                    o = summary["overall"]
                    bar.write(f"step {step}: val mIoU {fraction(o['mIoU'])} oIoU {fraction(o['oIoU'])}")
        barrier(self.dist)

    def run(self) -> nn.Module:
        """Train from the current step to `train.steps`; returns the (unwrapped) model."""
        t = self.t
        names = ("loss", "bce", "dice", "grad_norm")
        bar = None
        if self.dist.is_main and self.progress:
            from unilseg.io.progress import progress_bar

            bar = progress_bar(self.total, "step", desc="train", initial=self.step)
        sums, count, seen, tick = torch.zeros(len(names)), 0, 0, time.perf_counter()
        try:
            for batch in self.loader:
                out = train_step(self.net, batch, self.optimizer, self.scheduler, t, self.device)
                self.step += 1
                if not math.isfinite(float(out["loss"])):
                    raise UnilsegError(f"the loss became {float(out['loss'])} at step {self.step}; "
                                       "lower train.lr or train.clip_grad")
                sums += torch.stack([out[k].float().cpu() for k in names])
                count, seen = count + 1, seen + len(batch["tokens"])
                if _due(self.step, int(t["log_every"]), self.total):
                    means = mean_across(sums / count, self.dist).tolist()
                    speed = seen * self.dist.world_size / (time.perf_counter() - tick)
                    self.log({"step": self.step, **dict(zip(names, means)), "lr": out["lr"], "samples_per_s": speed})
                    if bar is not None:
                        bar.set_postfix(loss=f"{means[0]:.4f}", lr=f"{out['lr']:.2e}")
                    sums, count, seen, tick = torch.zeros(len(names)), 0, 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if _due(self.step, int(t["ckpt_every"] or 0), self.total) or _due(
                        self.step, int(t["eval_every"] or 0), self.total):
                    self.checkpoint_and_eval(bar)
            if self.dist.is_main:
                save_weights(self.run_dir / "model.pth", self.model, self.cfg)
        finally:
            if bar is not None:
                bar.close()
            cleanup(self.dist)
        return self.model


def _truncate_log(path: Path, step: int) -> None:
    """Drop the rows logged after `step` (a resumed run logs those steps again) and any half-written row."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)

    def keep(line: str) -> bool:
        try:
            return line.endswith("\n") and json.loads(line).get("step", 0) <= step
        except json.JSONDecodeError:
            return False

    kept = [line for line in lines if keep(line)]
    if len(kept) != len(lines):
        write_atomic(path, "".join(kept).encode("utf-8"))


def train(cfg: dict[str, Any], run_dir: str | Path, **kwargs: Any) -> nn.Module:
    """Train the config's model (see `Trainer` for the arguments); returns the trained model."""
    return Trainer(cfg, run_dir, **kwargs).run()
