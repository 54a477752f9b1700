"""Exported models: ONNX graphs or AOTInductor packages plus the settings a runtime needs.

`unilseg-export.json` holds what a runtime needs besides the graphs (input size, mean/std,
context length, threshold, tokenizer).

    unilseg export --model unilseg-20 --format onnx [--quantize int8] [--out DIR]
    unilseg segment --runtime onnx --model unilseg-20 ...      (or --weights DIR)

Without `--out` an export goes to the user cache (`exports/{model}-{variant}/`), where
`--runtime X --model NAME` finds it. A directory is written under a temporary name and
renamed when complete, so a failed export leaves nothing behind. What such a directory holds
(ExportInfo, `read_info`, the int8 schemes) is defined by its reader,
`unilseg.inference.backends.info`, and re-exported here.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from unilseg.errors import UnilsegError
from unilseg.inference.backends.info import (
    EXPORT_FILE,
    FORMATS,
    INT8_DEFAULT,
    INT8_LEGACY,
    INT8_SCHEMES,
    QUANTIZED_OPS,
    ExportInfo,
    default_export_dir,
    read_info,
)

__all__ = ["EXPORT_FILE", "FORMATS", "INT8_DEFAULT", "INT8_LEGACY", "INT8_SCHEMES", "QUANTIZED_OPS", "ExportInfo",
           "default_export_dir", "read_info", "staged_dir", "write_info"]


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling of `out` to write into; renamed to `out` on success, deleted on failure.

    An existing `out` is replaced only if it is an export directory (holds EXPORT_FILE) or empty.
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and ((out / EXPORT_FILE).is_file() or not any(out.iterdir()))):
        raise UnilsegError("{field} {out} exists and is not an export directory; name a new or empty directory",
                           field="out", out=out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise UnilsegError("cannot write into {parent}: {why}; choose another {field}", field="out", parent=out.parent,
                           why=e.strerror or e) from None
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from other users
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_info(directory: Path, info: ExportInfo) -> None:
    (Path(directory) / EXPORT_FILE).write_text(json.dumps(info.to_json(), indent=2) + "\n", encoding="utf-8")
