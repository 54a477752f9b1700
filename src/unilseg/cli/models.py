"""`unilseg models`, `unilseg download`, `unilseg convert`: the registered models and their weights."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from unilseg.cli.args import guarded_main


def models_main(argv: Sequence[str]) -> int:
    """`unilseg models`: each registered model and where its weights were found; the CPU's features."""
    argparse.ArgumentParser(prog="unilseg models", description="List registered models, where their weights "
                            "are looked for and found, and the CPU features inference runs with (VNNI, AVX-512, bf16 "
                            "instructions, AMX).").parse_args(argv)
    from unilseg.inference.backends.cpu import cpu_features
    from unilseg.model.registry import MODELS, cache_dir, download_command, find_weights, search_dirs

    def run() -> None:  # a place that cannot be looked into is one `warning:` line
        print(f"cpu: {cpu_features().summary()}")
        print(f"downloads go to: {cache_dir()}  (set UNILSEG_HOME to change it)")
        print("lookup order: " + ", ".join(f"{label} ({path})" for label, path in search_dirs()))
        for spec in MODELS.values():
            found = find_weights(spec)
            where = f"found in {found[1]}: {found[0]}" if found else f"not found; run `{download_command(spec.name)}`"
            print(f"{spec.name:14s} {where}\n{'':14s} {spec.description}")

    return guarded_main(run)


def download_main(argv: Sequence[str]) -> int:
    """`unilseg download NAME [--dir DIR]`: fetch a registered model's weights; prints where they went."""
    p = argparse.ArgumentParser(prog="unilseg download", description="Fetch a registered model's weights.")
    p.add_argument("name", help="registered model name, e.g. unilseg-20")
    p.add_argument("--dir", help="directory to download into (default: $UNILSEG_HOME, else the user cache directory)")
    args = p.parse_args(argv)

    def run() -> None:
        from unilseg.model.download import download

        print(download(args.name, args.dir))

    return guarded_main(run)


def convert_main(argv: Sequence[str]) -> int:
    """`unilseg convert IN OUT.safetensors`: the used weights as safetensors with their config."""
    p = argparse.ArgumentParser(prog="unilseg convert", description="Convert weights to .safetensors.")
    p.add_argument("src", help="official .pth checkpoint (or a .safetensors to re-write)")
    p.add_argument("dst", help="output .safetensors")
    p.add_argument("--config", help="model config YAML or a shipped config's name (default: the file's own, "
                   "else unilseg20)")
    p.add_argument("--half", action="store_true", help="store float tensors as float16 (half the size)")
    args = p.parse_args(argv)

    def run() -> None:
        from unilseg.model.convert import convert

        print(convert(args.src, args.dst, args.config, half=args.half))

    return guarded_main(run)
