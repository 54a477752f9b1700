"""Batch inputs: image files, directories and globs; expression files; batch manifests."""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from unilseg.errors import UnilsegError
from unilseg.io.paths import IMAGE_EXTENSIONS, path_problem, read_lines, shown, text_problem, user_path

EXT_HINT = ".jpg, .png, .webp, .tif, ..."


def expand_images(specs: Sequence[str]) -> list[str]:
    """--img values -> image paths: a file as is, a directory's images (sorted), a glob's images (sorted).

    A value naming no file, directory or glob match is kept, so it fails as an item.
    """
    out: list[str] = []
    for spec in specs:
        path = user_path(spec)
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UnilsegError(f"--img {spec}: no images in this directory (looked for {EXT_HINT})")
            out.extend(found)
        elif path.is_file() or not glob.has_magic(spec):
            out.append(str(path))
        else:
            found = sorted(
                p for p in glob.glob(os.path.expanduser(spec), recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UnilsegError(f"--img {spec}: the pattern matches no images (looked for {EXT_HINT})")
            out.extend(found)
    return out


def read_expression_file(path: str | Path) -> list[str]:
    """One expression per line (UTF-8); blank lines are skipped, surrounding spaces removed."""
    found = read_lines(path, "--exp-file")
    if not found:
        raise UnilsegError(f"--exp-file {path} holds no expressions (one per line)")
    return found


@dataclass
class Request:
    """One row of a batch manifest: segment `expression` in `image`, optionally into `output`."""

    image: str
    expression: str
    output: str | None = None


def read_batch_manifest(path: str | Path) -> list[Request]:
    """CSV (with a header row) or JSONL (one object per line) with `image`, `expression`, optional `output`.

    Read by the one manifest reader (`unilseg.data.manifest.iter_records`). Relative image
    paths are taken from the manifest's directory. A JSONL `expression` may be a list of
    texts (a row per text), and other keys are ignored, so a training/evaluation manifest
    works as is. An empty expression is kept (it fails as an item); a malformed row stops
    the run before any work, naming up to five bad rows.
    """
    from unilseg.data.manifest import checked_rows, iter_records

    path = Path(path)
    rows: list[Request] = []
    problems: list[str] = []
    header_checked = path.suffix.lower() in (".jsonl", ".ndjson")
    for number, rec, problem in iter_records(path, "--manifest"):
        if not header_checked:
            header_checked = True
            if rec is not None and not {"image", "expression"} <= set(rec):
                raise UnilsegError(
                    f"--manifest {shown(path)}: the CSV header must name `image` and `expression` columns "
                    f"(got {sorted(rec)}); JSONL manifests need a .jsonl extension"
                )
        problem = problem or _request_problem(rec)
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        texts = rec["expression"] if isinstance(rec["expression"], list) else [rec["expression"]]
        image_path = user_path(rec["image"].strip())
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        output = (rec.get("output") or "").strip() or None
        rows += [Request(str(image_path), text or "", output) for text in texts]
    return checked_rows(f"--manifest {shown(path)}", rows, problems)


def _request_problem(rec: object) -> str | None:
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    image, expression, output = rec.get("image"), rec.get("expression"), rec.get("output")
    if not isinstance(image, str) or not image.strip():
        return "no `image`"
    if path_problem(image):
        return f"`image` {path_problem(image)}"
    texts = expression if isinstance(expression, list) else [expression]
    if not texts or not all(t is None or isinstance(t, str) for t in texts):
        return "`expression` must be text or a list of texts"
    for t in texts:
        if t is not None and text_problem(t):
            return f"`expression` {shown(repr(t))} {text_problem(t)}"
    if output is not None and not isinstance(output, str):
        return "`output` must be text"
    if output is not None and path_problem(output):
        return f"`output` {path_problem(output)}"
    if output and output.strip() and len(texts) > 1:
        return (f"`output` names one file but `expression` lists {len(texts)} texts; "
                "drop `output` (names are derived per text) or split the row")
    return None
