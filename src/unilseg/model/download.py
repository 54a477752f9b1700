"""Fetch registered weights into the cache with gdown: progress bar, partial name, verification.

The file is written under `<name>.part` and renamed only once it is complete and
verified, so an interrupted download is never mistaken for a good file.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

from unilseg.errors import CheckpointError, UnilsegError
from unilseg.model.registry import ModelSpec, cache_dir, get_spec

CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0


def sha256sum(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, spec: ModelSpec) -> None:
    """Raise CheckpointError unless `path` is a complete file of the expected content."""
    if spec.sha256 is not None:
        digest = sha256sum(path)
        if digest != spec.sha256:
            raise CheckpointError(
                f"{path}: sha256 {digest[:12]}… does not match the registry's {spec.sha256[:12]}…; "
                "delete it and download again"
            )
    elif spec.filename.endswith((".pth", ".pt")):
        # No published hash: at least require an intact zip archive (torch's format);
        # a truncated file has no end-of-central-directory record.
        try:
            with zipfile.ZipFile(path) as z:
                z.infolist()
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path} is incomplete or corrupt ({e}); delete it and download again") from e


def _writable_cache(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UnilsegError(f"cannot create cache directory {directory} ({e.strerror}); set UNILSEG_HOME") from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UnilsegError(f"cache directory {directory} is not writable; set UNILSEG_HOME to a writable directory")
    return directory


def download(name: str, directory: Path | None = None, quiet: bool = False) -> Path:
    """Download model `name` into the cache (once) and return its path."""
    spec = get_spec(name)
    directory = _writable_cache(Path(directory) if directory else cache_dir())
    dest = directory / spec.filename
    if dest.is_file():
        verify_file(dest, spec)
        return dest
    if spec.gdrive_folder is None:
        raise UnilsegError(f"model {name} has no download source; get {spec.filename} from {spec.source}")
    part = dest.with_name(dest.name + ".part")
    hint = f"download {spec.filename} by hand from {spec.source} into {directory}"
    try:
        import gdown
        import requests

        timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
        listing = gdown.download_folder(url=spec.gdrive_folder, skip_download=True, quiet=True, timeout=timeout)
        entry = next((f for f in listing or [] if Path(f.path).name == spec.filename), None)
        if entry is None:
            raise UnilsegError(f"{spec.filename} is no longer in {spec.gdrive_folder}; {hint}")
        gdown.download(id=entry.id, output=str(part), quiet=quiet, resume=True, timeout=timeout)
    except UnilsegError:
        raise
    except (requests.exceptions.RequestException, OSError) as e:
        raise UnilsegError(f"cannot reach Google Drive to download {name} ({e.__class__.__name__}); {hint}") from e
    except Exception as e:  # gdown raises its own types for quota / permission pages
        raise UnilsegError(f"download of {name} failed ({e.__class__.__name__}: {e}); {hint}") from e
    if not part.is_file():
        raise UnilsegError(f"download of {name} produced no file; {hint}")
    try:
        verify_file(part, spec)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return dest
