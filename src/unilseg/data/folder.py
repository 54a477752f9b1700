"""A plain folder of images and masks with a CSV of texts -> Samples.

    DATA/texts.csv     header: image,expression[,mask][,granularity][,source][,id]
    DATA/images/...    any image format OpenCV reads
    DATA/masks/...     PNG masks, non-zero = target, same size as the image

Paths in the CSV are relative to its folder. Without a `mask` column (or with an empty
cell) the mask is `masks/<image stem>.png`. Several rows may share one image.
"""
from __future__ import annotations

import csv
from pathlib import Path

from unilseg.data.manifest import Sample, checked_rows
from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path

COLUMNS = ("image", "expression", "mask", "granularity", "source", "id")


def load_folder(path: str | Path, csv_name: str = "texts.csv", check_files: bool = True) -> list[Sample]:
    """Read `path/csv_name` (or `path` itself if it is a CSV file); bad rows are reported by line."""
    path = user_path(path)
    csv_path = path if path.is_file() else path / csv_name
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = [(reader.line_num, row) for row in reader]
    except OSError as e:
        raise UnilsegError(f"cannot read {csv_path}: {e.strerror}; a folder data set needs a {csv_name}") from e
    except (UnicodeDecodeError, csv.Error) as e:
        raise UnilsegError(f"{csv_path} is not a UTF-8 CSV file ({e})") from e
    missing = [c for c in ("image", "expression") if c not in header]
    if missing:
        raise UnilsegError(f"{csv_path}: header must have column(s) {', '.join(missing)} (found: {', '.join(header)})")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise UnilsegError(f"{csv_path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(COLUMNS)}")
    samples, problems = [], []
    for line, row in rows:
        if None in row or any(v is None for v in row.values()):
            problems.append(f"line {line}: expected {len(header)} fields")
            continue
        image, text = row["image"].strip(), row["expression"].strip()
        mask = (row.get("mask") or "").strip() or f"masks/{Path(image).stem}.png"
        if not image or not text:
            problems.append(f"line {line}: empty {'image' if not image else 'expression'}")
            continue
        image_path, mask_path = base / image, base / mask
        if check_files:
            absent = [str(p) for p in (image_path, mask_path) if not p.is_file()]
            if absent:
                problems.append(f"line {line}: file not found: {', '.join(absent)}")
                continue
        samples.append(Sample(
            image=image_path, mask=mask_path, expressions=[text],
            granularity=(row.get("granularity") or "object").strip(), source=(row.get("source") or base.name).strip(),
            id=(row.get("id") or str(line)).strip(), origin=f"{csv_path}:{line}",
        ))
    return checked_rows(str(csv_path), samples, problems)
