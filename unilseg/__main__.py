"""`python -m unilseg` / `unilseg`: segment (the default), or a subcommand.

    unilseg --img IMG --exp TEXT --sp OUT.png      segment (same flags as general_inference.py)
    unilseg models                                  list registered models and where their weights are
    unilseg download NAME [--dir DIR]               fetch a registered model's weights into the cache
    unilseg convert IN.pth OUT.safetensors          write the used weights as safetensors (+ config)
    unilseg train CONFIG ... / unilseg eval ...     training and evaluation
"""
from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = {
    "models": "unilseg.__main__:models_main",
    "download": "unilseg.__main__:download_main",
    "convert": "unilseg.__main__:convert_main",
    "train": "unilseg.train.cli:main",
    "eval": "unilseg.eval.cli:main",
    "demo": "unilseg.demo:main",
}


def models_main(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="unilseg models", description="List registered models.").parse_args(argv)
    from .registry import MODELS, cache_dir, cached_weights

    print(f"cache: {cache_dir()}  (set UNILSEG_HOME to move it)")
    for spec in MODELS.values():
        found = cached_weights(spec)
        print(f"{spec.name:14s} {'found: ' + str(found) if found else 'not downloaded'}  {spec.description}")
    return 0


def download_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="unilseg download", description="Fetch a registered model's weights.")
    p.add_argument("name", help="registered model name, e.g. unilseg-20")
    p.add_argument("--dir", help="cache directory (default: $UNILSEG_HOME or weights/)")
    args = p.parse_args(argv)

    def run() -> None:
        from .download import download

        print(download(args.name, args.dir))

    from .errors import run_guarded

    return run_guarded(run)


def convert_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="unilseg convert", description="Convert weights to .safetensors.")
    p.add_argument("src", help="official .pth checkpoint (or a .safetensors to re-write)")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--config", help="model config YAML (default: the file's own, else configs/unilseg20.yaml)")
    p.add_argument("--half", action="store_true", help="store float tensors as float16 (half the size)")
    args = p.parse_args(argv)

    def run() -> None:
        from .convert import convert

        print(convert(args.src, args.dst, args.config, half=args.half))

    from .errors import run_guarded

    return run_guarded(run)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        module, _, func = SUBCOMMANDS[argv[0]].partition(":")
        return getattr(importlib.import_module(module), func)(argv[1:])
    from .cli import main as segment_main

    return segment_main(argv)


if __name__ == "__main__":
    sys.exit(main())
