"""`unilseg demo`: parse the flags, load the model, build the page, serve it.

Importing this module imports neither torch nor Gradio, so `unilseg demo --help` is instant
and says what to install when Gradio is missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from unilseg.cli.args import add_model_args

if TYPE_CHECKING:
    from unilseg.inference.predictor import Predictor

DEMO_MODEL = "unilseg-demo"
INSTALL_HINT = "pip install 'unilseg[demo]'"


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="unilseg demo",
        description="A web page to try UniLSeg: upload an image, type instructions, get the masks (Gradio).",
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    add_model_args(p, download=True)
    return p


def load_predictor(args: argparse.Namespace, precision: str | None = None) -> Predictor:
    """The predictor the model flags name, loaded as the segment CLI loads it (same masks)."""
    from unilseg.cli.args import predictor_from_args

    flags = argparse.Namespace(**vars(args))
    if not (flags.model or flags.weights or flags.config):
        flags.model = DEMO_MODEL
    flags.precision = precision or args.precision
    flags.threshold, flags.text_batch = None, None
    flags.download = args.download and precision is None  # the first load fetches; a second precision reuses
    return predictor_from_args(flags)


def page_precisions(device_type: str, start: str) -> tuple[str, ...]:
    """Precisions the page offers on this device: bf16 anywhere but Apple MPS, fp16 on CUDA."""
    offered = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "bf16", "fp16")}.get(device_type, ())
    return offered if start in offered else (start,)


def models_note(args: argparse.Namespace) -> str:
    """Markdown: the registered models, each either ready (how to start the page with it) or
    missing its weights (the command that fetches them)."""
    from unilseg.model.registry import MODELS, cached_weights, download_command

    running = args.weights or args.model or (None if args.config else DEMO_MODEL)
    lines = []
    for spec in sorted(MODELS.values(), key=lambda s: s.name != running):
        if spec.name == running:
            lines.append(f"- **{spec.name}** (running): {spec.description}")
        elif cached_weights(spec) is not None:
            lines.append(f"- {spec.name}: ready; start the page with `unilseg demo --model {spec.name}`")
        else:
            lines.append(f"- {spec.name}: weights not downloaded; fetch them with `{download_command(spec.name)}`, "
                         f"then `unilseg demo --model {spec.name}`")
    if running is None or running not in MODELS:
        lines.insert(0, f"- **{running or args.config}** (running)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        print(f"error: the demo needs Gradio; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from unilseg.cli.args import guarded_main

    return guarded_main(lambda: serve(args), interrupted="stopped")  # a warning is one `warning:` line


def serve(args: argparse.Namespace, load: Callable[..., Predictor] = load_predictor) -> None:
    """Load, build, launch; blocks until Ctrl-C."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio's import: no phoning home
    from unilseg.errors import UnilsegError

    if not 0 < args.port < 65536:
        raise UnilsegError(f"--port {args.port}: a port is a number from 1 to 65535")
    predictor = load(args)
    precisions = (page_precisions(predictor.device.type, predictor.precision) if predictor.model is not None
                  else (predictor.precision,))  # an exported model comes in the one precision it was exported in

    from unilseg.demo.app import build_app, launch

    demo = build_app(predictor, load_precision=lambda p: load(args, p), precisions=precisions,
                     models_note=models_note(args))
    try:
        launch(demo, host=args.host, port=args.port, share=args.share)
    except OSError as e:  # port taken, address not available
        why = "the port is in use, or the host is not an address of this machine" if "empty port" in str(e) else str(e)
        raise UnilsegError(f"cannot serve on {args.host}:{args.port}: {why}; pick another --port or --host") from e


if __name__ == "__main__":
    sys.exit(main())
