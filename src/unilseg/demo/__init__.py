"""`unilseg demo`: a web page to try UniLSeg (Gradio, an optional dependency: `unilseg[demo]`).

`unilseg.demo.app.build_app(predictor)` builds the page from a ready predictor and
`unilseg.demo.app.serve(load, host=, port=)` serves it; `unilseg.cli.demo` is the command line.
"""
from __future__ import annotations

DEMO_MODEL = "unilseg-demo"  # what the page runs when no model is named
