"""`unilseg export`: write a model as ONNX graphs or an AOTInductor package, with its settings."""
from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

from unilseg.cli.args import add_model_args, check_model_args, guarded_main, load_model_from_args
from unilseg.errors import UnilsegError
from unilseg.export import FORMATS, default_export_dir, staged_dir, write_info
from unilseg.io.paths import user_path

# format -> module:function(model, directory, **options) -> ExportInfo; options: the format's flags below
EXPORTERS = {"onnx": "unilseg.export.onnx:export_onnx", "aoti": "unilseg.export.aoti:export_aoti"}
QUANTIZE = ("int8",)


def get_parser(prog: str = "unilseg export") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Export a model for another runtime: two ONNX graphs (image "
                                "encoder, prompt decoder) or an AOTInductor package, plus unilseg-export.json.")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx (ONNX Runtime, any language) | aoti "
                   "(AOTInductor .pt2 for this machine's CPU or GPU)")
    p.add_argument("--out", help="directory to write (default: the user cache, where --runtime FORMAT --model NAME "
                   "finds it)")
    p.add_argument("--quantize", choices=QUANTIZE, help="onnx: also quantise the graphs' weights to int8 (ONNX "
                   "Runtime dynamic quantisation)")
    p.add_argument("--opset", type=int, default=18, help="onnx: the ONNX opset (default 18)")
    p.add_argument("--portable-only", action="store_true", help="onnx: leave out ONNX Runtime's pre-optimised CPU "
                   "copies of the graphs (*.ort-cpu.onnx: a faster cold start on CPU, as large again on disk)")
    add_model_args(p, runtime=False)
    return p


def run(args: argparse.Namespace) -> int:
    if args.quantize and args.format != "onnx":
        raise UnilsegError("--quantize int8 applies to --format onnx; AOTInductor packages take --precision")
    if args.format == "onnx" and args.precision != "fp32":
        raise UnilsegError("--format onnx exports fp32 graphs; for a smaller, faster model add --quantize int8 "
                           "instead of --precision")
    if args.precision == "int8":
        raise UnilsegError("--precision int8 is made by --format onnx --quantize int8")
    check_model_args(args)
    from unilseg.model.registry import DEFAULT_MODEL

    variant = args.quantize or args.precision
    name = args.model or (Path(args.weights).stem if args.weights else DEFAULT_MODEL)
    out = user_path(args.out) if args.out else default_export_dir(name, args.format, variant)
    module, _, func = EXPORTERS[args.format].partition(":")
    exporter = getattr(importlib.import_module(module), func)  # fails early if the format's packages are missing
    onnx = args.format == "onnx"
    if args.portable_only and not onnx:
        raise UnilsegError("--portable-only applies to --format onnx")
    options = ({"opset": args.opset, "quantize": args.quantize, "cpu_graphs": not args.portable_only} if onnx
               else {"precision": args.precision})
    with staged_dir(out) as tmp:
        model = load_model_from_args(args)
        info = exporter(model, tmp, **options)
        info.model = name
        write_info(tmp, info)
    print(out)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "unilseg export") -> int:
    args = get_parser(prog).parse_args(argv)
    return guarded_main(lambda: run(args))
