"""unilseg: segment whatever a language instruction names in an image (UniLSeg, CVPR 2024).

Public surface (imported lazily, so `import unilseg` is instant):
    tokenize, preprocess, postprocess, read_image, build_model, load_model, Predictor, Prediction,
    ImageEmbedding
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "tokenize": "unilseg.tokenizer",
    "preprocess": "unilseg.transforms",
    "postprocess": "unilseg.transforms",
    "read_image": "unilseg.transforms",
    "build_model": "unilseg.build",
    "load_model": "unilseg.build",
    "Predictor": "unilseg.predictor",
    "Prediction": "unilseg.predictor",
    "ImageEmbedding": "unilseg.predictor",
    "UnilsegError": "unilseg.errors",
    "CheckpointError": "unilseg.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unilseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
