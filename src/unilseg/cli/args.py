"""Command-line plumbing every subcommand shares: every shared flag defined and checked once (the model
flags, the job flags of segment / its batches, label maps and videos / ray, the data flags), and the
error guard.

`add_model_args` + `load_model_from_args` / `predictor_from_args` give `--model --weights
--config --opts --device --precision --runtime --compile --threads` one meaning everywhere: `--model NAME` picks a
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

from unilseg.cli.sinks import add_sink_args
from unilseg.inference import PRECISIONS, RUNTIMES
from unilseg.io.paths import path_problem, shown, text_problem

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
    g.add_argument("--threads", type=int, metavar="N",
                   help="intra-op threads of torch (and of ONNX Runtime for --runtime onnx); default: "
                        "theirs, one per CPU core")
    if download:
        g.add_argument("--download", action="store_true", help="download the model's weights first if not cached")


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Add the flags that locate RefCOCO-style data (`--data refcoco:val` needs them)."""
    p.add_argument("--refer-root", help="refer data folder (holding refcoco/, refcoco+/, refcocog/)")
    p.add_argument("--coco-images", help="COCO train2014 images (default REFER_ROOT/images/mscoco/images/train2014)")


def load_model_from_args(args: argparse.Namespace, device: Any = None):  # -> UniLSeg (torch stays unimported)
    """The network the model flags name, on `device` (default: --device resolved), with --threads set."""
    from unilseg.inference import set_threads
    from unilseg.inference.predictor import resolve_device
    from unilseg.model.build import load_model

    set_threads(getattr(args, "threads", None))
    device = resolve_device(args.device) if device is None else device
    if getattr(args, "download", False) and not args.weights:
        from unilseg.model.download import download
        from unilseg.model.registry import DEFAULT_MODEL

        download(args.model or DEFAULT_MODEL)
    return load_model(args.weights, args.config, device=device, opts=args.opts, model=args.model)


def check_model_args(args: argparse.Namespace) -> None:
    """The model flags' values, checked before any work: the runtime's rules (--precision int8, --compile,
    what an export runtime takes, --threads), and --opts against the config they override (unless that
    config is only in the weight file, read when the model loads)."""
    from unilseg.inference import check_settings

    runtime = getattr(args, "runtime", "torch")
    check_settings(runtime, getattr(args, "precision", "fp32"), getattr(args, "compile", False), args.config,
                   args.opts or (), getattr(args, "threads", None))
    opts = list(args.opts or [])
    if runtime != "torch" or not opts:
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


def predictor_from_args(args: argparse.Namespace, **kwargs: Any):  # -> Predictor
    """`unilseg.inference.load_predictor` with the model flags (--model --weights --config --opts --device
    --runtime --precision --compile --threads --download) and --threshold / --min-score / --text-batch; kwargs: more
    `Predictor` keywords."""
    from unilseg.inference import load_predictor

    return load_predictor(model=args.model, weights=args.weights, config=args.config,
                          runtime=getattr(args, "runtime", "torch"), precision=getattr(args, "precision", "fp32"),
                          compile=getattr(args, "compile", False), device=args.device,
                          threads=getattr(args, "threads", None), opts=args.opts or (),
                          download=getattr(args, "download", False),
                          threshold=getattr(args, "threshold", None), min_score=getattr(args, "min_score", None),
                          max_batch=getattr(args, "text_batch", None),
                          **kwargs)


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


MIN_SCORE_HELP = ("a prediction whose presence score (the peak of its soft map) is below S comes back empty and is "
                  "reported present: false; 0 turns it off; default: the model's test.min_score, off for UniLSeg-20")


def add_min_score_arg(p: argparse.ArgumentParser, help: str = MIN_SCORE_HELP) -> None:
    """--min-score S (checked by `check_settings`, with the spec's rule: a number from 0 to 1)."""
    p.add_argument("--min-score", type=finite_float, default=None, metavar="S", help=help)


# ---------------------------------------------------------------- job flags (segment, its batches and videos, ray)

FORMATS = ("png", "npy", "rle-json")  # unilseg.io.writers.FORMATS; repeated so --help imports no numpy/cv2
OVERLAY_FORMATS = ("jpg", "png")


