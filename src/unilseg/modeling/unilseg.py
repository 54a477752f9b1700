"""The whole UniLSeg network: image + tokens -> mask logits at stride 4."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from unilseg.modeling.fusion import CrossModalFusion
from unilseg.modeling.pixel_decoder import PixelDecoder
from unilseg.modeling.query_decoder import QueryDecoder
from unilseg.modeling.swin import SwinTransformer
from unilseg.modeling.text_encoder import TextEncoder


class UniLSeg(nn.Module):
    """Swin encoder, CLIP text encoder, fusion at every scale, pixel and query decoders.

    Attribute names follow the official checkpoint: `backbone` is the CLIP text tower,
    `backbone_visual` the Swin encoder, `fusion`/`fusion_proj` the stride-32 fusion and
    `all_fusion_module[i]`/`all_fusion_proj[i]` the stride 4/8/16 ones.
    """

    def __init__(
        self, backbone: TextEncoder, backbone_visual: SwinTransformer, pixel_decoder: PixelDecoder,
        query_decoder: QueryDecoder, text_dim: int, fusion_heads: int = 8,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone_visual = backbone_visual
        dims: Sequence[int] = backbone_visual.num_features
        self.fusion = CrossModalFusion(dims[-1], fusion_heads)
        self.fusion_proj = nn.Linear(text_dim, dims[-1])
        self.all_fusion_module = nn.ModuleList(CrossModalFusion(d, fusion_heads) for d in dims[:-1])
        self.all_fusion_proj = nn.ModuleList(nn.Linear(text_dim, d) for d in dims[:-1])
        self.pixel_decoder = pixel_decoder
        self.query_decoder = query_decoder

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, L) -> word (B, L, D), state (B, D), pad_mask (B, L) True at padding (id 0)."""
        word, state = self.backbone(tokens)
        return word, state, tokens == 0

    def encode_image(self, img: torch.Tensor) -> list[torch.Tensor]:
        """img (B, 3, H, W) normalised RGB -> Swin maps at strides 4/8/16/32."""
        return self.backbone_visual(img)

    def fuse(
        self, visual: Sequence[torch.Tensor], word: torch.Tensor, pad_mask: torch.Tensor
    ) -> list[torch.Tensor]:
        """Each Swin map attends to the words; returns maps of the same shapes."""
        fused = [
            module(v, proj(word), pad_mask)
            for v, module, proj in zip(visual[:-1], self.all_fusion_module, self.all_fusion_proj)
        ]
        fused.append(self.fusion(visual[-1], self.fusion_proj(word), pad_mask))
        return fused

    def decode(
        self, fused: Sequence[torch.Tensor], word: torch.Tensor, state: torch.Tensor, pad_mask: torch.Tensor
    ) -> torch.Tensor:
        """Fused maps + text -> logits (B, 1, H/4, W/4)."""
        pixel = self.pixel_decoder(fused, word, pad_mask)  # (B, mask_dim, H/4, W/4)
        query = self.query_decoder(fused[-1], state)[-1]  # (B, 1, mask_dim)
        b, c, h, w = pixel.shape
        return torch.bmm(query, pixel.flatten(2)).view(b, 1, h, w)

    def forward(self, img: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """img (B, 3, H, W) normalised RGB, tokens (B, L) -> mask logits (B, 1, H/4, W/4)."""
        word, state, pad_mask = self.encode_text(tokens)
        fused = self.fuse(self.encode_image(img), word, pad_mask)
        return self.decode(fused, word, state, pad_mask)
