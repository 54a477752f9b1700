"""Backends: the runtimes other than eager PyTorch, each a `predictor.Backend` over an `unilseg export` directory.

    onnx: ONNX Runtime over the image-encoder and prompt-decoder graphs (`backends/onnx.py`)
    aoti: AOTInductor packages, compiled ahead of time for this machine (`backends/aoti.py`)

The Predictor's pre- and post-processing is the same for all of them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.inference.backends.info import default_export_dir, read_info
from unilseg.io.paths import user_path
from unilseg.model.registry import DEFAULT_MODEL, MODELS

# runtime -> (module:class with .load(directory, info, device), the export format it runs)
BACKENDS = {
    "onnx": ("unilseg.inference.backends.onnx:OnnxBackend", "onnx"),
    "aoti": ("unilseg.inference.backends.aoti:AotiBackend", "aoti"),
}


def export_dir(runtime: str, weights: str | None, model: str | None, variant: str | None) -> Path:
    """The export directory `weights` names, else the cached export of `model` (default unilseg-20)."""
    fmt = BACKENDS[runtime][1]
    if weights:
        return user_path(weights)
    name = model or DEFAULT_MODEL
    path = default_export_dir(name, fmt, variant or "fp32")
    if not path.is_dir():
        flag = " --quantize int8" if variant == "int8" else (f" --precision {variant}" if variant not in
                                                             (None, "fp32") else "")
        raise UnilsegError("no {fmt} export of {name} ({variant}) at {path}; run `unilseg export --model {name} "
                           "--format {fmt}{flag}` first, or name an export with {weights} DIR", field="model",
                           fmt=fmt, name=name, variant=variant or "fp32", path=path, flag=flag)
    return path


def load_backend(runtime: str, weights: str | None = None, model: str | None = None, device: Any = "auto",
                 variant: str | None = None, threads: int | None = None) -> Any:
    """A Backend for `runtime` over the export `weights` names (a directory) or `model`'s cached export;
    threads: ONNX Runtime's intra-op threads (None: its default, all cores).

    With both, an export recorded as made from another registered model is refused: `model`
    None means whichever model the export holds."""
    if runtime not in BACKENDS:
        raise UnilsegError("unknown runtime {runtime}; use torch, {known}", field="runtime", runtime=repr(runtime),
                           known=", ".join(BACKENDS))
    directory = export_dir(runtime, weights, model, variant)
    target, fmt = BACKENDS[runtime]
    info = read_info(directory, fmt)
    if model is not None and info.model != model and info.model in MODELS:  # a file's stem: cannot tell
        raise UnilsegError("{field} {model}: {directory} holds an export of {recorded}; drop {field} to run it, "
                           "or pass an export of {model} to {weights}", field="model", model=model,
                           directory=directory, recorded=info.model)
    if variant not in (None, info.variant) and not (variant == "fp32" and weights):
        raise UnilsegError("{directory} is a {recorded} export, not {variant}; drop {field} or export that variant",
                           field="precision", directory=directory, recorded=info.variant, variant=variant)
    module, _, cls = target.partition(":")
    extra = {"threads": threads} if runtime == "onnx" else {}  # AOTInductor runs on torch's threads
    return getattr(importlib.import_module(module), cls).load(directory, info, device, **extra)
