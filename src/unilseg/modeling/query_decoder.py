"""Query decoder: one text-conditioned query attends to the coarsest fused map.

The transformer is DETR's decoder (post-norm layers, shared final LayerNorm applied to
every layer's output) with no encoder layers; the sentence state, projected to d_model,
is the query's position embedding and the query itself starts at zero.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unilseg.modeling.position_encoding import sine_position_2d
from unilseg.modeling.transformer_layers import conv_bn_relu, to_sequence


class DecoderLayer(nn.Module):
    """DETR post-norm decoder layer (self-attn, cross-attn, ReLU FFN; add + LayerNorm each)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, heads)
        self.multihead_attn = nn.MultiheadAttention(d_model, heads)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor
    ) -> torch.Tensor:
        """tgt, query_pos: (Q, B, D); memory, pos: (HW, B, D) -> (Q, B, D)."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])
        tgt = self.norm2(tgt + self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0])
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    """Stack of DecoderLayers; returns norm(output) after every layer, (num_layers, Q, B, D)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ffn_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos) -> torch.Tensor:
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)


class QueryTransformer(nn.Module):
    """Holds the decoder under the name the checkpoint uses (`query_transformer.decoder`)."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, num_layers: int) -> None:
        super().__init__()
        self.decoder = TransformerDecoder(d_model, heads, ffn_dim, num_layers)


class QueryDecoder(nn.Module):
    """(fused stride-32 map, sentence state) -> per-layer query embeddings (N, B, 1, D)."""

    def __init__(
        self, visual_dim: int = 1024, text_dim: int = 512, d_model: int = 256, heads: int = 8,
        ffn_dim: int = 2048, num_layers: int = 6,
    ) -> None:
        super().__init__()
        self.visual_proj = conv_bn_relu(visual_dim, d_model, 3)
        self.text_proj = nn.Sequential(
            nn.Linear(text_dim, d_model, bias=False), nn.BatchNorm1d(d_model), nn.ReLU(inplace=True)
        )
        self.query_transformer = QueryTransformer(d_model, heads, ffn_dim, num_layers)

    def forward(self, visual: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """visual: (B, visual_dim, H, W); state: (B, text_dim) -> (num_layers, B, 1, d_model)."""
        v = self.visual_proj(visual)
        b, c, h, w = v.shape
        memory = to_sequence(v)
        pos = to_sequence(sine_position_2d(b, c, h, w, device=v.device, dtype=v.dtype))
        query_pos = self.text_proj(state).unsqueeze(0)  # (1, B, D)
        tgt = torch.zeros_like(query_pos)
        return self.query_transformer.decoder(tgt, memory, pos, query_pos).transpose(1, 2)
