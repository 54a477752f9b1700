"""`torch.compile` for long runs: the image encoder and the fusion + decoders, compiled apart.

The two parts run at different batch sizes (images per Swin batch, (image, text) pairs per
decoder batch), so each is its own compiled graph. Their batch dimension is marked dynamic
once it exceeds 1: a part compiles at most twice in a process (batch 1, where dynamo
specialises the size, and one graph for every larger batch), however many items follow.
The inductor cache lives in the user cache (`cache_dir()/inductor`) unless
TORCHINDUCTOR_CACHE_DIR is set, so a second process compiles from the cache in seconds.

Written to work on CUDA too (the same calls; inductor emits Triton there); tested on CPU only.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from torch import nn

from unilseg.inference.backends.graphs import ImageEncoderGraph, MaskDecoderGraph


def use_inductor_cache() -> str:
    """Point inductor's cache at the user cache unless the user chose one -> the directory used.

    Also quiets torch's "No CUDA runtime is found" notice, printed when inductor builds CPU code.
    """
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        from unilseg.model.registry import cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _batched(t: torch.Tensor) -> torch.Tensor:
    """Contiguous, with dim 0 marked dynamic past batch 1.

    Contiguous because dynamo guards on strides: a text batch against one image arrives as
    an expanded view (batch stride 0), pairs of several images as a stacked copy, and each
    layout would otherwise be a graph of its own.
    """
    t = t.contiguous()
    if t.shape[0] > 1:
        torch._dynamo.mark_dynamic(t, 0)
    return t


class CompiledParts:
    """Compiled `encode_image` and fusion + decoders of one network (compiled lazily, on first call)."""

    def __init__(self, model: nn.Module, mode: str | None = None) -> None:
        use_inductor_cache()
        self.encoder = torch.compile(ImageEncoderGraph(model), mode=mode)
        self.decoder = torch.compile(MaskDecoderGraph(model), mode=mode)

    def encode_image(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, S, S) -> 4 Swin maps (B, C_i, S/4/2^i, S/4/2^i)."""
        return list(self.encoder(_batched(x)))

    def decode(self, features: Sequence[torch.Tensor], text: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """P pairs' Swin maps + (word, state, pad_mask) -> logits (P, 1, S/4, S/4) float32."""
        return self.decoder(*(_batched(f) for f in features), *(_batched(t) for t in text))
