"""Seeded random weights in the official layout (the recipe in the reference SPEC).

The same (key, seed) always gives the same tensor, so a checkpoint written from the
official key list reproduces the weights behind the golden files (seed 0).
"""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import torch

from unilseg.modeling.swin import relative_position_index


def seeded_tensor(key: str, like: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1000003 + zlib.crc32(key.encode())) & 0x7FFFFFFF)
    shape = like.shape
    if not like.is_floating_point():
        return like.clone()
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if any(s in key for s in ("relative_position_bias_table", "positional_embedding", "class_embedding")):
        return torch.randn(shape, generator=g) * 0.02
    if "logit_scale" in key:
        return torch.full(shape, math.log(1 / 0.07))
    if like.ndim == 1:
        if key.endswith(".weight"):
            return 1.0 + 0.1 * torch.randn(shape, generator=g)
        return 0.02 * torch.randn(shape, generator=g)
    if like.ndim == 0:
        return like.clone()
    return torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))


def skeleton_from_keys_tsv(path: Path) -> dict[str, torch.Tensor]:
    """Zero tensors of the listed shapes (un-prefixed keys), index buffers filled in."""
    sd = {}
    for line in Path(path).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        key = key.removeprefix("module.")
        dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
        if key.endswith("relative_position_index"):
            sd[key] = relative_position_index(round(math.sqrt(dims[0])))
        else:
            sd[key] = torch.zeros(dims, dtype=getattr(torch, dtype))
    return sd


def official_seeded_checkpoint(keys_tsv: Path, seed: int, out: Path) -> Path:
    """Write {'state_dict': {'module.' + key: seeded tensor}} for every key in keys_tsv."""
    sd = {k: seeded_tensor(k, v, seed) for k, v in skeleton_from_keys_tsv(keys_tsv).items()}
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, out)
    return out
