"""Command-line plumbing every subcommand shares: the model flags, the data flags, the error guard.

`add_model_args` + `load_model_from_args` / `predictor_from_args` give `--model --weights
--config --opts --device --precision` one meaning everywhere: `--model NAME` picks a
registered model (its config, and its weights unless `--weights PATH` names a file);
`--config` replaces the config; `--opts KEY VALUE ...` overrides keys of whichever config
is used. This module imports nothing heavy, so `--help` stays instant.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

from unilseg.io.paths import path_problem, shown, text_problem

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
RUNTIMES = ("torch", "onnx", "aoti")
DEVICES = "auto, cpu, cuda, cuda:N or mps"  # the devices torch runs inference on (and auto)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


# argparse `type=` helpers: a bad value is refused at parsing (exit 2, one usage error line).

def finite_float(text: str) -> float:
    """A flag's number: any float spelling except NaN and the infinities."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(repr(text))} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number (not NaN or infinite)")
    return value


def text_arg(text: str) -> str:
    """An instruction or class list: valid Unicode (not undecodable bytes, not lone surrogates)."""
    problem = text_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{shown(repr(text))} {problem}; give the text as UTF-8")
    return text


def path_arg(text: str) -> str:
    """A path flag: any bytes the OS allows in a name (undecodable ones included), but no NUL."""
    problem = path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{shown(repr(text))} {problem}")
    return text


