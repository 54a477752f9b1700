"""Named models: which config, which weight file, where it comes from, how to check it.

Weights live in a cache directory: `$UNILSEG_HOME` if set, else `weights/` in the
project. A converted `<stem>.safetensors` beside the official `.pth` is preferred (it
memory-maps and skips the unused CLIP image tower).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import PROJECT_ROOT
from .errors import UnilsegError


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model."""

    name: str
    config: str  # path relative to the project root
    filename: str  # file name in the cache directory
    source: str  # where a person gets the file by hand
    gdrive_folder: str | None = None  # Google Drive folder holding `filename` (downloaded with gdown)
    sha256: str | None = None  # of `filename`, where known
    description: str = ""
    bundled: bool = False  # shipped in the repository's weights/ (no download)


AUTHORS_DRIVE = "https://drive.google.com/drive/folders/1llKmPaOUhsAqxtopFdfnIBAlspvw_I4I"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="unilseg-20",
            config="configs/unilseg20.yaml",
            filename="UniLSeg20_no_finetune.pth",
            source=f"the authors' Google Drive folder {AUTHORS_DRIVE}",
            gdrive_folder=AUTHORS_DRIVE,
            sha256=None,  # not published by the authors
            description="UniLSeg-20 (Swin-B + CLIP ViT-B/16 text), the authors' release, no fine-tuning",
        ),
        ModelSpec(
            name="unilseg-demo",
            config="configs/unilseg-demo.yaml",
            filename="unilseg-demo.safetensors",
            source="this repository (weights/), trained from configs/unilseg-demo.yaml in two stages (README)",
            bundled=True,
            description="small offline demo model trained on generated scenes (not for photographs)",
        ),
    )
}
DEFAULT_MODEL = "unilseg-20"


def cache_dir() -> Path:
    """`$UNILSEG_HOME` if set, else the project's `weights/` directory."""
    home = os.environ.get("UNILSEG_HOME")
    return Path(home).expanduser() if home else PROJECT_ROOT / "weights"


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnilsegError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


def config_path(spec: ModelSpec) -> Path:
    return PROJECT_ROOT / spec.config


def cached_weights(spec: ModelSpec) -> Path | None:
    """The cached (or bundled) weight file for `spec`, safetensors preferred; None if absent."""
    if spec.bundled:
        path = PROJECT_ROOT / "weights" / spec.filename
        return path if path.is_file() else None
    target = cache_dir() / spec.filename
    for candidate in (target.with_suffix(".safetensors"), target):
        if candidate.is_file():
            return candidate
    return None


def download_command(name: str) -> str:
    return f"python -m unilseg download {name}"
