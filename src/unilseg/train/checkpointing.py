"""Training checkpoints: model, optimiser, scheduler, step and RNG state, loadable with weights_only=True.

The model's weights sit under `state_dict` with the official key names, so a training
checkpoint is also a weights file for `load_model` / `unilseg eval --weights`.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unilseg.errors import CheckpointError
from unilseg.io.writers import write_atomic
from unilseg.model.checkpoint import check_torch_file

FORMAT = "unilseg-train-1"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
    config: dict[str, Any],
) -> None:
    """Write atomically (a crash mid-write leaves the previous checkpoint intact)."""
    buf = io.BytesIO()
    torch.save({
        "format": FORMAT, "step": step, "config": config, "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
    }, buf)
    write_atomic(path, buf.getvalue())


def save_weights(path: str | Path, model: nn.Module, config: dict[str, Any] | None = None) -> None:
    """Weights as `{'state_dict': ..., 'config': ...}`: `load_model` and `convert` need no --config for it."""
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), **({"config": config} if config is not None else {})}, buf)
    write_atomic(path, buf.getvalue())


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a training checkpoint; give one of its stepNNNNNNN.pt "
                              f"files, or --out {path} --resume for its latest")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; give an existing stepNNNNNNN.pt from a run folder, "
                              "or --resume alone for the latest in --out")
    check_torch_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the same user-level problem
        raise CheckpointError(f"cannot read training checkpoint {path} ({e.__class__.__name__})") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a unilseg training checkpoint (no optimiser/step state to resume)")
    return ckpt


def restore(ckpt: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> int:
    """Load every state back; returns the number of completed steps."""
    model.load_state_dict(ckpt["state_dict"], strict=True)
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    return int(ckpt["step"])


def checkpoint_name(step: int) -> str:
    return f"step{step:07d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in `run_dir`, or None (also when `run_dir` does not exist)."""
    found = []
    for p in Path(run_dir).glob("step*.pt"):
        m = re.fullmatch(r"step(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None
