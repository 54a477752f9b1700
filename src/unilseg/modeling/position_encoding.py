"""Sine position embeddings (DETR style) for image maps and word sequences."""
from __future__ import annotations

import math

import torch


def _frequencies(num_pos_feats: int, temperature: float, device, dtype) -> torch.Tensor:
    """dim_t[i] = temperature ** (2 * floor(i / 2) / num_pos_feats), shape (num_pos_feats,)."""
    i = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    return (temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_pos_feats)).to(dtype)


def _sin_cos(pos: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd channels, interleaved."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position_2d(
    batch: int, channels: int, height: int, width: int, device=None, dtype=torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalised 2-D sine embedding of an unmasked map.

    Returns (B, C, H, W): channels [0, C/2) encode y, [C/2, C) encode x. Position y in
    1..H is embedded as (y - 0.5) / (H + 1e-6) * 2*pi (likewise x with W).
    """
    num_pos_feats = channels // 2
    scale, eps = 2 * math.pi, 1e-6
    y = torch.arange(1, height + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, width + 1, device=device, dtype=torch.float32)
    y = (y - 0.5) / (height + eps) * scale
    x = (x - 0.5) / (width + eps) * scale
    dim_t = _frequencies(num_pos_feats, temperature, device, torch.float32)
    pos_y = _sin_cos(y[:, None] / dim_t)  # (H, F)
    pos_x = _sin_cos(x[:, None] / dim_t)  # (W, F)
    pos = torch.cat(
        (pos_y[:, None, :].expand(height, width, num_pos_feats),
         pos_x[None, :, :].expand(height, width, num_pos_feats)),
        dim=-1,
    )  # (H, W, C)
    return pos.permute(2, 0, 1).unsqueeze(0).expand(batch, -1, -1, -1).to(dtype)


def sine_position_1d(
    length: int, batch: int, channels: int, device=None, dtype=torch.float32,
    temperature: float = 10000.0,
) -> torch.Tensor:
    """Normalised 1-D sine embedding over every slot (padding included).

    Returns (L, B, C); position p in 1..L is embedded as p / (L + 1e-6) * 2*pi.
    """
    p = torch.arange(1, length + 1, device=device, dtype=torch.float32)
    p = p / (length + 1e-6) * (2 * math.pi)
    pos = _sin_cos(p[:, None] / _frequencies(channels, temperature, device, torch.float32))
    return pos[:, None, :].expand(length, batch, channels).to(dtype)