def add_job_args(p: argparse.ArgumentParser, batch_only: bool = False) -> None:
    """Add the flags of a segmentation job: inputs, outputs, model, threshold, batching, resume.

    `unilseg segment` (batch_only=False) and `unilseg ray` (batch_only=True: `--sp` is always
    a directory, `--save-prob` / `--overlay` take no path) share them, and `plan_batch`
    reads them.
    """
    p.add_argument("--img", nargs="+", type=path_arg, action="extend", metavar="IMG",
                   help="input image(s): files (any format OpenCV reads), directories or quoted globs")
    p.add_argument("--exp", action="append", type=text_arg, metavar="TEXT",
                   help='the instruction, e.g. "the man in red"; repeat for several')
    p.add_argument("--exp-file", type=path_arg, metavar="FILE", help="more instructions, one per line")
    p.add_argument("--classes", type=text_arg, metavar="A,B,...",
                   help='label map instead of masks: classes, e.g. "sky,road,car" '
                   '(a class may carry its instruction, "car: all the cars"); one PNG of class indices per image')
    p.add_argument("--classes-file", type=path_arg, metavar="FILE",
                   help="label-map classes, one per line: NAME or NAME: INSTRUCTION")
    p.add_argument("--manifest", type=path_arg, metavar="FILE",
                   help="CSV (header) or .jsonl rows with image, expression, optional output; replaces --img/--exp")
    p.add_argument("--sp", type=path_arg, help="the output directory (every node must see it)" if batch_only else
                   "output mask file (default demo.png), or a directory to write IMAGE__TEXT.png into; "
                   "for a batch, the output directory")
    p.add_argument("--allow-absolute-output", action="store_true",
                   help="manifest: let an absolute `output` be written where it says (default: such a row fails; "
                        "relative outputs must stay inside --sp either way)")
    p.add_argument("--format", choices=FORMATS,
                   help="mask file: png (0/255), npy (bool array) or rle-json (COCO RLE); default: from --sp's "
                        "extension, else png")
    add_model_args(p, download=True)
    p.add_argument("--threshold", type=finite_float, default=None, help="mask = soft map > threshold (default: the "
                   "model's, 0.35)")
    add_min_score_arg(p)
    if batch_only:
        p.add_argument("--save-prob", action="store_true", help="also save NAME.prob.npy, the float32 soft map at "
                       "the image size, beside each mask")
        p.add_argument("--overlay", nargs="?", const=True, metavar="jpg|png",
                       help="also save NAME.overlay.jpg (or .png): the image with the mask tinted and outlined")
    else:
        p.add_argument("--save-prob", nargs="?", const=True, type=path_arg, metavar="PATH.npy",
                       help="also save the float32 soft map at the image size (batch: NAME.prob.npy beside each "
                            "mask)")
        p.add_argument("--overlay", nargs="?", const=True, type=path_arg, metavar="PATH|jpg|png",
                       help="also save the image with the mask tinted and outlined (single: a .jpg/.png path; "
                            "batch: jpg or png, NAME.overlay.jpg beside each mask)")
    p.add_argument("--batch-size", type=int, metavar="N", help="images per encoder batch (default: 1 on CPU, 4 on GPU)")
    p.add_argument("--text-batch", type=int, metavar="N",
                   help="(image, text) pairs per decoder batch (default: 1 on CPU, where batching is slower; "
                        "16 on GPU)")
    p.add_argument("--skip-existing", action="store_true", help="skip items whose outputs all exist (resume)")
    add_sink_args(p, path_arg)


def add_progress_arg(p: argparse.ArgumentParser, what: str) -> None:
    """--progress / --no-progress; `show_progress` gives its default."""
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"{what} (default: only when stderr is a terminal)")


def show_progress(args: argparse.Namespace, many: bool = True) -> bool:
    """--progress, else a bar only on a terminal and for more than one item (`many`)."""
    return bool(args.progress) if args.progress is not None else sys.stderr.isatty() and many


def batch_overlay(value: str | bool | None) -> str | None:
    """A batch's --overlay (masks and label maps alike): none, or the overlay's format, jpg (no value) or
    png; `.png` and `PNG` are spellings of png."""
    from unilseg.errors import UnilsegError

    if value is None:
        return None
    fmt = "jpg" if value is True else str(value).lower().lstrip(".")
    if fmt not in OVERLAY_FORMATS:
        raise UnilsegError(f"--overlay {value}: in a batch give jpg or png (the overlay's format), not a path")
    return fmt


def video_overlay(value: str | bool | None) -> bool:
    """--video's --overlay: no value (an mp4 beside the masks), or mp4 -> whether to write it."""
    from unilseg.errors import UnilsegError

    if value not in (None, True) and str(value).lower().lstrip(".") != "mp4":
        raise UnilsegError(f"--overlay {value}: for --video give no value (an mp4 beside the masks)")
    return value is not None


def check_settings(args: argparse.Namespace) -> None:
    """Batch sizes, threshold, min score and the model flags, checked before anything else (every command that
    runs the model: segment, its label maps and videos, ray, serve, eval)."""
    from unilseg.errors import UnilsegError
    from unilseg.model.spec import check_min_score, check_threshold

    for flag, value in (("--batch-size", args.batch_size), ("--text-batch", args.text_batch)):
        if value is not None and value < 1:
            raise UnilsegError(f"{flag} must be at least 1, not {value}")
    if args.threshold is not None:
        check_threshold(args.threshold)
    if getattr(args, "min_score", None) is not None:
        check_min_score(args.min_score)
    check_model_args(args)


def check_job_args(args: argparse.Namespace) -> None:
    """The checks of `add_job_args`' flags that need no file: what is given, batch sizes, threshold."""
    from unilseg.errors import UnilsegError

    check_settings(args)
    if args.manifest and (args.img or args.exp or args.exp_file):
        raise UnilsegError("--manifest gives the images and expressions; drop --img/--exp/--exp-file")
    if not args.manifest and not args.img:
        raise UnilsegError("give --img IMG (a file, directory or glob) and --exp TEXT, or --manifest FILE")
    if not args.manifest and not args.exp and not args.exp_file:
        raise UnilsegError("give --exp TEXT (repeatable) or --exp-file FILE: what to segment")


def read_classes(args: argparse.Namespace) -> list:  # -> list[ClassSpec]
    """The checked classes of --classes or --classes-file (segment and eval share them)."""
    from unilseg.errors import UnilsegError
    from unilseg.tasks.labelmap import parse_classes, read_classes_file

    if args.classes is not None and args.classes_file is not None:
        raise UnilsegError("give --classes or --classes-file, not both")
    return parse_classes(args.classes) if args.classes is not None else read_classes_file(args.classes_file)