def device_arg(text: str) -> str:
    """--device: auto, cpu, cuda, cuda:N or mps (torch's other device types do not run inference)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shown(repr(text))} is not a device to run on; use {DEVICES}")
    return text


def add_model_args(
    p: argparse.ArgumentParser, precision: bool = True, download: bool = False, runtime: bool = True
) -> None:
    """Add the model flags (the default model: the config's, unilseg-20 unless told otherwise)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", help="registered model name (default unilseg-20); `unilseg models` lists them")
    g.add_argument("--weights", type=path_arg, help="weights file (.pth, .safetensors, a training run's model.pth); "
                   "with --model, used instead of that model's registered file")
    g.add_argument("--config", type=path_arg,
                   help="model config YAML or a shipped config's name (default: the model's own)")
    g.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides, dotted keys")
    g.add_argument("--device", default="auto", type=device_arg,
                   help="auto (CUDA, else MPS, else CPU) | cpu | cuda[:N] | mps")
    if runtime:
        g.add_argument("--runtime", choices=RUNTIMES, default="torch",
                       help="torch (default) | onnx (ONNX Runtime) | aoti (AOTInductor package): the last two run "
                            "an `unilseg export` directory, named by --weights DIR or found for --model NAME")
        g.add_argument("--compile", action="store_true",
                       help="torch runtime: torch.compile the image encoder and decoders; minutes of compiling "
                            "at the start (seconds once the cache is warm), a faster forward after: for long runs "
                            "(see the README's 'Compiled inference')")
    if precision:
        g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="fp32 (default); bf16 (CPU or GPU: heavy layers' weights in bf16, ~2x faster on CPUs "
                            "with AVX512-BF16/AMX, slower without them); fp16 (GPU only); int8 (--runtime onnx: "
                            "an export made with --quantize int8)")
    if download:
        g.add_argument("--download", action="store_true", help="download the model's weights first if not cached")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Add the flags that locate RefCOCO-style data (`--data refcoco:val` needs them)."""
    p.add_argument("--refer-root", help="refer data folder (holding refcoco/, refcoco+/, refcocog/)")
    p.add_argument("--coco-images", help="COCO train2014 images (default REFER_ROOT/images/mscoco/images/train2014)")


def load_model_from_args(args: argparse.Namespace, device: Any = None):  # -> UniLSeg (torch stays unimported)
    """The network the model flags name, on `device` (default: --device resolved)."""
    from unilseg.inference.predictor import resolve_device
    from unilseg.model.build import load_model

    device = resolve_device(args.device) if device is None else device
    if getattr(args, "download", False) and not args.weights:
        from unilseg.model.download import download
        from unilseg.model.registry import DEFAULT_MODEL

        download(args.model or DEFAULT_MODEL)
    return load_model(args.weights, args.config, device=device, opts=args.opts, model=args.model)


def check_model_args(args: argparse.Namespace) -> None:
    """The model flags' values, checked before any work: --opts against the config they override (unless that
    config is only in the weight file, read when the model loads), and what an export runtime can take."""
    opts = list(getattr(args, "opts", None) or [])
    if getattr(args, "runtime", "torch") != "torch":
        export_threshold(args)
        return
    if not opts:
        return
    from unilseg.model.config import DEFAULT_CONFIG, load_config
    from unilseg.model.registry import MODELS, get_spec

    model = args.model or (args.weights if args.weights in MODELS else None)
    if args.config is not None:
        source = args.config
    elif model is not None:
        source = get_spec(model).config
    elif args.weights is None:
        source = DEFAULT_CONFIG
    else:
        return  # the config stored in the weight file: checked when it is read
    load_config(source, opts)


def export_threshold(args: argparse.Namespace) -> float | None:
    """An export runtime's --opts: only `test.threshold` applies (the network and its input settings are fixed
    when the export is made), and --config not at all; -> that threshold, or None."""
    from unilseg.errors import UnilsegError

    runtime = args.runtime
    if args.config is not None:
        raise UnilsegError(f"--config applies to --runtime torch; an {runtime} export holds its own settings "
                           "(give --config to `unilseg export`)")
    opts = list(args.opts or [])
    if len(opts) % 2:
        raise UnilsegError(f"--opts takes KEY VALUE pairs; got an odd number of items: {' '.join(opts)}")
    threshold = None
    for key, raw in zip(opts[0::2], opts[1::2]):
        if key != "test.threshold":
            raise UnilsegError(f"--opts {key}: an {runtime} export's network and input settings are fixed when it "
                               "is made; give --opts to `unilseg export` (only test.threshold applies here)")
        import yaml

        from unilseg.model.spec import check_spec

        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UnilsegError(f"--opts {key}: {raw!r} is not a valid YAML value") from None
        threshold = check_spec({"threshold": value}, "--opts ", {"threshold": key})["threshold"]
    return threshold


def predictor_from_args(args: argparse.Namespace, **kwargs: Any):  # -> Predictor
    """A Predictor over the network the model flags name (--runtime, --compile, --precision, --threshold,
    --text-batch)."""
    from unilseg.errors import UnilsegError
    from unilseg.inference.predictor import Predictor

    runtime = getattr(args, "runtime", "torch")
    compile = bool(getattr(args, "compile", False))
    if runtime != "torch":
        from unilseg.inference.backends import load_backend

        if compile:
            raise UnilsegError(f"--compile applies to --runtime torch; an {runtime} export is compiled already")
        from_opts = export_threshold(args)
        threshold = getattr(args, "threshold", None)  # --threshold, else --opts test.threshold, else the export's
        threshold = from_opts if threshold is None else threshold
        backend = load_backend(runtime, weights=args.weights, model=args.model, device=args.device,
                               variant=getattr(args, "precision", None))
        return Predictor(backend, threshold=threshold,
                         max_batch=getattr(args, "text_batch", None), **kwargs)
    if getattr(args, "precision", None) == "int8":
        raise UnilsegError("--precision int8 runs on ONNX Runtime: `unilseg export --format onnx --quantize int8`, "
                           "then add --runtime onnx")
    model = load_model_from_args(args)
    return Predictor(model, threshold=getattr(args, "threshold", None), precision=getattr(args, "precision", None),
                     max_batch=getattr(args, "text_batch", None), compile=compile, **kwargs)


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(shown(f"warning: {message}"), file=sys.stderr)


def guarded_main(body: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Run a command body with warnings as one `warning:` line each and errors as one `error:` line
    (a library error's field named by its flag, `cli.fields.FLAGS`)."""
    from unilseg.cli.fields import FLAGS
    from unilseg.errors import run_guarded

    with warnings.catch_warnings():
        warnings.showwarning = _warn_line
        return run_guarded(body, interrupted, FLAGS)
