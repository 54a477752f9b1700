"""Safe, strict loading of UniLSeg weights.

Official checkpoints are `{'state_dict': {'module.<key>': tensor}}` pickles; they are
read with `torch.load(weights_only=True)`, which refuses anything but tensors and plain
containers. CLIP's image tower (`backbone.visual.*`) is stored but never run: it is
dropped on load.
"""
from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import CheckpointError

UNUSED_PREFIXES = ("backbone.visual.",)  # CLIP's image tower; note the dot (Swin is backbone_visual)


def remap_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's `module.` prefix and drop keys the model never runs."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith(UNUSED_PREFIXES):
            out[key] = value
    return out


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` checkpoint safely -> flat {key: tensor} with official key names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"weights file not found: {path}; download UniLSeg20_no_finetune.pth (see weights/README.md) "
            "or pass --weights PATH"
        )
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes would add lines to our one-line error
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors, which could run code "
            "(weights_only=True); use a plain state-dict checkpoint"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or corrupt ({_first_line(e)}); download it again"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a UniLSeg checkpoint: expected a dict of tensors under 'state_dict'")
    return dict(obj)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless keys and shapes match the model exactly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match this model ({'; '.join(problems)}); "
            "check that --weights and --config name the same model"
        )


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Strictly load official-layout weights into `model`, taking the tensors over (assign=True)."""
    state_dict = remap_official_keys(state_dict)
    check_state_dict(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


__all__ = ["read_checkpoint", "remap_official_keys", "check_state_dict", "load_weights"]
