"""Top-down pixel decoder with vision-language attention at every scale."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unilseg.modeling.position_encoding import sine_position_1d, sine_position_2d
from unilseg.modeling.transformer_layers import conv_bn_relu, padding_bias, to_map, to_sequence


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class VisionLanguageBlock(nn.Module):
    """Post-norm block: joint (pixels + words) self-attention, cross-attention to words, FFN.

    Self-attention runs on the map shrunk by `sr` (queries/keys are map + pos2d, values the
    map) with the raw word vectors appended as extra tokens; only the pixel outputs are
    kept, resized back and added. Then the map attends to the words (keys carry the 1-D
    sine embedding), then a ReLU FFN; each step is add + LayerNorm.
    """

    def __init__(self, dim: int, heads: int, ffn_dim: int, sr: int) -> None:
        super().__init__()
        self.sr = sr
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.multihead_attn = nn.MultiheadAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, words: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); words: (B, L, C); pad_mask: (B, L) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        pos = sine_position_2d(b, c, h, w, device=x.device, dtype=x.dtype)
        size = (int(h / self.sr), int(w / self.sr))
        qk_small = to_sequence(_resize(x + pos, size))
        v_small = to_sequence(_resize(x, size))
        word_seq = words.transpose(0, 1)  # (L, B, C)
        n = qk_small.shape[0]
        qk = torch.cat((qk_small, word_seq))
        v = torch.cat((v_small, word_seq))
        mask = torch.cat((pad_mask.new_zeros(b, n), pad_mask), dim=1)
        bias = padding_bias(mask, self.self_attn.num_heads, qk.shape[0], x.dtype)
        attended = self.self_attn(qk, qk, v, attn_mask=bias, need_weights=False)[0][:n]
        attended = _resize(to_map(attended, *size), (h, w))

        seq = self.norm1(to_sequence(x + attended))
        pos_seq = to_sequence(pos)
        word_pos = sine_position_1d(words.shape[1], b, c, device=x.device, dtype=x.dtype)
        bias = padding_bias(pad_mask, self.multihead_attn.num_heads, seq.shape[0], x.dtype)
        cross = self.multihead_attn(seq + pos_seq, word_seq + word_pos, word_seq, attn_mask=bias, need_weights=False)[0]
        seq = self.norm2(seq + cross)
        seq = self.norm3(seq + self.linear2(F.relu(self.linear1(seq))))
        return to_map(seq, h, w)


class PixelDecoder(nn.Module):
    """Fused maps at strides 4/8/16/32 -> pixel embedding (B, mask_dim, H/4, W/4).

    Level k (1..4 for strides 4..32) has `adapter_k` (1x1 conv-BN-ReLU to conv_dim),
    `cross_attn_k` (VisionLanguageBlock with shrink factor sr[k-1]) and `layer_k`
    (3x3 conv-BN-ReLU). Processing runs top-down from stride 32, adding the upsampled
    coarser output before `layer_k`.
    """

    def __init__(
        self, in_channels: Sequence[int] = (128, 256, 512, 1024), conv_dim: int = 512, mask_dim: int = 256,
        heads: int = 8, ffn_dim: int = 2048, sr_ratios: Sequence[int] = (8, 4, 2, 1),
    ) -> None:
        super().__init__()
        self.num_levels = len(in_channels)
        for k, (ch, sr) in enumerate(zip(in_channels, sr_ratios), start=1):
            self.add_module(f"adapter_{k}", conv_bn_relu(ch, conv_dim, 1))
            self.add_module(f"cross_attn_{k}", VisionLanguageBlock(conv_dim, heads, ffn_dim, sr))
            self.add_module(f"layer_{k}", conv_bn_relu(conv_dim, conv_dim, 3))
        self.mask_features = conv_bn_relu(conv_dim, mask_dim, 3)

    def forward(self, features: Sequence[torch.Tensor], words: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        """features: fine-to-coarse NCHW maps; words: (B, L, conv_dim); pad_mask: (B, L)."""
        y = None
        for k in range(self.num_levels, 0, -1):
            x = getattr(self, f"adapter_{k}")(features[k - 1])
            x = getattr(self, f"cross_attn_{k}")(x, words, pad_mask)
            if y is not None:
                x = x + _resize(y, x.shape[-2:])
            y = getattr(self, f"layer_{k}")(x)
        return self.mask_features(y)
