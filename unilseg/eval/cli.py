"""`python -m unilseg.eval`: score a model's masks (mIoU, oIoU, Prec@X by granularity and source).

    python -m unilseg.eval --weights weights/UniLSeg20_no_finetune.pth --data refcoco:val --refer-root data
    python -m unilseg.eval --weights runs/small/model.pth --data synthetic:250:1
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

DEFAULT_CONFIG = "configs/unilseg20.yaml"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unilseg eval",
        description="Evaluate a UniLSeg model: mIoU, oIoU and Prec@0.5..0.9, overall and by granularity and source.",
    )
    p.add_argument("--data", required=True, help="data spec: manifest.jsonl, a folder with texts.csv, "
                   "refcoco:val|testA|testB, refcoco+:..., refcocog:val|test, synthetic:SCENES[:SEED[:SIZE]]")
    p.add_argument("--model", help="a registered model name, e.g. unilseg-20 (its config comes with it)")
    p.add_argument("--weights", help="weights file: official .pth, .safetensors, a training run's model.pth or "
                   "stepNNNNNNN.pt (these carry their config)")
    p.add_argument("--config", help=f"model config YAML (default: the model's own, else {DEFAULT_CONFIG})")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides by dotted key")
    p.add_argument("--refer-root", help="refer data folder (holding refcoco/, refcoco+/, refcocog/)")
    p.add_argument("--coco-images", help="COCO train2014 images (default REFER_ROOT/images/mscoco/images/train2014)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] | mps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--threshold", type=float, help="mask = soft map > threshold (default: the config's)")
    p.add_argument("--limit", type=int, help="score only the first N texts")
    p.add_argument("--json", metavar="PATH", help="write the summary as JSON")
    p.add_argument("--per-sample", metavar="PATH.jsonl", help="write one JSON line per scored text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def model_source(model: str | None, weights: str | None) -> str | None:
    """What `load_model` resolves: a registered model name, a weights file, or None (the config's model)."""
    if model is not None and weights is not None:
        from ..errors import UnilsegError

        raise UnilsegError("give --model NAME or --weights PATH, not both")
    return model if model is not None else weights


def run(args: argparse.Namespace) -> dict:
    import json

    from ..build import load_model
    from ..data.dataset import InputSpec
    from ..data.sources import open_samples
    from ..errors import UnilsegError
    from ..io import check_writable_dir, write_bytes_atomic
    from ..predictor import resolve_device
    from .evaluate import evaluate
    from .metrics import format_table

    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise UnilsegError("--batch-size and --limit must be positive")
    for flag, path in (("--json", args.json), ("--per-sample", args.per_sample)):
        if path:
            check_writable_dir(path, flag)
    source = model_source(args.model, args.weights)
    samples = open_samples(args.data, args.refer_root, args.coco_images)
    device = resolve_device(args.device)
    model = load_model(source, args.config, device=device, opts=args.opts)
    cfg = model.config
    threshold = args.threshold if args.threshold is not None else float(cfg.get("test", {}).get("threshold", 0.35))
    rows: list[str] = []
    on_record = (lambda r: rows.append(json.dumps(r))) if args.per_sample else None
    summary = evaluate(model, samples, InputSpec.from_config(cfg), threshold, device, args.batch_size, args.workers,
                       args.limit, progress=not args.no_progress, on_record=on_record)
    print(f"{args.data}: {summary['overall']['count']} texts, threshold {threshold}")
    print(format_table(summary))
    report = {"data": args.data, "model": source or cfg.get("name"), "config": args.config, "threshold": threshold,
              **summary}
    if args.json:
        write_bytes_atomic(args.json, (json.dumps(report, indent=2) + "\n").encode())
    if args.per_sample:
        write_bytes_atomic(args.per_sample, ("\n".join(rows) + "\n").encode())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    from ..errors import run_guarded

    return run_guarded(lambda: run(args))
