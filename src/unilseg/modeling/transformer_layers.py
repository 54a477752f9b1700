"""Shared pieces of the decoders: conv-BN-ReLU units and tensor layout helpers."""
from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm2d -> ReLU; keys `0.*`, `1.*`."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def to_sequence(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (H*W, B, C), the layout nn.MultiheadAttention expects."""
    return x.flatten(2).permute(2, 0, 1)


def to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(H*W, B, C) -> (B, C, H, W)."""
    return x.permute(1, 2, 0).reshape(x.shape[1], x.shape[2], h, w)


def padding_bias(pad_mask: torch.Tensor, heads: int, queries: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool, True at padding -> (B*heads, queries, L) additive attn_mask (0 or -inf).

    The same masking as nn.MultiheadAttention's key_padding_mask, but that argument's shape
    check imports torch.fx and sympy on first use (half a second of every cold start).
    """
    b, n = pad_mask.shape
    bias = torch.zeros(b, n, dtype=dtype, device=pad_mask.device).masked_fill_(pad_mask, float("-inf"))
    return bias[:, None, None, :].expand(b, heads, queries, n).reshape(b * heads, queries, n)
