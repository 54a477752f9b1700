"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base lr after `step` optimiser steps: (step+1)/warmup during warm-up,
    then cosine from 1 down to `min_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_ratio: float = 0.0
) -> LambdaLR:
    # A plain function (not a partial or a lambda object with state) keeps the scheduler's
    # state_dict free of callables, so checkpoints load with weights_only=True.
    def factor(step: int) -> float:
        return warmup_cosine(step, total_steps, warmup_steps, min_ratio)

    return LambdaLR(optimizer, factor)
