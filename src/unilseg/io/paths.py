"""User-given paths, texts and input files, checked where they enter.

- `user_path`: `~` expanded as a shell does it.
- Paths may hold any bytes the OS allows except NUL: a name that is not UTF-8 reaches
  Python as lone surrogates U+DC80..U+DCFF (`os.fsdecode`'s surrogateescape) and is
  carried as such; `path_problem` refuses NUL and other lone surrogates (no file can have
  them). Texts (instructions, class names) must be valid Unicode: `text_problem`.
- `shown` (from unilseg.errors) makes any of them printable; `json_text` writes them into JSON losslessly (a
  lone surrogate as a `\\udcXX` escape, so the file stays valid UTF-8 and reads back the same).
- `open_input` / `read_text_input` / `read_lines`: an input file is opened only if it is a regular file
  (a FIFO, a device or a socket would block or never end), and read up to a size bound.
"""
from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unilseg.errors import UnilsegError, shown

MIB = 1 << 20
MANIFEST_LIMIT = 256 * MIB  # manifests and results logs (about a million rows)
TEXT_LIMIT = 16 * MIB  # expression and class files
SETTINGS_LIMIT = 1 * MIB  # configs and export settings (unilseg-export.json)
# What a directory or glob contributes as images (inputs, frames of a video folder); matched case-insensitively.
IMAGE_EXTENSIONS = frozenset(
    ".bmp .dib .jpg .jpeg .jpe .jp2 .png .webp .pbm .pgm .ppm .pnm .pxm .sr .ras .tif .tiff .exr .hdr .pic".split()
)

_SURROGATE = re.compile("[\ud800-\udfff]")


def user_path(path: str | Path) -> Path:
    """`path` with `~` / `~user` expanded; an unknown user's `~name` stays literal, as in a shell
    (`Path.expanduser` raises there, and a manifest row or flag must not crash the run)."""
    return Path(os.path.expanduser(path))


def path_problem(path: str) -> str | None:
    """What makes `path` impossible as a file name (NUL, a lone surrogate no bytes decode to), or None."""
    if "\0" in path:
        return "holds a NUL character, which no file name can hold"
    try:
        os.fsencode(path)
    except UnicodeEncodeError:
        return "holds a lone surrogate (text that is not valid Unicode), which no file name can hold"
    return None


def text_problem(text: str) -> str | None:
    """What makes `text` unusable as an instruction (undecodable bytes, lone surrogates), or None."""
    if _SURROGATE.search(text):
        return "is not valid UTF-8 text (it holds undecodable bytes or a lone surrogate)"
    return None


def check_path(path: str, field: str) -> str:
    """`path`, or a UnilsegError about `field` (the argument that gave it) if no file can have that name."""
    problem = path_problem(path)
    if problem:
        raise UnilsegError("{field} {path} {problem}; check the path", field=field, path=shown(repr(path)),
                           problem=problem)
    return path


def check_text(text: str, field: str) -> str:
    """`text`, or a UnilsegError about `field` (the argument that gave it) if it is not valid Unicode."""
    problem = text_problem(text)
    if problem:
        raise UnilsegError("{field} {text} {problem}; give it as UTF-8", field=field, text=shown(repr(text)),
                           problem=problem)
    return text


def json_text(obj: Any, **kwargs: Any) -> str:
    """`json.dumps(obj, ensure_ascii=False)`, with any lone surrogate (a non-UTF-8 file name) as a `\\uXXXX`
    escape: the text encodes as UTF-8 and `json.loads` gives back the same string."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


class _Bounded(io.RawIOBase):
    """A raw file that refuses to give more than `limit` bytes (a file that grows while read)."""

    def __init__(self, raw: io.FileIO, limit: int, too_big: Callable[[], UnilsegError]) -> None:
        self.raw, self.left, self.too_big = raw, limit, too_big

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        if n:
            self.left -= n
            if self.left < 0:
                raise self.too_big()
        return n or 0

    def close(self) -> None:
        self.raw.close()
        super().close()


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB else f"{n} bytes"


def open_input(path: str | Path, field: str, limit: int) -> io.BufferedReader:
    """Open the input file that `field` names for reading (binary), refused in one line unless it is a
    readable regular file of at most `limit` bytes. Not opened at all if it is a FIFO, device or socket;
    opened non-blocking and checked again on the open file, so a FIFO swapped in meanwhile cannot hang
    the run. `field`: the argument that gave the path (UnilsegError.field)."""
    p = Path(path)
    name = shown(p)
    check_regular(p, field)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UnilsegError("cannot read {field} {path}: {why}", field=field, path=name, why=e.strerror) from e
    raw = io.FileIO(fd, "rb", closefd=True)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnilsegError("{field} {path} is {kind}, not a file; {field} must name a regular file",
                               field=field, path=name, kind=_kind(st.st_mode))

        def too_big() -> UnilsegError:
            return UnilsegError("{field} {path} is larger than {size}, the most read for it; split or shorten it",
                                field=field, path=name, size=_size(limit))

        if st.st_size > limit:
            raise too_big()
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: blocking reads, as usual
        return io.BufferedReader(_Bounded(raw, limit, too_big))
    except BaseException:
        raw.close()
        raise


def check_regular(path: str | Path, field: str) -> None:
    """Refuse in one line, without opening it, an input that is missing, a directory, a FIFO, a device
    or a socket (opening a FIFO blocks until a writer comes; a device may never end). `field`: the
    argument that gave the path."""
    check_path(str(path), field)
    try:
        st = os.stat(path)
    except OSError as e:
        raise UnilsegError("cannot read {field} {path}: {why}", field=field, path=shown(path), why=e.strerror) from e
    if stat.S_ISDIR(st.st_mode):
        raise UnilsegError("{field} {path} is a directory; {field} must name a regular file", field=field,
                           path=shown(path))
    if not stat.S_ISREG(st.st_mode):
        raise UnilsegError("{field} {path} is {kind}, not a file; {field} must name a regular file", field=field,
                           path=shown(path), kind=_kind(st.st_mode))


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_text_input(path: str | Path, field: str, limit: int) -> str:
    """The whole UTF-8 text of the input file `field` names (a BOM ignored), checked as `open_input` does."""
    with open_input(path, field, limit) as f:
        data = f.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UnilsegError("{field} {path} is not UTF-8 text (line {line}); save it as UTF-8", field=field,
                           path=shown(path), line=line) from None


def read_lines(path: str | Path, what: str) -> list[str]:
    """The non-blank lines of the UTF-8 text file `what` names, surrounding spaces removed (a BOM is ignored);
    a regular file of at most TEXT_LIMIT bytes (see `open_input`)."""
    text = read_text_input(path, what, TEXT_LIMIT)
    return [line.strip() for line in text.splitlines() if line.strip()]
