"""The one place that turns a config into a wired UniLSeg network."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_weights, read_checkpoint
from .config import load_config, resolve_path
from .modeling.pixel_decoder import PixelDecoder
from .modeling.query_decoder import QueryDecoder
from .modeling.swin import SwinTransformer
from .modeling.text_encoder import TextEncoder
from .modeling.unilseg import UniLSeg

DEFAULT_CONFIG = "configs/unilseg20.yaml"


def _as_config(config: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    if config is None:
        config = DEFAULT_CONFIG
    return config if isinstance(config, dict) else load_config(config)


def build_model(config: dict[str, Any] | str | Path | None = None) -> UniLSeg:
    """Build an (initialised, untrained) UniLSeg from a config dict or YAML path."""
    m = _as_config(config)["model"]
    swin = SwinTransformer(**m["swin"])
    text = TextEncoder(**m["text"])
    pd = m["pixel_decoder"]
    qd = m["query_decoder"]
    pixel_decoder = PixelDecoder(in_channels=swin.num_features, **pd)
    query_decoder = QueryDecoder(visual_dim=swin.num_features[-1], text_dim=m["text"]["embed_dim"], **qd)
    return UniLSeg(
        text, swin, pixel_decoder, query_decoder, text_dim=m["text"]["width"], fusion_heads=m["fusion_heads"]
    )


def load_model(
    weights: str | Path | None = None,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
) -> UniLSeg:
    """Build the network without random init and load a checkpoint into it (eval mode).

    weights: a `.pth` in the official layout; defaults to the config's `weights` entry.
    """
    cfg = _as_config(config)
    path = resolve_path(weights if weights is not None else cfg["weights"])
    state_dict = read_checkpoint(path)
    with torch.device("meta"):
        model = build_model(cfg)
    load_weights(model, state_dict, source=str(path))
    model.config = cfg
    return model.eval().to(device)
