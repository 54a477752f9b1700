"""The unified format: one JSON object per line naming an image, a mask and the texts for it.

    {"image": "images/1.jpg", "mask": "masks/1.png", "expression": ["the red car", "the car on the left"],
     "granularity": "object", "source": "mydata", "id": "1"}

`image` and a PNG `mask` are paths (relative ones are taken from the manifest's folder);
`mask` may instead be a COCO RLE `{"size": [h, w], "counts": str or list}`. A PNG mask is
the target where it is non-zero. `expression` is a text or a non-empty list of texts that
all name the same mask. `granularity` (default "object") is free text, usually one of
object / part / group / stuff; `source` (default: the manifest's file stem) names the
data set. Other keys are kept in `Sample.meta`.
"""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.errors import UnilsegError
from unilseg.io.paths import MANIFEST_LIMIT, open_input, path_problem, shown, text_problem, user_path
from unilseg.io.writers import rle_decode

REQUIRED = ("image", "mask", "expression")
KNOWN = (*REQUIRED, "granularity", "source", "id")


@dataclass
class Sample:
    """One (image, mask, texts) record.

    image: a path, or an RGB uint8 (H, W, 3) array for generated data.
    mask: a PNG path, a COCO RLE dict, or a bool (H, W) array.
    origin: where the record came from ("file:line"), for error messages.
    """

    image: str | Path | np.ndarray
    mask: str | Path | dict | np.ndarray
    expressions: list[str]
    granularity: str = "object"
    source: str = ""
    id: str = ""
    origin: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _row_problem(row: Any) -> str | None:
    """What is wrong with a decoded row, or None."""
    if not isinstance(row, dict):
        return f"expected a JSON object, got {type(row).__name__}"
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        return f"missing key(s) {', '.join(missing)}"
    if not isinstance(row["image"], str) or not row["image"].strip():
        return "'image' must be a non-empty path string"
    if path_problem(row["image"]):
        return f"'image' {path_problem(row['image'])}"
    mask = row["mask"]
    if isinstance(mask, dict):
        size, counts = mask.get("size"), mask.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            return "'mask' RLE needs 'size': [height, width] of positive integers"
        if not (isinstance(counts, str) or (isinstance(counts, list) and all(isinstance(v, int) for v in counts))):
            return "'mask' RLE needs 'counts': a string or a list of integers"
    elif not isinstance(mask, str) or not mask.strip():
        return "'mask' must be a PNG path or a COCO RLE object"
    elif path_problem(mask):
        return f"'mask' {path_problem(mask)}"
    expr = row["expression"]
    texts = [expr] if isinstance(expr, str) else expr
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        return "'expression' must be a non-empty text or a non-empty list of non-empty texts"
    for t in texts:
        if text_problem(t):
            return f"'expression' {shown(repr(t))} {text_problem(t)}"
    for key in ("granularity", "source", "id"):
        value = row.get(key, "x")
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            return f"'{key}' must be a non-empty string"
    return None


def _resolve(base: Path, path: str) -> Path:
    p = user_path(path)
    return p if p.is_absolute() else base / p


def iter_records(path: str | Path, what: str = "manifest") -> Iterator[tuple[int, Any, str | None]]:
    """Stream a manifest's rows -> (line number, record or None, problem or None).

    `.jsonl` / `.ndjson` files hold one JSON value per line (blank lines skipped); any
    other file is CSV with a header row, each row a dict of its columns. The file is read
    as UTF-8 (a BOM is ignored) one line at a time, so a huge manifest is never held whole;
    it must be a regular file of at most MANIFEST_LIMIT bytes (`paths.open_input`).
    Problems with one row (broken JSON) are yielded; an unreadable file raises.
    """
    path = Path(path)
    f = io.TextIOWrapper(open_input(path, what, MANIFEST_LIMIT), encoding="utf-8-sig", newline="")
    number = 0
    try:
        with f:
            if path.suffix.lower() in (".jsonl", ".ndjson"):
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        yield number, json.loads(line), None
                    except json.JSONDecodeError as e:
                        yield number, None, f"not valid JSON ({e.msg})"
                    except RecursionError:
                        yield number, None, "JSON nested too deeply"
            else:
                reader = csv.DictReader(f)
                fields = [name.strip() for name in reader.fieldnames or []]
                reader.fieldnames = fields
                if not fields:
                    return
                for rec in reader:
                    number = reader.line_num
                    if None in rec:
                        yield number, None, f"more values than the {len(fields)} header columns"
                    else:
                        yield number, rec, None
    except UnicodeDecodeError as e:
        raise UnilsegError(f"{what} {shown(path)} is not UTF-8 text (line {number + 1}); save it as UTF-8") from e
    except csv.Error as e:
        raise UnilsegError(f"{what} {shown(path)}: line {number + 1}: not valid CSV ({e})") from e


