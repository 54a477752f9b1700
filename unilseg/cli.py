"""`general_inference.py` / `unilseg`: segment what an instruction names in an image.

A thin shell over `Predictor`: parse, check inputs, load, predict, write atomically.
Errors a user can fix are printed as one `error:` line with exit code 2.

One image file and one `--exp` is the authors' invocation: `--sp` is the output file.
Anything more (several images or expressions, a directory, a glob, `--exp-file`,
`--manifest`, `--shard`) is a batch: `--sp` is a directory (see `unilseg.batch`), a
failing item is reported and skipped, and the exit code is 1 if any item failed.
"""
from __future__ import annotations

import argparse
import glob
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CONFIG = "configs/unilseg20.yaml"
DEFAULT_OUTPUT = "demo.png"
FORMATS = ("png", "npy", "rle-json")  # unilseg.outputs.FORMATS; repeated so --help imports no numpy/cv2
PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="general_inference.py",
        description="Segment whatever a language instruction names in an image (UniLSeg).",
    )
    p.add_argument("--img", nargs="+", action="extend", metavar="IMG",
                   help="input image(s): files (any format OpenCV reads), directories or quoted globs")
    p.add_argument("--exp", action="append", metavar="TEXT",
                   help='the instruction, e.g. "the man in red"; repeat for several')
    p.add_argument("--exp-file", metavar="FILE", help="more instructions, one per line")
    p.add_argument("--manifest", metavar="FILE",
                   help="CSV (header) or .jsonl rows with image, expression, optional output; replaces --img/--exp")
    p.add_argument("--sp", help="output mask file (default demo.png); for a batch, the output directory")
    p.add_argument("--format", choices=FORMATS, default="png",
                   help="mask file: png (0/255), npy (bool array) or rle-json (COCO RLE); default png")
    p.add_argument("--config", help=f"model config YAML (default: the model's own; {DEFAULT_CONFIG})")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides, dotted keys")
    p.add_argument("--model", help="registered model name (default unilseg-20); `python -m unilseg models` lists them")
    p.add_argument("--weights", help="weights file (.pth or .safetensors); overrides --model")
    p.add_argument("--download", action="store_true", help="download the model's weights first if not cached")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU) | cpu | cuda[:N] | mps")
    p.add_argument("--threshold", type=float, default=None, help="mask = soft map > threshold (default 0.35)")
    p.add_argument("--save-prob", nargs="?", const=True, metavar="PATH.npy",
                   help="also save the float32 soft map at the image size (batch: NAME.prob.npy beside each mask)")
    p.add_argument("--overlay", nargs="?", const=True, metavar="PATH|jpg|png",
                   help="also save the image with the mask tinted and outlined (single: a .jpg/.png path; "
                        "batch: jpg or png, NAME.overlay.jpg beside each mask)")
    p.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                   help="fp32 (default); bf16 (CPU or GPU: heavy layers' weights in bf16, ~2x faster on CPUs "
                        "with AVX512-BF16/AMX); fp16 (GPU only)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per encoder batch (default: 1 on CPU, 4 on GPU)")
    p.add_argument("--text-batch", type=int, metavar="N",
                   help="(image, text) pairs per decoder batch (default: 1 on CPU, where batching is slower; "
                        "16 on GPU)")
    p.add_argument("--skip-existing", action="store_true", help="batch: skip items whose outputs all exist (resume)")
    p.add_argument("--shard", metavar="I/N", help="batch: do only shard I of N (I from 0), images dealt round-robin")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="batch: progress bar on stderr (default: only when stderr is a terminal)")
    return p


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Single image + expression (the authors' call) or a batch; returns the exit code."""
    from .errors import UnilsegError

    if args.manifest and (args.img or args.exp or args.exp_file):
        raise UnilsegError("--manifest gives the images and expressions; drop --img/--exp/--exp-file")
    if not args.manifest and not args.img:
        raise UnilsegError("give --img IMG (a file, directory or glob) and --exp TEXT, or --manifest FILE")
    if not args.manifest and not args.exp and not args.exp_file:
        raise UnilsegError("give --exp TEXT (repeatable) or --exp-file FILE: what to segment")
    for flag, value in (("--batch-size", args.batch_size), ("--text-batch", args.text_batch)):
        if value is not None and value < 1:
            raise UnilsegError(f"{flag} must be at least 1, not {value}")
    if _is_single(args):
        _run_single(args)
        return 0
    return _run_batch(args)


def _is_single(args: argparse.Namespace) -> bool:
    """The authors' call: one image file, one --exp, nothing that makes a batch."""
    if args.manifest or args.exp_file or args.shard or len(args.img) != 1 or len(args.exp) != 1:
        return False
    img = Path(args.img[0]).expanduser()
    return not img.is_dir() and (img.is_file() or not glob.has_magic(args.img[0]))


def _load_predictor(args: argparse.Namespace):  # -> Predictor (not imported here: --help stays torch-free)
    from .build import load_model
    from .config import load_config
    from .predictor import Predictor, resolve_device

    device = resolve_device(args.device)
    cfg = load_config(args.config, args.opts) if args.config else None
    if args.download and not args.weights:
        from .download import download
        from .registry import DEFAULT_MODEL

        download(args.model or (cfg or {}).get("name") or DEFAULT_MODEL)
    model = load_model(args.weights or args.model, cfg, device=device, opts=() if cfg else args.opts)
    return Predictor(model, threshold=args.threshold, precision=args.precision, max_batch=args.text_batch)


def _run_single(args: argparse.Namespace) -> None:
    from .batch import MASK_EXTENSIONS
    from .errors import UnilsegError
    from .io import check_writable_dir, write_mask_png, write_npy
    from .outputs import encode_mask, render_overlay, write_file
    from .transforms import read_image

    exp = args.exp[0]
    if not exp.strip():
        raise UnilsegError("--exp is empty; give a text naming what to segment")
    image = read_image(args.img[0])
    sp = Path(args.sp or Path(DEFAULT_OUTPUT).with_suffix(MASK_EXTENSIONS[args.format]))
    prob_path = _sidecar_path(args.save_prob, sp, ".prob.npy")
    overlay_path = _sidecar_path(args.overlay, sp, ".overlay.jpg")
    for path, flag in ((sp, "--sp"), (prob_path, "--save-prob"), (overlay_path, "--overlay")):
        if path is not None:
            check_writable_dir(path, flag)
    if overlay_path is not None and overlay_path.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        raise UnilsegError(f"--overlay {overlay_path}: use a .jpg or .png path")
    if args.skip_existing and all(p is None or p.is_file() for p in (sp, prob_path, overlay_path)):
        return
    predictor = _load_predictor(args)
    predictor.set_image(image)
    result = predictor.predict(exp)[0]
    if prob_path is not None:
        write_npy(prob_path, result.prob)
    if overlay_path is not None:
        from .io import encode_image

        write_file(overlay_path, encode_image(overlay_path, render_overlay(image, result.mask)))
    if args.format == "png":
        write_mask_png(sp, result.mask)  # the authors' output: an image in the format --sp's extension names
    else:
        write_file(sp, encode_mask(result.mask, args.format))


def _sidecar_path(value: str | bool | None, sp: Path, default_suffix: str) -> Path | None:
    """--save-prob/--overlay value in single mode: a path, or True for one beside --sp."""
    if value is None:
        return None
    if value is True:
        base = sp.with_suffix("")
        return base.with_name(base.name + default_suffix)
    return Path(value)


def _run_batch(args: argparse.Namespace) -> int:
    from .batch import (
        ResultsLog,
        check_output_dir,
        expand_images,
        is_done,
        parse_shard,
        plan_items,
        read_expression_file,
        read_manifest,
        results_name,
        select_shard,
    )
    from .errors import UnilsegError
    from .runner import BatchOptions, run_items

    if args.sp is None:
        raise UnilsegError("a batch writes several masks: pass --sp DIR, the directory to write them into")
    if isinstance(args.save_prob, str):
        raise UnilsegError(f"--save-prob {args.save_prob}: a batch takes no path (NAME.prob.npy beside each mask)")
    overlay_ext = _overlay_ext(args.overlay)
    shard = parse_shard(args.shard) if args.shard else None
    if args.manifest:
        pairs = [(r.image, r.expression, r.output) for r in read_manifest(args.manifest)]
    else:
        expressions = list(args.exp or []) + (read_expression_file(args.exp_file) if args.exp_file else [])
        pairs = [(image, exp, None) for image in expand_images(args.img) for exp in expressions]
    out_dir = check_output_dir(args.sp, len(pairs))
    plan = plan_items(pairs, out_dir, args.format)
    items = select_shard(plan, *shard) if shard else plan
    save_prob = bool(args.save_prob)
    done = [args.skip_existing and item.error is None and is_done(item, save_prob, overlay_ext) for item in items]
    todo = [item for item, d in zip(items, done) if not d]
    predictor = _load_predictor(args) if any(item.error is None for item in todo) else None
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad model or input leaves nothing behind
    results = ResultsLog(out_dir / results_name(shard), keep_existing=args.skip_existing)
    for item in (item for item, d in zip(items, done) if d):
        results.note_skipped(item)
    batch_size = args.batch_size or (1 if predictor is None or predictor.device.type == "cpu" else 4)
    options = BatchOptions(args.format, save_prob, overlay_ext, batch_size, args.threshold)
    show = args.progress if args.progress is not None else (sys.stderr.isatty() and len(todo) > 1)
    from tqdm import tqdm

    with tqdm(total=len(todo), unit="item", file=sys.stderr, disable=not show, dynamic_ncols=True) as bar:
        failed = run_items(predictor, todo, options, results, report=lambda line: tqdm.write(line, file=sys.stderr),
                           progress=bar)
    results.finish(plan)
    if failed:
        print(f"error: {failed} of {len(items)} items failed; see {results.path}", file=sys.stderr)
        return 1
    return 0


def _overlay_ext(value: str | bool | None) -> str | None:
    """--overlay in a batch: no value -> 'jpg'; else 'jpg' or 'png'."""
    from .errors import UnilsegError

    if value is None:
        return None
    if value is True:
        return "jpg"
    ext = str(value).lower().lstrip(".")
    if ext not in ("jpg", "png"):
        raise UnilsegError(f"--overlay {value}: in a batch give jpg or png (the overlay's format), not a path")
    return ext


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    from .errors import run_guarded

    with warnings.catch_warnings():
        warnings.showwarning = _warn_line
        return run_guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
