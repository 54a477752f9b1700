"""`unilseg` / `python -m unilseg`: segment (the default command), or another subcommand.

    unilseg [segment] --img IMG --exp TEXT --sp OUT.png   segment (same flags as general_inference.py)
    unilseg models                                        registered models and where their weights were found
    unilseg download NAME [--dir DIR]                     fetch a registered model's weights into the cache
    unilseg convert IN.pth OUT.safetensors                write the used weights as safetensors (+ config)
    unilseg train CONFIG ... / unilseg eval ...           training and evaluation
    unilseg data SPEC --out manifest.jsonl                write any data spec as a manifest
    unilseg export --model NAME --format onnx|aoti          write a model for another runtime (--runtime runs it)
    unilseg ray --img DIR --exp TEXT --sp DIR ...          the batch job on Ray Data (segment's batch flags)
    unilseg serve [--host H --port P]                      the HTTP API: POST /v1/segment, Label Studio's ML backend
    unilseg label-studio-config --classes A,B             the Label Studio labeling config for --label-studio tasks
"""
from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module:function taking argv, one-line summary); adding a front end adds a line here.
SUBCOMMANDS = {
    "segment": ("unilseg.__main__:segment_main", "segment images (the default command; general_inference.py's flags)"),
    "models": ("unilseg.cli.models:models_main", "list registered models and where their weights were found"),
    "download": ("unilseg.cli.models:download_main", "fetch a registered model's weights into the cache"),
    "convert": ("unilseg.cli.models:convert_main", "write weights as .safetensors with their config"),
    "train": ("unilseg.cli.train:main", "train a model (also under torchrun)"),
    "eval": ("unilseg.cli.eval:main", "score a model: mIoU, oIoU, Prec@X by granularity"),
    "data": ("unilseg.cli.data:main", "write any data spec as a JSONL manifest"),
    "demo": ("unilseg.cli.demo:main", "the web page: upload an image, type instructions, see the masks"),
    "export": ("unilseg.cli.export:main", "write a model as ONNX graphs or an AOTInductor package (--runtime onnx|aoti "
               "runs them)"),
    "ray": ("unilseg.cli.ray:main", "segment many pairs on Ray Data, one machine or a cluster (pip install "
            "'unilseg[ray]')"),
    "serve": ("unilseg.cli.serve:main", "serve the model over HTTP: /v1/segment, Label Studio's ML backend, "
              "--ray for Ray Serve (pip install 'unilseg[serve]')"),
    "label-studio-config": ("unilseg.cli.label_studio:main", "print the Label Studio labeling config for "
                            "--label-studio tasks"),
}


def segment_main(argv: Sequence[str]) -> int:
    from unilseg.cli.segment import main

    return main(argv, prog="unilseg segment")


def print_help() -> None:
    print("usage: unilseg [COMMAND] ...\n\nSegment whatever a language instruction names in an image (UniLSeg).\n")
    print("commands:")
    width = max(map(len, SUBCOMMANDS))
    for name, (_, summary) in SUBCOMMANDS.items():
        print(f"  {name:{width}s} {summary}")
    print("\nWithout a command, the arguments are segment's: unilseg --img IMG --exp TEXT --sp OUT.png")
    print("unilseg COMMAND --help shows a command's flags.")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print_help()
        return 0
    try:
        if argv[0] in SUBCOMMANDS:
            module, _, func = SUBCOMMANDS[argv[0]][0].partition(":")
            return getattr(importlib.import_module(module), func)(argv[1:])
        return segment_main(argv)
    except ModuleNotFoundError as e:  # a command module that imports torch at its top, in a slim install
        from unilseg.errors import torch_missing

        return torch_missing(e)


if __name__ == "__main__":
    sys.exit(main())
