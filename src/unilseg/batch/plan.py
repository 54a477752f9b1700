"""Planning a batch: (image, expression, output) requests -> Items with every output path named.

Pure bookkeeping, no model: names `{image_stem}__{slug}` with collisions resolved,
sidecar paths, sharding. Names are assigned over the whole plan before sharding, so
every shard and every resumed run agrees on them; every file the plan reads or writes is
claimed in one `OutputRegistry`, so no output lands on another or on an input.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unilseg.batch.inputs import IMAGE_EXTENSIONS
from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path
from unilseg.io.writers import (
    FORMATS,
    LOSSLESS_IMAGE_EXTENSIONS,
    LOSSY_IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    PROB_SUFFIX,
    OutputRegistry,
    check_dir_target,
    confine,
    intact,
    sidecar,
)

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
    allow_absolute: bool = False, reserved: Sequence[Path] = (), registry: OutputRegistry | None = None,
) -> list[Item]:
    """(image, expression, explicit output or None) triples -> Items with unique outputs.

    Derived names are `output_stem` + the format's extension; a name taken already
    (compared case-insensitively, as macOS and Windows do, sidecars included) gets `__2`,
    `__3`, ... Explicit outputs are taken under out_dir. Every output (sidecars too) must
    lie inside out_dir after `..` and symlinks, else the item fails; an absolute explicit
    output fails unless allow_absolute, which lets it be written where it says.
    reserved: files the job writes itself (its results log), which no output may take.
    registry: the job's claims so far (its manifest, expression file, ...; default: a new
    one). Every image is claimed as an input and every file an item will write as an
    output: an explicit output that repeats another's name (or differs from it only in
    its extension, so their sidecars would be one file), or any output that would write
    over another output, a reserved file or an input, raises a UnilsegError naming both.
    """
    out_dir = Path(out_dir)
    options = options or OutputOptions()
    registry = registry if registry is not None else OutputRegistry()
    ext = MASK_EXTENSIONS[options.fmt]
    items = [Item(i, image, expr) for i, (image, expr, _) in enumerate(requests)]
    claim_images(registry, ((item.image, item) for item in items))
    names = UniqueNames(out_dir)
    taken = names.taken
    owners: dict[int, str] = {}  # taken's owners -> what a message calls them
    for n, path in enumerate(reserved, start=1):
        taken[_key(path.with_suffix(""))] = -n
        owners[-n] = f"the results log {path}"
        if registry.is_free(path):  # unless the caller claimed it already
            registry.write(path, owners[-n])
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
        if path.is_absolute() and not allow_absolute:
            item.error = str(UnilsegError("{field} {path} is an absolute path; outputs go under {out_dir} "
                                          "({allow_absolute} allows it)", field="output", path=explicit))
            continue
        key = _key(item.output.with_suffix(""))
        owners[item.index] = f"the output {item.output} of {describe_item(item)}"
        if key in taken:
            same = _key(item.output) == _key(_owner_path(items, reserved, taken[key]))
            how = "is also" if same else "differs only in its extension from"
            raise UnilsegError(f"{owners[item.index]} {how} {owners[taken[key]]} (outputs, sidecars included, "
                               "need names of their own); give them different names")
        taken[key] = item.index
        problem = _format_problem(path, options.fmt)  # after the job-wide name checks: those refuse the job
        if problem:
            item.error = f"output {explicit} {problem}"
    for item in items:
        if item.explicit and item.error is None:
            _finish(item, options, registry)
    for item in items:
        if item.explicit:
            continue

        def free(name: str, item: Item = item) -> bool:  # the name chosen is the last one asked about
            item.output = out_dir / (name + ext)
            return all(registry.is_free(p) for p in item.with_sidecars(options).outputs())

        names.claim(output_stem(str(item.image), item.expression), item.index, free)
        item.root = out_dir
        _finish(item, options, registry, sidecars=False)
    return items


def _format_problem(path: Path, fmt: str) -> str | None:
    """Why an explicit output's extension contradicts the job's mask format (a .png holding RLE JSON), or
    None. No extension, or one that names no mask format, is written as `fmt`, as it always was."""
    ext = path.suffix.lower()
    if ext not in LOSSLESS_IMAGE_EXTENSIONS | LOSSY_IMAGE_EXTENSIONS | set(MASK_EXTENSIONS.values()):
        return None
    if ext in (LOSSLESS_IMAGE_EXTENSIONS if fmt == "png" else {MASK_EXTENSIONS[fmt]}):
        return None
    return f"ends in {ext}, but the job writes {fmt} masks; name it {path.with_suffix(MASK_EXTENSIONS[fmt])}"


def _owner_path(items: Sequence[Item], reserved: Sequence[Path], owner: int) -> Path:
    return reserved[-owner - 1] if owner < 0 else items[owner].output  # type: ignore[return-value]


def _finish(item: Item, options: OutputOptions, registry: OutputRegistry, sidecars: bool = True) -> None:
    """Sidecars (unless set already), the checks an item can fail alone (blank text, an output leaving
    --sp), then its outputs claimed."""
    if sidecars:
        item.with_sidecars(options)
    if not item.expression.strip():
        item.error = "empty expression; give a text naming what to segment"
        return
    try:
        if item.root is not None:  # Item.check_confined, with the paths the registry resolves anyway
            real_root = registry.resolve(item.root)
            for path in item.outputs():
                confine(path, item.root, registry.resolve(path), real_root)
    except UnilsegError as e:
        item.error = str(e)
        return
    what = describe_item(item)
    registry.write_all(item_outputs(item, what))


def item_outputs(item: Item, what: str) -> list[tuple[Path, str]]:
    """An item's files and what a message calls each: `the mask M of item 3 (a.png, 'the sky')`."""
    kinds = ((item.prob_path, "the soft map"), (item.overlay_path, "the overlay"), (item.output, "the mask"))
    return [(path, f"{kind} {path} of {what}") for path, kind in kinds if path is not None]


