"""Integrations: predictions handed to other tools in their own types (supervision, CVAT).

    supervision.py  `to_detections`: the Predictions of one image -> `supervision.Detections`
    cvat.py         a CVAT auto-annotation function (`cvat-cli ... --function-module unilseg.integrations.cvat`)

Importing this package (or either module) imports no optional library: supervision and
cvat-sdk are imported when first called, and a missing one is a UnilsegError naming the
extra that installs it (`pip install 'unilseg[supervision]'`, `pip install 'unilseg[cvat]'`).

    from unilseg.integrations import to_detections
    detections = to_detections(predictor.predict(["the blue car", "all the trees"]), instances=True)
"""
from __future__ import annotations

from typing import Any

__all__ = ["to_detections"]


def __getattr__(name: str) -> Any:
    if name == "to_detections":  # lazily: supervision.py imports supervision only when called, but keep it lazy too
        from unilseg.integrations.supervision import to_detections

        return to_detections
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
