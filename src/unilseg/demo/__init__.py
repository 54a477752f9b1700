"""`unilseg demo`: a web page to try UniLSeg (Gradio, an optional dependency: `unilseg[demo]`).

`unilseg.demo.app.build_app(predictor)` builds the page from a ready predictor;
`unilseg.demo.cli.main` parses the flags, loads the model and serves the page.
"""
from __future__ import annotations

from unilseg.demo.cli import main

__all__ = ["main"]