def describe_item(item: Item) -> str:
    """`item 3 (a.png, 'the sky')`: an item as messages name it (a long text cut short)."""
    text = item.expression if len(item.expression) <= 40 else item.expression[:37] + "..."
    image = Path(item.image).name if isinstance(item.image, (str, Path)) else repr(item.image)
    return f"item {item.index} ({image}, {text!r})"


def claim_images(registry: OutputRegistry, images: Iterable[tuple[Hashable, Item | None]],
                 what: str = "the input image") -> None:
    """Claim each distinct image path as an input (keys that are no path, e.g. sample indices, are skipped)."""
    seen: set[str] = set()
    for image, item in images:
        if isinstance(image, (str, Path)) and str(image) not in seen:
            seen.add(str(image))
            registry.read(image, f"{what} {image}" + (f" of {describe_item(item)}" if item is not None else ""))


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

    def claim(self, stem: str, owner: int, free: Callable[[str], bool] | None = None) -> str:
        """The first free name of `stem`, now held by `owner`; free: whether a name's files are
        unclaimed elsewhere (e.g. an explicit output named like this name's sidecar)."""
        n = self._next.get(stem, 1)
        name = stem if n == 1 else f"{stem}__{n}"
        while (key := _key(self.out_dir / name)) in self.taken or (free is not None and not free(name)):
            n += 1
            name = f"{stem}__{n}"
        self._next[stem] = n + 1
        self.taken[key] = owner
        return name


_OWN_TAIL = re.compile(r"[a-z0-9-]+(__\d+)?")  # what follows `{stem}__` in a derived name: a slug (or `labels`), `__N`
_OVERLAY_SUFFIXES = (".overlay.jpg", ".overlay.png")


def without_own_outputs(images: Sequence[str], specs: Sequence[str], out_dir: str | Path,
                        note: Callable[[str], None] | None = None) -> list[str]:
    """The images a folder or glob gave (`expand_images(specs)`), less those in out_dir that unilseg
    names itself, so a run into its own input folder never reads masks back as images.

    Left out, of the files inside out_dir that no --img names itself: those named as a
    job names its outputs for another of the images (`{its stem}__{slug or labels}`, maybe
    `__N`-numbered, maybe `.overlay.jpg|png`), and those an earlier run's `results*.jsonl`
    there lists. A `note:` line says how many (note: where to; default stderr).
    """
    real_out = os.path.realpath(out_dir)
    named = {str(user_path(spec)) for spec in specs}
    real_dirs: dict[str, str] = {}

    def inside(image: str) -> bool:
        head = os.path.dirname(os.path.abspath(image))
        real_head = real_dirs.setdefault(head, os.path.realpath(head))
        return real_head == real_out or real_head.startswith(real_out.rstrip(os.sep) + os.sep)

    candidates = [image not in named and inside(image) for image in images]
    if not any(candidates):
        return list(images)
    stems = {safe_stem(Path(image).stem).casefold() for image in images}
    logged = _logged_outputs(Path(out_dir))

    def own(image: str) -> bool:
        if os.path.realpath(image) in logged:
            return True
        name = Path(image).name
        base = next((name[: -len(s)] for s in _OVERLAY_SUFFIXES if name.lower().endswith(s)), Path(name).stem)
        # every split into `{stem}__{tail}`: a stem may hold `__` itself
        cuts = [i for i in range(1, len(base)) if base.startswith("__", i)]
        return any(base[:i].casefold() in stems and _OWN_TAIL.fullmatch(base[i + 2 :]) for i in cuts)

    dropped = {image for image, maybe in zip(images, candidates) if maybe and own(image)}
    if dropped:
        line = (f"note: --img: left out {len(dropped)} file(s) in {out_dir} that are outputs of this job or of an "
                f"earlier run into --sp (e.g. {Path(min(dropped)).name}), not input images")
        (note or (lambda text: print(text, file=sys.stderr)))(line)
    return [image for image in images if image not in dropped]


def _logged_outputs(out_dir: Path) -> set[str]:
    """The resolved paths of every file the results logs in out_dir record (outputs, legends, overlays)."""
    from unilseg.batch.results import read_results

    found: set[str] = set()
    try:
        logs = [p for p in out_dir.iterdir() if re.fullmatch(r"results(\.shard-\d+-of-\d+)?\.jsonl", p.name)
                and p.is_file()]
    except OSError:
        return found
    for log in logs:
        try:
            rows = read_results(log)
        except (OSError, UnicodeDecodeError):
            continue
        for row in rows:
            for key in ("output", "legend", "overlay"):
                value = row.get(key)
                if isinstance(value, str) and value:
                    found.add(os.path.realpath(value))
                    if key == "output":
                        found.update(os.path.realpath(sidecar(Path(value), s)) for s in _OVERLAY_SUFFIXES)
    return found


def check_output_dir(sp: str | Path, count: int) -> Path:
    """--sp of a batch -> its Path, checked (not created): a directory, or one that can be made."""
    out = user_path(sp)
    if out.exists() and not out.is_dir():
        raise UnilsegError("{field} {path} is a file, but this batch has {count} items: pass a directory",
                           field="out_dir", path=sp, count=count)
    if not out.exists() and out.suffix.lower() in IMAGE_EXTENSIONS | {".npy", ".json"}:
        raise UnilsegError("{field} {path} looks like a file name, but this batch has {count} items: pass a "
                           "directory", field="out_dir", path=sp, count=count)
    return check_dir_target(out, "out_dir")


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
