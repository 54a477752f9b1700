"""`python -m unilseg.train CONFIG`: train a UniLSeg model (also under torchrun for several processes).

    python -m unilseg.train configs/unilseg-small.yaml --out runs/small
    python -m unilseg.train configs/unilseg-small.yaml --out runs/small --resume       # latest checkpoint
    torchrun --nproc_per_node 2 -m unilseg.train configs/unilseg-small.yaml --out runs/ddp
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from unilseg.cli.args import add_data_args, device_arg, guarded_main


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unilseg train",
        description="Train UniLSeg (BCE + Dice, AdamW, warm-up + cosine) on a manifest, a folder, RefCOCO or "
        "generated scenes. Settings live in the config's `train` section; flags override them.",
    )
    p.add_argument("config", help="model + train config YAML, e.g. configs/unilseg-small.yaml")
    p.add_argument("--data", help="training data spec (overrides train.data): manifest.jsonl, a folder, "
                   "refcoco:train, synthetic:SCENES[:SEED[:SIZE]]")
    p.add_argument("--val-data", help="held-out data spec for periodic evaluation, or 'none'")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", nargs="?", const="auto", help="continue from a training checkpoint "
                   "(without a path: the latest in --out, which must hold one)")
    p.add_argument("--init", help="start from these weights: a .pth/.safetensors file (e.g. the official .pth to "
                   "fine-tune) or a registered model's name (its downloaded weights)")
    p.add_argument("--steps", type=int, help="total optimiser steps (overrides train.steps)")
    p.add_argument("--device", default="auto", type=device_arg, help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--threads", type=int, metavar="N", help="torch's intra-op threads per process (default: "
                   "torch's, one per CPU core)")
    add_data_args(p)
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides, e.g. train.lr 1e-4")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from unilseg.inference import check_settings, set_threads
    from unilseg.io.writers import check_dir_target
    from unilseg.model.config import apply_overrides, load_config
    from unilseg.train.loop import train, with_train_defaults

    check_settings(threads=args.threads)
    cfg = with_train_defaults(load_config(args.config))
    cfg = apply_overrides(cfg, args.opts)
    init = None if args.init is None else init_weights(args.init)
    for key, value in (("data", args.data), ("init", init), ("steps", args.steps)):
        if value is not None:
            cfg["train"][key] = value
    if args.val_data is not None:
        cfg["train"]["val_data"] = None if args.val_data.lower() == "none" else args.val_data
    out = Path(args.out) if args.out else Path("runs") / str(cfg.get("name") or Path(args.config).stem)
    check_dir_target(out, "--out")
    set_threads(args.threads)
    train(cfg, out, resume=args.resume, device=args.device, refer_root=args.refer_root,
          coco_images=args.coco_images, progress=not args.no_progress)


def init_weights(value: str) -> str:
    """--init: a weights file, or a registered model's name -> the file to start from (its cached weights)."""
    from unilseg.errors import UnilsegError
    from unilseg.io.paths import user_path
    from unilseg.model.registry import MODELS, download_command, find_weights

    if user_path(value).is_file():
        return value
    if value in MODELS:
        found = find_weights(MODELS[value])
        if found is None:
            raise UnilsegError(f"--init {value}: its weights are not downloaded; run `{download_command(value)}` "
                               "first, or give --init a weights file")
        return str(found[0])
    raise UnilsegError(f"weights file not found: {value}; give --init a .pth or .safetensors file, or a registered "
                       "model's name (`unilseg models` lists them)")


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    return guarded_main(lambda: run(args), interrupted="interrupted (resume with --resume)")
