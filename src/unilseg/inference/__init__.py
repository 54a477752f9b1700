"""Inference: the Predictor (an image embedded once, masks for any number of texts) over a Backend.

    predictor.py  Predictor, Prediction, ImageEmbedding; the eager PyTorch backend
    transforms.py letterbox and its inverse, soft map, threshold, image decoding
    backends/     the other runtimes (ONNX Runtime, AOTInductor), reduced precision, torch.compile, CPU features
    __init__      `load_predictor`, the one typed constructor every front end calls:

    from unilseg.inference import load_predictor
    predictor = load_predictor(model="unilseg-demo", precision="bf16", threads=2)
    predictor = load_predictor(weights="exports/unilseg-20-onnx", runtime="onnx")

Importing this package imports no torch: the command line's `--help` reads the names below.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unilseg.errors import UnilsegError
from unilseg.inference.backends.info import PRECISIONS, RUNTIMES, TORCH_PRECISIONS

if TYPE_CHECKING:
    from unilseg.inference.predictor import Predictor


def check_settings(
    runtime: str = "torch", precision: str = "fp32", compile: bool = False, config: Any = None,
    opts: Sequence[str] = (), threads: int | None = None,
) -> float | None:
    """The rules between the runtime and the other settings, checked before anything loads; one
    UnilsegError whose field is the setting at fault. -> the threshold an export runtime's `opts`
    set (`test.threshold`, the only key that applies to an export), or None."""
    if runtime not in RUNTIMES:
        raise UnilsegError(f"unknown runtime {runtime!r}; use {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise UnilsegError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if threads is not None and threads < 1:
        raise UnilsegError("{field} must be at least 1, not {value}", field="threads", value=threads)
    if runtime == "torch":
        if precision == "int8":
            raise UnilsegError("{field} int8 runs on ONNX Runtime: `unilseg export --format onnx --quantize int8`, "
                               "then add {runtime} onnx", field="precision")
        return None
    if compile:
        raise UnilsegError("{field} applies to {runtime} torch; an {export} export is compiled already",
                           field="compile", export=runtime)
    if config is not None:
        raise UnilsegError("{field} applies to {runtime} torch; an {export} export holds its own settings (give "
                           "{field} to `unilseg export`)", field="config", export=runtime)
    opts = list(opts)
    if len(opts) % 2:
        raise UnilsegError("{field} takes KEY VALUE pairs; got an odd number of items: {items}", field="opts",
                           items=" ".join(opts))
    threshold = None
    for key, raw in zip(opts[0::2], opts[1::2]):
        if key != "test.threshold":
            raise UnilsegError("{field} {key}: an {export} export's network and input settings are fixed when it is "
                               "made; give {field} to `unilseg export` (only test.threshold applies here)",
                               field="opts", key=key, export=runtime)
        import yaml

        from unilseg.model.spec import check_spec

        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UnilsegError("{field} {key}: {raw} is not a valid YAML value", field="opts", key=key,
                               raw=repr(raw)) from None
        try:
            threshold = check_spec({"threshold": value}, names={"threshold": key})["threshold"]
        except UnilsegError as e:
            raise UnilsegError("{field} {problem}", field="opts", problem=str(e)) from None
    return threshold


def set_threads(threads: int | None) -> None:
    """Use `threads` intra-op threads in torch (None: leave torch's default, one per core)."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def load_predictor(
    model: str | None = None,
    weights: str | Path | None = None,
    config: str | Path | dict[str, Any] | None = None,
    runtime: str = "torch",
    precision: str = "fp32",
    compile: bool = False,
    device: str = "auto",
    threads: int | None = None,
    opts: Sequence[str] = (),
    download: bool = False,
    **predictor_kwargs: Any,
) -> Predictor:
    """A ready Predictor.

    model: a registered name (default unilseg-20); weights: a weights file (torch) or an `unilseg
    export` directory (onnx, aoti; default: the cached export of `model`); config: a YAML path, a
    shipped config's name or a dict (torch only); opts: KEY VALUE config overrides (an export
    takes only test.threshold). runtime: torch | onnx | aoti. precision: fp32 | bf16 | fp16
    (torch, aoti exports) | int8 (an onnx export made with --quantize int8). compile: torch.compile
    the network (torch only). device: auto | cpu | cuda[:N] | mps. threads: intra-op threads of
    torch and ONNX Runtime (None: their default, all cores). download: fetch `model`'s weights
    first if they are not cached. Errors name the setting at fault in `UnilsegError.field`.
    predictor_kwargs: `Predictor`'s own (threshold, max_batch).
    """
    from unilseg.inference.predictor import Predictor, resolve_device

    from_opts = check_settings(runtime, precision, compile, config, opts, threads)
    if runtime != "onnx":  # ONNX Runtime takes the threads itself, and must not import torch
        set_threads(threads)
    if runtime != "torch":
        from unilseg.inference.backends import load_backend

        if predictor_kwargs.get("threshold") is None:  # an explicit threshold, else opts' test.threshold
            predictor_kwargs["threshold"] = from_opts
        backend = load_backend(runtime, weights=None if weights is None else str(weights), model=model, device=device,
                               variant=precision, threads=threads)
        return Predictor(backend, **predictor_kwargs)
    from unilseg.model.build import load_model

    if download and not weights:
        from unilseg.model.download import download as fetch
        from unilseg.model.registry import DEFAULT_MODEL

        fetch(model or DEFAULT_MODEL)
    net = load_model(weights, config, device=resolve_device(device), opts=opts, model=model)
    return Predictor(net, precision=precision, compile=compile, **predictor_kwargs)


__all__ = ["PRECISIONS", "RUNTIMES", "TORCH_PRECISIONS", "check_settings", "load_predictor", "set_threads"]
