"""The one place that turns a config into a wired UniLSeg network."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_weights, read_weights
from .config import apply_overrides, load_config, resolve_path
from .errors import CheckpointError, UnilsegError
from .modeling.pixel_decoder import PixelDecoder
from .modeling.query_decoder import QueryDecoder
from .modeling.swin import SwinTransformer
from .modeling.text_encoder import TextEncoder
from .modeling.unilseg import UniLSeg
from .registry import DEFAULT_MODEL, MODELS, cache_dir, cached_weights, config_path, download_command, get_spec

DEFAULT_CONFIG = "configs/unilseg20.yaml"


def as_config(config: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    """A config dict from a dict, a YAML path, or None (the UniLSeg-20 config)."""
    if config is None:
        config = DEFAULT_CONFIG
    return config if isinstance(config, dict) else load_config(config)


def build_model(config: dict[str, Any] | str | Path | None = None) -> UniLSeg:
    """Build an (initialised, untrained) UniLSeg from a config dict or YAML path."""
    m = as_config(config)["model"]
    swin = SwinTransformer(**m["swin"])
    text = TextEncoder(**m["text"])
    pd = m["pixel_decoder"]
    qd = m["query_decoder"]
    pixel_decoder = PixelDecoder(in_channels=swin.num_features, **pd)
    query_decoder = QueryDecoder(visual_dim=swin.num_features[-1], text_dim=m["text"]["embed_dim"], **qd)
    return UniLSeg(
        text, swin, pixel_decoder, query_decoder, text_dim=m["text"]["width"], fusion_heads=m["fusion_heads"]
    )


def resolve_model(
    weights: str | Path | None = None, config: dict[str, Any] | str | Path | None = None
) -> tuple[Path, dict[str, Any] | None]:
    """Find the weight file and config to use -> (path, config or None = "take the file's").

    weights: a registered model name (see `unilseg.registry`), a file path, or None for the
    model the config names (default: unilseg-20). config: dict, YAML path or None; None
    means the registry's config for a name, else the config stored in a `.safetensors`.
    """
    if weights is None or (isinstance(weights, str) and weights in MODELS):
        if weights is None:
            cfg = as_config(config)
            name = cfg.get("name", DEFAULT_MODEL)
        else:
            name = weights
            cfg = as_config(config if config is not None else config_path(get_spec(name)))
        path = _registered_weights(name, cfg)
    else:
        path = resolve_path(weights)
        if not path.exists() and isinstance(weights, str) and not Path(weights).suffix and "/" not in weights:
            raise UnilsegError(
                f"unknown model {weights!r} and no such file; known models: {', '.join(sorted(MODELS))}"
            )
        cfg = None if config is None else as_config(config)
    return path, cfg


def _registered_weights(name: str, cfg: dict[str, Any]) -> Path:
    if name not in MODELS:
        if cfg.get("weights"):
            return resolve_path(cfg["weights"])
        raise CheckpointError(f"config names model {name!r}, which is not registered and gives no `weights`")
    spec = get_spec(name)
    path = cached_weights(spec)
    if path is None:
        raise CheckpointError(
            f"weights for {name} not found in {cache_dir()} ({spec.filename}); run `{download_command(name)}` "
            f"(or add --download), or get the file from {spec.source}"
        )
    return path


def load_model(
    weights: str | Path | None = None,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
    opts: Sequence[str] = (),
) -> UniLSeg:
    """Build the network without random init, load weights into it, return it in eval mode.

    weights: registered name (`"unilseg-20"`), `.pth` (official layout) or `.safetensors`
    path, or None for the config's model. See `resolve_model` for how config is chosen.
    The tensors are taken over (`assign=True`), not copied: a memory-mapped file stays mapped.
    """
    path, cfg = resolve_model(weights, config)
    state_dict, stored_cfg = read_weights(path)
    if cfg is None:
        if stored_cfg is None and path.suffix == ".safetensors":
            raise CheckpointError(
                f"{path} has no unilseg config in its metadata; pass --config, or write the file with "
                "`python -m unilseg convert IN.pth OUT.safetensors`"
            )
        cfg = stored_cfg if stored_cfg is not None else as_config(None)
    if opts:
        cfg = apply_overrides(cfg, opts)
    with torch.device("meta"):
        model = build_model(cfg)
    load_weights(model, state_dict, source=str(path))
    model.config = cfg
    return model.eval().to(device)
