"""Planning a batch: (image, expression, output) requests -> Items with every output path named.

Pure bookkeeping, no model: names `{image_stem}__{slug}` with collisions resolved,
sidecar paths, sharding. Names are assigned over the whole plan before sharding, so
every shard and every resumed run agrees on them.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UnilsegError
from ..paths import user_path
from ..writers import FORMATS, MASK_EXTENSIONS, PROB_SUFFIX, check_dir_target, confine, intact, sidecar
from .inputs import IMAGE_EXTENSIONS

MAX_STEM, MAX_SLUG = 64, 48  # a name stays far below the 255-byte limit of common file systems
OVERLAY_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class OutputOptions:
    """What each item writes besides its mask."""

    fmt: str = "png"  # mask format: png | npy | rle-json
    save_prob: bool = False  # NAME.prob.npy: the float32 soft map
    overlay: str | None = None  # NAME.overlay.jpg|png: the image with the mask drawn on it

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UnilsegError(f"unknown mask format {self.fmt!r}; use one of {', '.join(FORMATS)}")
        if self.overlay is not None and self.overlay not in OVERLAY_FORMATS:
            raise UnilsegError(f"overlay format {self.overlay!r}: use jpg or png")


@dataclass
class Item:
    """One (image, expression) pair and where its outputs go.

    `image` is whatever the run's loader reads (a path by default; any hashable key, e.g.
    a sample index for evaluation). Items with equal `image` share one Swin pass.
    """

    index: int  # position in the whole plan (before sharding)
    image: Hashable
    expression: str
    output: Path | None = None  # the mask file (None: nothing is written)
    prob_path: Path | None = None
    overlay_path: Path | None = None
    error: str | None = None  # known before running (empty expression, clashing output)
    explicit: bool = False  # output named by the caller, not derived
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None  # every output must stay inside it (None: not checked)

    def check_confined(self) -> None:
        """Raise a UnilsegError if an output leaves `root` (after `..` and symlinks)."""
        if self.root is not None:
            for path in self.outputs():
                confine(path, self.root)

    def outputs(self) -> list[Path]:
        """Every file the item writes; the mask last (it is written last: its presence means done)."""
        return [p for p in (self.prob_path, self.overlay_path, self.output) if p is not None]

    def is_done(self) -> bool:
        """Whether every output exists and is whole (what --skip-existing skips; an empty or cut file is redone)."""
        paths = self.outputs()
        return bool(paths) and all(intact(p) for p in paths)

    def with_sidecars(self, options: OutputOptions) -> Item:
        """Set the soft-map and overlay paths beside the mask, as `options` asks."""
        if self.output is not None:
            self.prob_path = sidecar(self.output, PROB_SUFFIX) if options.save_prob else None
            self.overlay_path = sidecar(self.output, f".overlay.{options.overlay}") if options.overlay else None
        return self


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


def output_stem(image: str, expression: str) -> str:
    """The derived name of an item's outputs, without extension: `{safe image stem}__{slug}`."""
    return f"{safe_stem(Path(image).stem)}__{slugify(expression)}"


def plan_items(
    requests: Sequence[tuple[str, str, str | None]], out_dir: str | Path, options: OutputOptions | None = None,
    allow_absolute: bool = False, reserved: Sequence[Path] = (),
) -> list[Item]:
    """(image, expression, explicit output or None) triples -> Items with unique outputs.

    Derived names are `output_stem` + the format's extension; a name taken already
    (compared case-insensitively, as macOS and Windows do) gets `__2`, `__3`, ...
    Explicit outputs are taken under out_dir; one that repeats an earlier explicit output
    makes that item fail. Every output (sidecars too) must lie inside out_dir after `..`
    and symlinks, else the item fails; an absolute explicit output fails unless
    allow_absolute, which lets it be written where it says. reserved: files the job writes
    itself (its results log), which no output may take.
    """
    out_dir = Path(out_dir)
    options = options or OutputOptions()
    ext = MASK_EXTENSIONS[options.fmt]
    items = [Item(i, image, expr) for i, (image, expr, _) in enumerate(requests)]
    names = UniqueNames(out_dir)
    taken = names.taken
    taken.update({_key(path.with_suffix("")): -1 for path in reserved})
    for item, (_, _, explicit) in zip(items, requests):
        if explicit is None:
            continue
        path = user_path(explicit)
        item.output = out_dir / path  # an absolute path stays as it is
        item.explicit = True
        item.root = None if allow_absolute and path.is_absolute() else out_dir
        if not item.output.name or item.output.name == "..":
            item.error = f"output {explicit!r} names no file; give a file name such as masks/a.png"
            continue
        key = _key(item.output.with_suffix(""))
        if path.is_absolute() and not allow_absolute:
            item.error = (f"output {explicit} is an absolute path; outputs go under --sp "
                          "(--allow-absolute-output allows it)")
        elif key in taken:
            owner = taken[key]
            item.error = f"output {explicit} is " + (f"also the output of item {owner}" if owner >= 0 else
                                                     "where the job writes its results log")
        else:
            taken[key] = item.index
    for item in items:
        if item.explicit:
            continue
        item.output = out_dir / (names.claim(output_stem(str(item.image), item.expression), item.index) + ext)
        item.root = out_dir
    for item in items:
        if item.error is None:  # a failed item writes nothing (and its output may name no file)
            item.with_sidecars(options)
        if item.error is None and not item.expression.strip():
            item.error = "empty expression; give a text naming what to segment"
        if item.error is None:
            try:
                item.check_confined()
            except UnilsegError as e:
                item.error = str(e)
    return items


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path)).casefold()


class UniqueNames:
    """Output names under one folder, unique case-insensitively (as macOS and Windows compare them).

    A name taken already gets `__2`, `__3`, ...; a counter per stem keeps n repeats of one
    name (100k rows of one image and text) linear, not quadratic.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.taken: dict[str, int] = {}  # _key(path without extension) -> the item that holds it
        self._next: dict[str, int] = {}

    def claim(self, stem: str, owner: int) -> str:
        """The first free name of `stem`, now held by `owner`."""
        n = self._next.get(stem, 1)
        name = stem if n == 1 else f"{stem}__{n}"
        while (key := _key(self.out_dir / name)) in self.taken:
            n += 1
            name = f"{stem}__{n}"
        self._next[stem] = n + 1
        self.taken[key] = owner
        return name


def check_output_dir(sp: str | Path, count: int) -> Path:
    """--sp of a batch -> its Path, checked (not created): a directory, or one that can be made."""
    out = user_path(sp)
    if out.exists() and not out.is_dir():
        raise UnilsegError(f"--sp {sp} is a file, but this batch has {count} items: pass a directory")
    if not out.exists() and out.suffix.lower() in IMAGE_EXTENSIONS | {".npy", ".json"}:
        raise UnilsegError(f"--sp {sp} looks like a file name, but this batch has {count} items: pass a directory")
    return check_dir_target(out, "--sp")


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
    order: dict[Hashable, int] = {}
    for item in items:
        order.setdefault(item.image, len(order))
    return [item for item in items if order[item.image] % count == index]


def results_name(shard: tuple[int, int] | None) -> str:
    """`results.jsonl`, or one file per shard so shards can share an output directory."""
    return f"results.shard-{shard[0]}-of-{shard[1]}.jsonl" if shard else "results.jsonl"
