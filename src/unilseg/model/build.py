"""The one place that turns a config into a wired UniLSeg network, and names into weights."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from unilseg.errors import CheckpointError, UnilsegError
from unilseg.io.paths import user_path
from unilseg.model.checkpoint import load_weights, read_weights
from unilseg.model.config import DEFAULT_CONFIG, apply_overrides, load_config
from unilseg.model.registry import DEFAULT_MODEL, MODELS, download_command, find_weights, get_spec, search_dirs
from unilseg.model.spec import InferenceSpec
from unilseg.modeling.pixel_decoder import PixelDecoder
from unilseg.modeling.query_decoder import QueryDecoder
from unilseg.modeling.swin import SwinTransformer
from unilseg.modeling.text_encoder import TextEncoder
from unilseg.modeling.unilseg import UniLSeg


def as_config(config: dict[str, Any] | str | Path | None) -> dict[str, Any]:
    """A config dict from a dict, a YAML path / packaged config name, or None (the UniLSeg-20 config)."""
    if config is None:
        config = DEFAULT_CONFIG
    return config if isinstance(config, dict) else load_config(config)


def build_model(config: dict[str, Any] | str | Path | None = None) -> UniLSeg:
    """Build an (initialised, untrained) UniLSeg from a config; `model.config` and `model.spec` are attached."""
    cfg = as_config(config)
    try:
        return _build(cfg)
    except UnilsegError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError) as e:
        raise UnilsegError(f"the config does not build a network ({type(e).__name__}: {e}); check the keys and "
                           "types of its `model` and `input` sections (--config, --opts)") from e


def _build(cfg: dict[str, Any]) -> UniLSeg:
    m = cfg["model"]
    swin = SwinTransformer(**m["swin"])
    text = TextEncoder(**m["text"])
    pd = m["pixel_decoder"]
    qd = m["query_decoder"]
    pixel_decoder = PixelDecoder(in_channels=swin.num_features, **pd)
    query_decoder = QueryDecoder(visual_dim=swin.num_features[-1], text_dim=m["text"]["embed_dim"], **qd)
    model = UniLSeg(
        text, swin, pixel_decoder, query_decoder, text_dim=m["text"]["width"], fusion_heads=m["fusion_heads"]
    )
    model.config = cfg
    model.spec = InferenceSpec.from_config(cfg)
    return model


def resolve_model(
    weights: str | Path | None = None, config: dict[str, Any] | str | Path | None = None, model: str | None = None
) -> tuple[Path, dict[str, Any] | None]:
    """Find the weight file and config to use -> (path, config or None = "take the file's").

    model: a registered name (see `unilseg.model.registry`): its config, and its weights unless
    `weights` names a file. weights: a file path (or, for short, a registered name). With
    neither, the config's model (default: unilseg-20). config: dict, YAML path or None;
    None means the model's registered config, else the config stored in the weight file.
    """
    if model is None and isinstance(weights, str) and weights in MODELS:
        model, weights = weights, None
    if model is not None:
        spec = get_spec(model)
        cfg = as_config(config if config is not None else spec.config)
        return (user_path(weights) if weights is not None else _registered_weights(spec.name)), cfg
    if weights is None:
        cfg = as_config(config)
        if cfg.get("weights"):
            return user_path(cfg["weights"]), cfg
        name = cfg.get("name", DEFAULT_MODEL)
        if name not in MODELS:
            raise CheckpointError(f"config names model {name!r}, which is not registered and gives no `weights`")
        return _registered_weights(name), cfg
    path = user_path(weights)
    if not path.exists() and isinstance(weights, str) and not path.suffix and "/" not in weights:
        raise UnilsegError(f"unknown model {weights!r} and no such file; known models: {', '.join(sorted(MODELS))}")
    return path, None if config is None else as_config(config)


def _registered_weights(name: str) -> Path:
    spec = get_spec(name)
    found = find_weights(spec)
    if found is None:
        places = ", ".join(str(d) for _, d in search_dirs(spec))
        raise CheckpointError(
            f"weights for {name} ({spec.filename}) not found in {places}; run `{download_command(name)}` "
            f"(or add --download), or get the file from {spec.source}"
        )
    return found[0]


def load_model(
    weights: str | Path | None = None,
    config: dict[str, Any] | str | Path | None = None,
    device: str | torch.device = "cpu",
    opts: Sequence[str] = (),
    model: str | None = None,
) -> UniLSeg:
    """Build the network without random init, load weights into it, return it in eval mode.

    See `resolve_model` for how weights and config are chosen. The tensors are taken over
    (`assign=True`), not copied: a memory-mapped file stays mapped.
    """
    path, cfg = resolve_model(weights, config, model)
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
        net = build_model(cfg)
    load_weights(net, state_dict, source=str(path))
    return net.eval().to(device)
