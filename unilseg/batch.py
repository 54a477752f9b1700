"""Planning a batch run: inputs -> items (image, expression, output paths) -> this shard's share.

Pure bookkeeping, no model: expanding files/directories/globs, reading expression
files and manifests, naming outputs `{image_stem}__{slug}` with collisions resolved,
sharding, resuming, and the `results.jsonl` log. Names are assigned over the whole
plan before sharding, so every shard and every resumed run agrees on them.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UnilsegError

# What a directory or glob contributes; names are matched case-insensitively.
IMAGE_EXTENSIONS = frozenset(
    ".bmp .dib .jpg .jpeg .jpe .jp2 .png .webp .pbm .pgm .ppm .pnm .pxm .sr .ras .tif .tiff .exr .hdr .pic".split()
)
MASK_EXTENSIONS = {"png": ".png", "npy": ".npy", "rle-json": ".json"}
PROB_SUFFIX = ".prob.npy"
MAX_STEM, MAX_SLUG = 64, 48  # a name stays far below the 255-byte limit of common file systems


@dataclass
class Item:
    """One (image, expression) pair and where its outputs go."""

    index: int  # position in the whole plan (before sharding)
    image: str  # image path as given or expanded
    expression: str
    output: Path  # the mask file
    error: str | None = None  # known before running (empty expression, clashing output)
    explicit: bool = False  # output named by a manifest, not derived

    def sidecar(self, suffix: str) -> Path:
        """The output path with its extension replaced by `suffix` (e.g. '.prob.npy')."""
        base = self.output.with_suffix("")
        return base.parent / (base.name + suffix)


# ---------------------------------------------------------------- inputs


def expand_images(specs: Sequence[str]) -> list[str]:
    """--img values -> image paths: a file as is, a directory's images (sorted), a glob's images (sorted).

    A value naming no file, directory or glob match is kept, so it fails as an item.
    """
    out: list[str] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(
                str(p) for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UnilsegError(f"--img {spec}: no images in this directory (looked for {_ext_hint()})")
            out.extend(found)
        elif path.is_file() or not glob.has_magic(spec):
            out.append(str(path))
        else:
            found = sorted(
                p for p in glob.glob(os.path.expanduser(spec), recursive=True)
                if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise UnilsegError(f"--img {spec}: the pattern matches no images (looked for {_ext_hint()})")
            out.extend(found)
    return out


def _ext_hint() -> str:
    return ".jpg, .png, .webp, .tif, ..."


def read_expression_file(path: str | Path) -> list[str]:
    """One expression per line (UTF-8); blank lines are skipped, surrounding spaces removed."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UnilsegError(f"cannot read --exp-file {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UnilsegError(f"--exp-file {path} is not UTF-8 text") from e
    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if line]
    if not found:
        raise UnilsegError(f"--exp-file {path} holds no expressions (one per line)")
    return found


@dataclass
class ManifestRow:
    image: str
    expression: str
    output: str | None = None


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """CSV (with a header row) or JSONL (one object per line) with `image`, `expression`, optional `output`.

    `.jsonl`/`.ndjson` files are read as JSONL, anything else as CSV. Relative image paths
    are taken from the manifest's directory. A JSONL `expression` may be a list of texts (a
    row per text), and other keys are ignored, so a training/evaluation manifest works as is.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise UnilsegError(f"cannot read --manifest {path}: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise UnilsegError(f"--manifest {path} is not UTF-8 text") from e
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        records = list(_jsonl_records(text, path))
    else:
        records = list(_csv_records(text, path))
    if not records:
        raise UnilsegError(f"--manifest {path} has no rows")
    rows = []
    for where, rec in records:
        image, expression, output = rec.get("image"), rec.get("expression"), rec.get("output")
        if not isinstance(image, str) or not image.strip():
            raise UnilsegError(f"--manifest {path}, {where}: no `image`")
        texts = expression if isinstance(expression, list) else [expression]
        if not texts or not all(t is None or isinstance(t, str) for t in texts):
            raise UnilsegError(f"--manifest {path}, {where}: `expression` must be text or a list of texts")
        if output is not None and not isinstance(output, str):
            raise UnilsegError(f"--manifest {path}, {where}: `output` must be text")
        if output and len(texts) > 1:
            raise UnilsegError(f"--manifest {path}, {where}: `output` names one file but `expression` lists "
                               f"{len(texts)} texts; drop `output` (names are derived per text) or split the row")
        image_path = Path(image.strip()).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        rows += [ManifestRow(str(image_path), text or "", (output or "").strip() or None) for text in texts]
    return rows


def _jsonl_records(text: str, path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UnilsegError(f"--manifest {path}, line {n}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise UnilsegError(f"--manifest {path}, line {n}: expected a JSON object")
        yield f"line {n}", rec


def _csv_records(text: str, path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    if "image" not in fields or "expression" not in fields:
        raise UnilsegError(
            f"--manifest {path}: the CSV header must name `image` and `expression` columns (got {fields}); "
            "JSONL manifests need a .jsonl extension"
        )
    reader.fieldnames = fields
    for n, rec in enumerate(reader, start=2):
        yield f"line {n}", rec


# ---------------------------------------------------------------- names


def slugify(text: str, max_len: int = MAX_SLUG) -> str:
    """An expression -> a lower-case ASCII `a-z0-9-` slug, safe on every file system.

    Text with no ASCII letters or digits (e.g. Chinese) becomes `u` + 8 hex digits of its
    SHA-1, so different texts still get different names.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:max_len].rstrip("-")
    return slug or "u" + hashlib.sha1(text.encode()).hexdigest()[:8]


