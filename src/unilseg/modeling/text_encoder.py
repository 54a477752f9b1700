"""CLIP text tower (ViT-B/16's): tokens -> per-word features and a sentence state."""
from __future__ import annotations

import torch
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * mlp_ratio))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * mlp_ratio, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """x: (L, B, D); attn_mask: (L, L) additive float mask."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, attn_mask=attn_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class TextTransformer(nn.Module):
    """A stack of ResidualAttentionBlocks under the name CLIP gives it (`resblocks`)."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class TextEncoder(nn.Module):
    """CLIP's text tower with causal attention; the image tower is not built.

    The stored positional embedding has `max_positions` rows; a sequence of L tokens
    uses the first L. `logit_scale` is kept only so the official checkpoint loads.
    """

    def __init__(
        self, vocab_size: int = 49408, width: int = 512, layers: int = 12, heads: int = 8,
        max_positions: int = 77, embed_dim: int = 512,
    ) -> None:
        super().__init__()
        # Built on the meta device (to load weights into), nn.Embedding's own normal_ init would
        # import torch._dynamo, a second of start-up; given storage, it skips that init.
        on_meta = torch.empty(0).is_meta
        self.token_embedding = nn.Embedding(
            vocab_size, width, _weight=torch.empty(vocab_size, width) if on_meta else None
        )
        self.positional_embedding = nn.Parameter(torch.empty(max_positions, width))
        self.transformer = TextTransformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.positional_embedding.is_meta:
            return
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.text_projection.shape[0] ** -0.5)
        with torch.no_grad():
            self.logit_scale.fill_(2.6592)  # log(1 / 0.07)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: (B, L) int64 -> word (B, L, width), state (B, embed_dim).

        `state` is the final-normed feature at the EOT token (the largest id) times
        `text_projection`.
        """
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        causal = torch.full((length, length), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        x = self.transformer(x.transpose(0, 1), causal).transpose(0, 1)
        word = self.ln_final(x)
        eot = word[torch.arange(word.shape[0], device=word.device), tokens.argmax(dim=-1)]
        return word, eot @ self.text_projection
