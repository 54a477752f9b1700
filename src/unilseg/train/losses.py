"""Segmentation losses on mask logits: binary cross-entropy + Dice."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_target(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) float mask in [0, 1] -> (B, 1, h, w): each pixel's covered fraction (area resampling)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask, size=size, mode="area")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-sample soft Dice loss, (B, 1, h, w) logits and target -> (B,)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    inter = (prob * target).sum(1)
    return 1 - (2 * inter + smooth) / (prob.sum(1) + target.sum(1) + smooth)


def bce_dice_loss(
    logits: torch.Tensor, mask: torch.Tensor, bce_weight: float = 1.0, dice_weight: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """logits (B, 1, h, w); mask (B, 1, H, W) in [0, 1], resized to the logits' size.

    Returns the weighted sum (a scalar, batch mean) and its detached parts {"bce", "dice"}.
    """
    logits = logits.float()
    target = resize_target(mask.float(), tuple(logits.shape[-2:]))
    bce = F.binary_cross_entropy_with_logits(logits, target)
    dice = dice_loss(logits, target).mean()
    return bce_weight * bce + dice_weight * dice, {"bce": bce.detach(), "dice": dice.detach()}
