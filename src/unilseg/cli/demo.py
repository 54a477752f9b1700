"""`unilseg demo`: parse the flags, load the model, build the page, serve it.

Importing this module imports neither torch nor Gradio, so `unilseg demo --help` is instant
and says what to install when Gradio is missing.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from unilseg.cli.args import MIN_SCORE_HELP, add_min_score_arg, add_model_args
from unilseg.demo import DEMO_MODEL

if TYPE_CHECKING:
    from unilseg.inference.predictor import Predictor

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
    add_min_score_arg(p, MIN_SCORE_HELP + " (the page's starting value; the page can change it)")
    return p


def predictor_for(args: argparse.Namespace, precision: str | None = None) -> Predictor:
    """The predictor the model flags name (default: the demo model), loaded as the segment CLI loads it (same
    masks); precision: another one the page offers (its weights are there already: no download)."""
    from unilseg.cli.args import predictor_from_args

    flags = argparse.Namespace(**vars(args))
    if not (flags.model or flags.weights or flags.config):
        flags.model = DEMO_MODEL
    flags.precision = precision or args.precision
    flags.threshold, flags.text_batch = None, None
    flags.min_score = getattr(args, "min_score", None)
    flags.download = args.download and precision is None  # the first load fetches; a second precision reuses
    return predictor_from_args(flags)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        print(f"error: the demo needs Gradio; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from unilseg.cli.args import guarded_main

    return guarded_main(lambda: serve(args), interrupted="stopped")  # a warning is one `warning:` line


def serve(args: argparse.Namespace) -> None:
    """Check the flags, load the model, serve the page (`unilseg.demo.app.serve`); blocks until Ctrl-C."""
    from unilseg.errors import UnilsegError

    if not 0 < args.port < 65536:
        raise UnilsegError(f"--port {args.port}: a port is a number from 1 to 65535")
    if getattr(args, "min_score", None) is not None:
        from unilseg.model.spec import check_min_score

        check_min_score(args.min_score)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio's import: no phoning home
    from unilseg.demo import app

    predictor = predictor_for(args)
    try:
        app.serve(predictor, load_precision=lambda precision: predictor_for(args, precision), host=args.host,
                  port=args.port, share=args.share, models_note=app.models_note(args.model, args.weights, args.config))
    except OSError as e:  # port taken, address not available
        why = "the port is in use, or the host is not an address of this machine" if "empty port" in str(e) else str(e)
        raise UnilsegError(f"cannot serve on {args.host}:{args.port}: {why}; pick another --port or --host") from e


if __name__ == "__main__":
    sys.exit(main())
