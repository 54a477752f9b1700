"""Text-into-image fusion, applied to every Swin scale."""
from __future__ import annotations

import torch
from torch import nn

from unilseg.modeling.position_encoding import sine_position_2d
from unilseg.modeling.transformer_layers import padding_bias, to_map, to_sequence


class CrossModalFusion(nn.Module):
    """out = v + MHA(query = v + pos2d(v), key = value = words); no norm, no FFN.

    The word features are projected to the map's width by a separate Linear owned by
    the parent (`fusion_proj` / `all_fusion_proj[i]` in the checkpoint).
    """

    def __init__(self, dim: int, heads: int = 8) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads)

    def forward(self, visual: torch.Tensor, words: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """visual: (B, C, H, W); words: (B, L, C) projected; pad_mask: (B, L) True at padding."""
        b, c, h, w = visual.shape
        pos = sine_position_2d(b, c, h, w, device=visual.device, dtype=visual.dtype)
        v = to_sequence(visual)
        words = words.transpose(0, 1)  # (L, B, C)
        bias = padding_bias(pad_mask, self.multihead_attn.num_heads, v.shape[0], v.dtype)
        out = self.multihead_attn(v + to_sequence(pos), words, words, attn_mask=bias, need_weights=False)[0]
        return to_map(v + out, h, w)