def safe_stem(stem: str, max_len: int = MAX_STEM) -> str:
    """An image file stem -> `A-Za-z0-9._-` only, no leading dot, at most max_len characters."""
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_stem).lstrip(".")[:max_len]
    return safe or "image"


def plan_items(
    pairs: Sequence[tuple[str, str, str | None]], out_dir: Path, fmt: str
) -> list[Item]:
    """(image, expression, explicit output or None) triples -> Items with unique outputs.

    Derived names are `{safe_stem}__{slugify(expression)}` + the format's extension; a
    name taken already (compared case-insensitively, as macOS and Windows do) gets
    `__2`, `__3`, ... Explicit outputs (relative ones under out_dir) are kept; one that
    repeats an earlier explicit output makes that item fail.
    """
    ext = MASK_EXTENSIONS[fmt]
    items = [Item(i, image, expr, Path()) for i, (image, expr, _) in enumerate(pairs)]
    taken: dict[str, int] = {}
    for item, (_, _, explicit) in zip(items, pairs):
        if explicit is None:
            continue
        path = Path(explicit).expanduser()
        item.output = path if path.is_absolute() else out_dir / path
        item.explicit = True
        key = _key(item.output.with_suffix(""))
        if key in taken:
            item.error = f"output {explicit} is also the output of item {taken[key]}"
        else:
            taken[key] = item.index
    for item in items:
        if item.explicit:
            continue
        stem = f"{safe_stem(Path(item.image).stem)}__{slugify(item.expression)}"
        name, n = stem, 1
        while _key(out_dir / name) in taken:
            n += 1
            name = f"{stem}__{n}"
        taken[_key(out_dir / name)] = item.index
        item.output = out_dir / (name + ext)
    for item in items:
        if item.error is None and not item.expression.strip():
            item.error = "empty expression; give a text naming what to segment"
    return items


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path)).casefold()


def check_output_dir(sp: str, count: int) -> Path:
    """--sp of a batch -> its Path, checked (not created): a directory, or one that can be made."""
    out = Path(sp).expanduser()
    if out.exists() and not out.is_dir():
        raise UnilsegError(f"--sp {sp} is a file, but this batch has {count} items: pass a directory")
    if not out.exists() and out.suffix.lower() in IMAGE_EXTENSIONS | {".npy", ".json"}:
        raise UnilsegError(f"--sp {sp} looks like a file name, but this batch has {count} items: pass a directory")
    existing = out.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UnilsegError(f"--sp {sp}: cannot write there ({existing} is not a writable directory); choose another")
    return out


# ---------------------------------------------------------------- shards and resuming


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N (I counts from 0)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise UnilsegError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 ... 3/4 (I counts from 0)")
    return int(m[1]), int(m[2])


def select_shard(items: Sequence[Item], index: int, count: int) -> list[Item]:
    """Items of shard `index` of `count`: distinct images, in order of first appearance, go round-robin.

    All expressions of one image stay in one shard, so its image is encoded once.
    """
    order: dict[str, int] = {}
    for item in items:
        order.setdefault(item.image, len(order))
    return [item for item in items if order[item.image] % count == index]


def results_name(shard: tuple[int, int] | None) -> str:
    """`results.jsonl`, or one file per shard so shards can share an output directory."""
    return f"results.shard-{shard[0]}-of-{shard[1]}.jsonl" if shard else "results.jsonl"


def outputs_of(item: Item, save_prob: bool, overlay_ext: str | None) -> list[Path]:
    """Every file the item writes; the mask comes last (it is written last: its presence means done)."""
    paths = []
    if save_prob:
        paths.append(item.sidecar(PROB_SUFFIX))
    if overlay_ext:
        paths.append(item.sidecar(f".overlay.{overlay_ext}"))
    return [*paths, item.output]


def is_done(item: Item, save_prob: bool, overlay_ext: str | None) -> bool:
    return all(p.is_file() for p in outputs_of(item, save_prob, overlay_ext))


# ---------------------------------------------------------------- results log


@dataclass
class ResultsLog:
    """`results.jsonl`: one row per item, appended (and flushed) as each item finishes.

    A killed run keeps the rows written so far. `finish()` rewrites the file atomically
    with one row per output (the latest), in plan order, older rows of other outputs after.
    """

    path: Path
    keep_existing: bool = False
    _rows: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.keep_existing and self.path.is_file():
            self._rows = read_results(self.path)
        else:
            self.path.unlink(missing_ok=True)
        self._succeeded = {r.get("output") for r in self._rows if not r.get("error")}
        self._file = open(self.path, "a", encoding="utf-8")  # closed in finish()

    def has_success(self, output: Path) -> bool:
        """Whether a row records `output` as written without error."""
        return str(output) in self._succeeded

    def note_skipped(self, item: Item) -> None:
        """Log an item skipped as done, unless a row already says so (its run was killed before logging it)."""
        if not self.has_success(item.output):
            self.append({"image": item.image, "expression": item.expression, "output": str(item.output),
                         "score": None, "foreground": None, "seconds": 0.0, "error": None, "skipped": True})

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if not row.get("error"):
            self._succeeded.add(row.get("output"))
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()

    def finish(self, plan: Sequence[Item]) -> None:
        from .io import write_bytes_atomic

        self._file.close()
        latest: dict[str, dict[str, Any]] = {}
        for row in self._rows:
            latest.pop(row.get("output"), None)  # re-insert: the latest row keeps its place last
            latest[row.get("output")] = row
        ordered = [latest.pop(str(item.output)) for item in plan if str(item.output) in latest]
        ordered += list(latest.values())
        write_bytes_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered).encode())


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a results file; a torn last line (a killed run) is ignored."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
