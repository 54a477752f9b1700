"""The network cut at the Predictor's seams, as modules with tensor-only signatures.

Exporters (ONNX, AOTInductor) and `torch.compile` take these rather than the whole
UniLSeg, so Swin runs once per image and the rest once per (image, instruction) pair:

    ImageEncoderGraph   image (B, 3, S, S) -> feat4, feat8, feat16, feat32 (B, C_i, S/4/2^i, S/4/2^i)
    MaskDecoderGraph    feat4..feat32 (P, ...) + word (P, L, D), state (P, D), pad_mask (P, L)
                        -> logits (P, 1, S/4, S/4): fusion and the two decoders
    PromptDecoderGraph  feat4..feat32 (P, ...) + tokens (P, L) int64 -> logits: the text
                        encoder followed by MaskDecoderGraph
"""
from __future__ import annotations

import torch
from torch import nn

LEVELS = ("feat4", "feat8", "feat16", "feat32")
# what every exporter records in unilseg-export.json: each graph's inputs and its dynamic axis
INPUTS = {"image_encoder": ["image"], "prompt_decoder": [*LEVELS, "tokens"]}
DYNAMIC_AXES = {"image_encoder": "batch", "prompt_decoder": "pairs"}


class ImageEncoderGraph(nn.Module):
    """image (B, 3, S, S) -> the 4 Swin maps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.encode_image(image))


class MaskDecoderGraph(nn.Module):
    """4 Swin maps (P, ...) + encoded text (P, ...) -> logits (P, 1, S/4, S/4) float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feat4: torch.Tensor, feat8: torch.Tensor, feat16: torch.Tensor, feat32: torch.Tensor,
                word: torch.Tensor, state: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        return decode_pairs(self.model, [feat4, feat8, feat16, feat32], word, state, pad_mask)


class PromptDecoderGraph(nn.Module):
    """4 Swin maps (P, ...) + tokens (P, L) -> logits (P, 1, S/4, S/4): text encoder, fusion, decoders."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feat4: torch.Tensor, feat8: torch.Tensor, feat16: torch.Tensor, feat32: torch.Tensor,
                tokens: torch.Tensor) -> torch.Tensor:
        return decode_pairs(self.model, [feat4, feat8, feat16, feat32], *self.model.encode_text(tokens))


def decode_pairs(model: nn.Module, features: list[torch.Tensor], word: torch.Tensor, state: torch.Tensor,
                 pad_mask: torch.Tensor) -> torch.Tensor:
    """Fusion then pixel and query decoders -> logits (P, 1, S/4, S/4) float32."""
    fused = model.fuse(features, word, pad_mask)
    return model.decode(fused, word, state, pad_mask).float()


def example_inputs(
    model: nn.Module, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Inputs to trace the two graphs with -> (image (2, 3, S, S), Swin maps of those 2 images + tokens (2, L))."""
    from unilseg.model.tokenizer import tokenize

    spec = model.spec
    image = torch.zeros(2, 3, spec.size, spec.size, device=device)
    tokens = tokenize(["the left cat", "sky"], spec.context_length).to(device)
    with torch.no_grad():
        feats = tuple(t.contiguous() for t in model.encode_image(image))
    return image, (*feats, tokens)
