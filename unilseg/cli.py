"""`general_inference.py` / `unilseg`: segment what an instruction names in an image.

A thin shell over `Predictor`: parse, check inputs, load, predict, write atomically.
Errors a user can fix are printed as one `error:` line with exit code 2.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

DEFAULT_CONFIG = "configs/unilseg20.yaml"
DEFAULT_MODEL = "unilseg-20"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="general_inference.py",
        description="Segment whatever a language instruction names in an image (UniLSeg).",
    )
    p.add_argument("--img", required=True, help="input image (any format OpenCV reads)")
    p.add_argument("--exp", required=True, help='the instruction, e.g. "the man in red"')
    p.add_argument("--sp", default="demo.png", help="output mask: single-channel 0/255 PNG (default demo.png)")
    p.add_argument("--config", help=f"model config YAML (default: the model's own; {DEFAULT_CONFIG})")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides, dotted keys")
    p.add_argument("--model", help="registered model name (default unilseg-20); `python -m unilseg models` lists them")
    p.add_argument("--weights", help="weights file (.pth or .safetensors); overrides --model")
    p.add_argument("--download", action="store_true", help="download the model's weights first if not cached")
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU) | cpu | cuda[:N] | mps")
    p.add_argument("--threshold", type=float, default=None, help="mask = soft map > threshold (default 0.35)")
    p.add_argument("--save-prob", metavar="PATH.npy", help="also save the float32 soft map at the image size")
    return p


def _warn_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> None:
    from .build import load_model
    from .config import load_config
    from .errors import UnilsegError
    from .io import check_writable_dir, write_mask_png, write_npy
    from .predictor import Predictor, resolve_device
    from .transforms import read_image

    if not args.exp.strip():
        raise UnilsegError("--exp is empty; give a text naming what to segment")
    image = read_image(args.img)
    check_writable_dir(args.sp, "--sp")
    if args.save_prob:
        check_writable_dir(args.save_prob, "--save-prob")
    device = resolve_device(args.device)
    cfg = load_config(args.config, args.opts) if args.config else None
    if args.download and not args.weights:
        from .download import download

        download(args.model or (cfg or {}).get("name") or DEFAULT_MODEL)
    model = load_model(args.weights or args.model, cfg, device=device, opts=() if cfg else args.opts)
    predictor = Predictor(model, threshold=args.threshold)
    predictor.set_image(image)
    result = predictor.predict(args.exp)[0]
    write_mask_png(args.sp, result.mask)
    if args.save_prob:
        write_npy(args.save_prob, result.prob)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    from .errors import UnilsegError

    with warnings.catch_warnings():
        warnings.showwarning = _warn_line
        try:
            run(args)
        except UnilsegError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
