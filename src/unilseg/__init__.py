"""unilseg: segment whatever a language instruction names in an image (UniLSeg, CVPR 2024).

Public surface (imported lazily, so `import unilseg` is instant):
    tokenize, preprocess, postprocess, read_image, build_model, load_model, load_predictor, Predictor,
    Prediction, ImageEmbedding, InferenceSpec, UnilsegError, CheckpointError
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

_EXPORTS = {
    "tokenize": "unilseg.model.tokenizer",
    "preprocess": "unilseg.inference.transforms",
    "postprocess": "unilseg.inference.transforms",
    "read_image": "unilseg.inference.transforms",
    "build_model": "unilseg.model.build",
    "load_model": "unilseg.model.build",
    "Predictor": "unilseg.inference.predictor",
    "Prediction": "unilseg.inference.predictor",
    "ImageEmbedding": "unilseg.inference.predictor",
    "InferenceSpec": "unilseg.model.spec",
    "load_predictor": "unilseg.inference",
    "UnilsegError": "unilseg.errors",
    "CheckpointError": "unilseg.errors",
}

__all__ = sorted(_EXPORTS)

# Module paths of 0.1.0 that its README showed, and where they live now. `import unilseg.video`
# keeps working (the very module object, not a copy); new code imports the new path.
MOVED_MODULES = {
    "unilseg.build": "unilseg.model.build",
    "unilseg.predictor": "unilseg.inference.predictor",
    "unilseg.transforms": "unilseg.inference.transforms",
    "unilseg.tokenizer": "unilseg.model.tokenizer",
    "unilseg.labelmap": "unilseg.tasks.labelmap",
    "unilseg.video": "unilseg.tasks.video",
    "unilseg.video_run": "unilseg.batch.video",
    "unilseg.raybatch": "unilseg.batch.ray",
    "unilseg.runtime": "unilseg.inference.backends",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module at its new one."""

    _specs: dict = {}

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        return importlib.util.spec_from_loader(name, self) if name in MOVED_MODULES else None

    def create_module(self, spec):  # noqa: ANN001
        module = importlib.import_module(MOVED_MODULES[spec.name])
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        # already executed under its new name; the import system set the alias's spec on it: undo that
        module.__spec__ = self._specs[module.__name__]


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unilseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