def read_manifest(path: str | Path, check_files: bool = True) -> list[Sample]:
    """Read and validate a JSONL manifest; every bad row is reported with its line number.

    check_files: also require that image and mask files exist.
    """
    path = Path(path)
    base = path.parent
    samples, problems = [], []
    for number, row, problem in iter_records(path):
        if problem is None:
            problem = _row_problem(row)
        if problem is None and check_files:
            for key in ("image", "mask"):
                if isinstance(row[key], str) and not _resolve(base, row[key]).is_file():
                    problem = f"{key} file not found: {_resolve(base, row[key])}"
                    break
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        expr = row["expression"]
        mask = row["mask"]
        samples.append(Sample(
            image=_resolve(base, row["image"]),
            mask=_resolve(base, mask) if isinstance(mask, str) else mask,
            expressions=[expr] if isinstance(expr, str) else list(expr),
            granularity=str(row.get("granularity", "object")),
            source=str(row.get("source", path.stem)),
            id=str(row.get("id", number)),
            origin=f"{path}:{number}",
            meta={k: v for k, v in row.items() if k not in KNOWN},
        ))
    return checked_rows(f"manifest {path}", samples, problems)


def checked_rows(where: str, samples: list[Sample], problems: list[str]) -> list[Sample]:
    """Return samples, or raise one error naming up to five bad rows (or that there were none)."""
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... ({len(problems)} bad rows in all)" if len(problems) > 5 else "")
        raise UnilsegError(f"{where}: {shown}")
    if not samples:
        raise UnilsegError(f"{where} has no rows")
    return samples


def _json_path(p: str | Path, base: Path) -> str:
    p = Path(p)
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p.resolve())


def write_manifest(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples with path images/masks (or RLE masks) as JSONL; paths relative to the file when inside
    its folder. Returns the number of rows."""
    path = Path(path)
    base = path.parent
    rows = []
    for s in samples:
        if isinstance(s.image, np.ndarray) or isinstance(s.mask, np.ndarray):
            raise UnilsegError("write_manifest needs image and mask files (or RLE); save arrays as PNGs first")
        row: dict[str, Any] = {
            "image": _json_path(s.image, base),
            "mask": s.mask if isinstance(s.mask, dict) else _json_path(s.mask, base),
            "expression": s.expressions[0] if len(s.expressions) == 1 else s.expressions,
            "granularity": s.granularity,
            "source": s.source,
        }
        if s.id:
            row["id"] = s.id
        row.update(s.meta)
        rows.append(json.dumps(row, ensure_ascii=False))
    from unilseg.io.writers import write_atomic

    write_atomic(path, ("\n".join(rows) + "\n").encode("utf-8"))
    return len(rows)


def load_image(sample: Sample) -> np.ndarray:
    """The sample's image as BGR uint8 (H, W, 3)."""
    if isinstance(sample.image, np.ndarray):
        return np.ascontiguousarray(sample.image[:, :, ::-1])
    from unilseg.inference.transforms import read_image

    try:
        return read_image(sample.image)
    except UnilsegError as e:
        raise UnilsegError(f"{sample.origin or sample.id}: {e}") from e


def load_mask(sample: Sample, shape: Sequence[int] | None = None) -> np.ndarray:
    """The sample's mask as bool (H, W); `shape` (H, W) if given must match."""
    where = sample.origin or sample.id
    if isinstance(sample.mask, np.ndarray):
        mask = sample.mask.astype(bool)
    elif isinstance(sample.mask, dict):
        try:
            mask = rle_decode(sample.mask)
        except (ValueError, TypeError, UnicodeEncodeError) as e:
            raise UnilsegError(f"{where}: cannot decode the RLE mask ({e})") from e
    else:
        import cv2

        data = np.fromfile(sample.mask, dtype=np.uint8) if Path(sample.mask).is_file() else None
        if data is None:
            raise UnilsegError(f"{where}: mask file not found: {sample.mask}")
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
        if image is None:
            raise UnilsegError(f"{where}: cannot read mask {sample.mask}; masks are PNG images, non-zero = target")
        mask = (image != 0).any(axis=2) if image.ndim == 3 else image != 0
    if shape is not None and tuple(mask.shape) != tuple(shape[:2]):
        raise UnilsegError(
            f"{where}: mask is {mask.shape[0]}x{mask.shape[1]} but the image is {shape[0]}x{shape[1]} (height x width)"
        )
    return mask
