"""Runtimes other than eager PyTorch, each a `predictor.Backend` over an `unilseg export` directory.

    onnx: ONNX Runtime over the image-encoder and prompt-decoder graphs (`runtime/onnx.py`)
    aoti: AOTInductor packages, compiled ahead of time for this machine (`runtime/aoti.py`)

The Predictor's pre- and post-processing is the same for all of them.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.export import default_export_dir, read_info
from unilseg.io.paths import user_path

# runtime -> (module:class with .load(directory, info, device), the export format it runs)
BACKENDS = {
    "onnx": ("unilseg.inference.backends.onnx:OnnxBackend", "onnx"),
    "aoti": ("unilseg.inference.backends.aoti:AotiBackend", "aoti"),
}


def export_dir(runtime: str, weights: str | None, model: str | None, variant: str | None) -> Path:
    """The export directory --weights names, else the cached export of --model (default unilseg-20)."""
    fmt = BACKENDS[runtime][1]
    if weights:
        return user_path(weights)
    from unilseg.model.registry import DEFAULT_MODEL

    name = model or DEFAULT_MODEL
    path = default_export_dir(name, fmt, variant or "fp32")
    if not path.is_dir():
        flag = " --quantize int8" if variant == "int8" else (f" --precision {variant}" if variant not in
                                                             (None, "fp32") else "")
        raise UnilsegError(f"no {fmt} export of {name} ({variant or 'fp32'}) at {path}; run `unilseg export "
                           f"--model {name} --format {fmt}{flag}` first, or name an export with --weights DIR")
    return path


def load_backend(runtime: str, weights: str | None = None, model: str | None = None, device: Any = "auto",
                 variant: str | None = None, threads: int | None = None) -> Any:
    """A Backend for `runtime` over the export `weights` names (a directory) or `model`'s cached export;
    threads: ONNX Runtime's intra-op threads (None: its default, all cores)."""
    if runtime not in BACKENDS:
        raise UnilsegError(f"unknown runtime {runtime!r}; use torch, {', '.join(BACKENDS)}")
    directory = export_dir(runtime, weights, model, variant)
    target, fmt = BACKENDS[runtime]
    info = read_info(directory, fmt)
    if variant not in (None, info.variant) and not (variant == "fp32" and weights):
        raise UnilsegError(f"{directory} is a {info.variant} export, not {variant}; drop --precision or export "
                           f"that variant")
    module, _, cls = target.partition(":")
    extra = {"threads": threads} if runtime == "onnx" else {}  # AOTInductor runs on torch's threads
    return getattr(importlib.import_module(module), cls).load(directory, info, device, **extra)
