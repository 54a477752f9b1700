"""Named models: which config, which weight file, where it comes from, how to check it.

A registered model's weights are looked for, in this order (first found wins):
  1. `$UNILSEG_HOME`, if set;
  2. the user cache directory (`platformdirs.user_cache_dir("unilseg")`, `~/.cache/unilseg`
     on Linux), where `unilseg download` writes unless `$UNILSEG_HOME` is set;
  3. the current directory, then `./weights/` (the authors' habit);
  4. the package itself, for models shipped with it (the demo model).
In each place a converted `<stem>.safetensors` beside the official `.pth` is preferred (it
memory-maps and skips the unused CLIP image tower). `--weights PATH` bypasses the lookup.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path


@dataclass(frozen=True)
class ModelSpec:
    """One named model."""

    name: str
    config: str  # a packaged config's file name (unilseg/configs/)
    filename: str  # the weight file's name
    source: str  # where a person gets the file by hand
    gdrive_folder: str | None = None  # Google Drive folder holding `filename` (downloaded with gdown)
    sha256: str | None = None  # of `filename`, where known
    description: str = ""
    bundled: bool = False  # shipped inside the package (unilseg/weights/), no download


AUTHORS_DRIVE = "https://drive.google.com/drive/folders/1llKmPaOUhsAqxtopFdfnIBAlspvw_I4I"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="unilseg-20",
            config="unilseg20.yaml",
            filename="UniLSeg20_no_finetune.pth",
            source=f"the authors' Google Drive folder {AUTHORS_DRIVE}",
            gdrive_folder=AUTHORS_DRIVE,
            sha256=None,  # not published by the authors
            description="UniLSeg-20 (Swin-B + CLIP ViT-B/16 text), the authors' release, no fine-tuning",
        ),
        ModelSpec(
            name="unilseg-demo",
            config="unilseg-demo.yaml",
            filename="unilseg-demo.safetensors",
            source="this package (unilseg/weights/), trained from the unilseg-demo config in three stages "
                   "(docs/demo-model.md)",
            bundled=True,
            description="small offline demo model trained on generated scenes (not for photographs)",
        ),
    )
}
DEFAULT_MODEL = "unilseg-20"


def cache_dir() -> Path:
    """Where downloads go: `$UNILSEG_HOME` if set, else the user cache directory."""
    home = os.environ.get("UNILSEG_HOME")
    if home:
        return user_path(home)
    import platformdirs

    return Path(platformdirs.user_cache_dir("unilseg", appauthor=False))


def search_dirs(spec: ModelSpec | None = None) -> list[tuple[str, Path]]:
    """(label, directory) pairs in lookup order (see the module docstring)."""
    dirs = []
    if os.environ.get("UNILSEG_HOME"):
        dirs.append(("$UNILSEG_HOME", cache_dir()))
    import platformdirs

    dirs.append(("user cache", Path(platformdirs.user_cache_dir("unilseg", appauthor=False))))
    dirs += [("current directory", Path.cwd()), ("./weights", Path.cwd() / "weights")]
    if spec is None or spec.bundled:
        dirs.append(("package", Path(str(resources.files("unilseg").joinpath("weights")))))
    return dirs


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnilsegError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None


_skipped: set[tuple[str, str]] = set()  # places already warned about in this process


def find_weights(spec: ModelSpec) -> tuple[Path, str] | None:
    """(weight file, where it was found) for `spec`, safetensors preferred; None if nowhere.

    A place that cannot be looked into (no permission, a name too long for the file system,
    an I/O error) is skipped with one warning, the first time, and the next place is tried:
    an unreadable `$UNILSEG_HOME` still finds the packaged demo model.
    """
    stem = Path(spec.filename)
    for label, directory in search_dirs(spec):
        try:
            for candidate in (directory / stem.with_suffix(".safetensors"), directory / spec.filename):
                if candidate.is_file():
                    return candidate, label
        except OSError as e:
            if (label, str(directory)) not in _skipped:
                _skipped.add((label, str(directory)))
                warnings.warn(f"cannot look into {label} {directory} ({e.strerror or type(e).__name__}); "
                              "skipped, looking in the next place", stacklevel=2)
    return None


def cached_weights(spec: ModelSpec) -> Path | None:
    """The weight file found for `spec` (see find_weights), or None."""
    found = find_weights(spec)
    return None if found is None else found[0]


def download_command(name: str) -> str:
    return f"python -m unilseg download {name}"
