"""Every file unilseg writes goes through here: checks before work, encoders, atomic writes.

- `check_file_target` / `check_dir_target`: fail before any model work if a target cannot
  be written (a probe file is created and removed, so /proc, /sys and read-only mounts are
  caught, not only missing permissions).
- `confine`: a path a job computes must lie inside its output directory once `..` and
  symlinks are resolved (a shared manifest must not write over the user's other files).
- `encode_mask` (PNG / .npy / COCO RLE JSON), `rle_encode` / `rle_decode`, `encode_image`,
  `render_overlay`: bytes from arrays.
- `OutputRegistry`: every file one job reads and writes, claimed while it is planned; two
  outputs on one file, or an output on an input, refuse the job before any work.
- `write_atomic` / `atomic_writer`: a temporary file beside the target, then a rename; a file appears
  complete under its name or not at all, and a failed write leaves no temporary file.
  Temporaries (`new_temporary`) are created exclusively under a name only unilseg makes,
  and only the writer that made one removes it: no other file is ever deleted as stale.
- `intact`, `rle_valid`: whether a file or RLE an earlier run left is whole (resume trusts
  nothing it did not check).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import stat
import struct
import tempfile
import unicodedata
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from unilseg.errors import UnilsegError, WriteError
from unilseg.io.paths import user_path

FORMATS = ("png", "npy", "rle-json")
MASK_EXTENSIONS = {"png": ".png", "npy": ".npy", "rle-json": ".json"}
# Image extensions that keep a 0/255 mask exact; JPEG and friends would blur its edges.
LOSSLESS_IMAGE_EXTENSIONS = frozenset(".png .bmp .dib .tif .tiff .pbm .pgm .ppm .pnm .pxm .sr .ras".split())
LOSSY_IMAGE_EXTENSIONS = frozenset(".jpg .jpeg .jpe .jp2 .webp .avif .heic".split())
PROB_SUFFIX = ".prob.npy"
TINT_BGR = (255, 144, 30)  # dodger blue
OUTLINE_BGR = (0, 255, 255)  # yellow
TINT_ALPHA = 0.5


# ---------------------------------------------------------------- checks before work


def _probe(directory: Path) -> str | None:
    """Create and remove a file in `directory`; None if that worked, else why not."""
    try:
        fd, name = tempfile.mkstemp(prefix=".unilseg-probe-", dir=directory)
    except OSError as e:
        return e.strerror or type(e).__name__
    os.close(fd)
    os.unlink(name)
    return None


def _require_writable(directory: Path, field: str, path: str | Path) -> None:
    if not directory.is_dir():
        raise UnilsegError("{field} {path}: {directory} is a file, not a directory", field=field, path=path,
                           directory=directory)
    problem = _probe(directory)
    if problem:
        raise UnilsegError("{field} {path}: cannot write in {directory} ({problem}); choose another place",
                           field=field, path=path, directory=directory, problem=problem)


def check_dir_target(path: str | Path, field: str) -> Path:
    """A directory to write into: existing and writable, or creatable (its nearest existing
    ancestor is a writable directory). Nothing is created. Returns the path. `field`: the
    argument that names it, for the error (UnilsegError.field)."""
    out = user_path(path)
    if out.exists() and not out.is_dir():
        raise UnilsegError("{field} {path} is a file, not a directory; pass a directory", field=field, path=path)
    existing = out
    while not existing.exists():
        existing = existing.parent
    _require_writable(existing, field, path)
    return out


def check_file_target(path: str | Path, field: str) -> Path:
    """A file to write: not a directory, in an existing writable directory. Returns the path.
    `field`: the argument that names it, for the error (UnilsegError.field)."""
    p = user_path(path)
    if p.is_dir():
        raise UnilsegError("{field} {path} is a directory; give a file path", field=field, path=path)
    if not p.parent.exists():
        raise UnilsegError("{field} {path}: directory {parent} does not exist; create it first", field=field,
                           path=path, parent=p.parent)
    _require_writable(p.parent, field, path)
    return p


def confine(path: str | Path, root: str | Path, real: str | None = None, real_root: str | None = None) -> Path:
    """`path` -> itself, if it lies strictly inside `root` once `..` and symlinks (of `root` too)
    are resolved; else a UnilsegError saying where it leads. real, real_root: both resolved already."""
    real = real if real is not None else os.path.realpath(path)  # strings: 100k rows plan in a second
    real_root = real_root if real_root is not None else os.path.realpath(root)
    if real == real_root or os.path.commonpath((real, real_root)) != real_root:
        raise UnilsegError("output {path} leads to {real}, not inside the output directory {real_root}; "
                           "outputs stay inside {out_dir}", field="output", path=path, real=real, real_root=real_root)
    return Path(path)


def mask_format_for(path: str | Path, fmt: str | None, field: str = "output") -> str:
    """The mask format for an output file: `fmt` if given (it must fit the extension), else
    the extension's (.npy -> npy, .json -> rle-json, a lossless image -> png). `field`: the
    argument that names the file, for the error."""
    ext = Path(path).suffix.lower()
    if ext in LOSSY_IMAGE_EXTENSIONS:
        raise UnilsegError("{field} {path}: {ext} is a lossy image format and would blur the mask's 0/255 edges; "
                           "use .png (or .npy / .json with {format} npy / rle-json)", field=field, path=path, ext=ext)
    by_ext = {".npy": "npy", ".json": "rle-json"}.get(ext, "png" if ext in LOSSLESS_IMAGE_EXTENSIONS else None)
    if by_ext is None:
        raise UnilsegError("{field} {path}: cannot tell the mask format from {ext}; end the name in .png, .npy "
                           "or .json (or in / for a directory)", field=field, path=path,
                           ext=repr(ext or "no extension"))
    if fmt is not None and fmt != by_ext:
        raise UnilsegError("{field} {path} has the extension of {format} {by_ext}, not {fmt}; name it *{ext} "
                           "or drop {format}", field=field, path=path, by_ext=by_ext, fmt=fmt,
                           ext=MASK_EXTENSIONS[fmt])
    return by_ext


def sidecar(path: Path, suffix: str) -> Path:
    """`path` with its extension replaced by `suffix`: masks/a.png + '.prob.npy' -> masks/a.prob.npy."""
    base = path.with_suffix("")
    return base.parent / (base.name + suffix)


class OutputRegistry:
    """Every file one job reads and writes, claimed while the job is planned, before any work.

    `read` claims an input (an image, the manifest, an expression or class file, the
    config, a video), `write` an output (a mask, a sidecar, a results log, a legend, a
    video's files), `write_dir` a folder the job fills, `reserve` a family of names the
    job's runs write (every shard's results log). A second claim that would make the job
    write one file twice, or write over an input, raises a UnilsegError (exit 2) naming
    both. Paths are compared once `..` and symlinks are resolved; two outputs also
    case- and Unicode-normalisation-insensitively (as macOS and Windows compare names),
    an output and an input also when they are one existing file (a hard link, or a name
    that a case-insensitive file system takes for the other). Labels are what a message
    calls each path, e.g. "--save-prob m.npy" or "the mask out/a__x.png of item 3".
    """

    def __init__(self) -> None:
        self._writes: dict[str, str] = {}  # loose key -> label
        self._write_exact: dict[str, str] = {}  # exact key -> label
        self._write_inodes: dict[tuple[int, int], str] = {}
        self._reads: dict[str, str] = {}  # exact key -> label
        self._read_inodes: dict[tuple[int, int], str] = {}
        self._dirs: list[tuple[str, str]] = []  # (exact key + os.sep, label) of folders written into
        self._reserved: list[tuple[str, re.Pattern[str], str]] = []  # (folder's exact key, name pattern, label)
        self._real_dirs: dict[str, str] = {}  # a folder as given -> resolved
        self._recent: dict[str, tuple[str, tuple[int, int] | None]] = {}  # a name is often asked for twice
        self._cwd = os.getcwd()

    # -- keys

    def _real(self, path: str | Path) -> tuple[str, tuple[int, int] | None]:
        """The resolved path (its folder resolved once per folder) and, if it exists, (device, inode)."""
        text = os.fspath(path)
        found = self._recent.get(text)
        if found is not None:
            return found
        head, name = os.path.split(text)
        if name in ("", ".", ".."):
            real = os.path.realpath(os.path.join(self._cwd, text))
        else:
            real_head = self._real_dirs.get(head)
            if real_head is None:
                real_head = self._real_dirs[head] = os.path.realpath(os.path.join(self._cwd, head))
            real = os.path.join(real_head, name)
        inode = None
        try:
            st = os.lstat(real)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(real)
                st = os.stat(real)
            inode = (st.st_dev, st.st_ino)
        except (OSError, ValueError):  # missing (or a name the OS refuses): no inode
            pass
        if len(self._recent) > 64:
            self._recent.clear()
        self._recent[text] = (real, inode)
        return real, inode

    def resolve(self, path: str | Path) -> str:
        """`path` once `..` and symlinks are resolved (as os.path.realpath, faster for many names in a folder)."""
        return self._real(path)[0]

    @staticmethod
    def _loose(real: str) -> str:
        return unicodedata.normalize("NFC", os.path.normcase(real)).casefold()

    # -- claims

    def read(self, path: str | Path, label: str) -> None:
        """Claim an input the job reads; refused if the job writes it."""
        real, inode = self._real(path)
        key = os.path.normcase(real)
        if key in self._reads or (inode is not None and inode in self._read_inodes):
            return  # an input read twice is fine
        clash = self._write_exact.get(key) or (self._write_inodes.get(inode) if inode is not None else None)
        clash = clash or self._in_dir(key) or self._reserved_for(key)
        if clash:
            raise UnilsegError(f"{clash} is also {label}, an input the job reads; give the output another name")
        self._reads[key] = label
        if inode is not None:
            self._read_inodes[inode] = label

    def write(self, path: str | Path, label: str) -> None:
        """Claim an output the job writes; refused if another output or an input has its file."""
        if is_temporary_name(Path(path).name):
            raise UnilsegError(f"{label}: names of the form .NAME{TEMP_MARK}TOKEN.part are kept for unilseg's "
                               "temporary files; give the output another name")
        real, inode = self._real(path)
        key, loose = os.path.normcase(real), self._loose(real)
        other = self._writes.get(loose) or (self._write_inodes.get(inode) if inode is not None else None)
        other = other or self._in_dir(key) or self._reserved_for(key)
        if other:
            raise UnilsegError(f"{label} is also {other}; give them different names")
        read = self._reads.get(key) or (self._read_inodes.get(inode) if inode is not None else None)
        if read:
            raise UnilsegError(f"{label} is also {read}, an input the job reads; give the output another name")
        self._writes[loose], self._write_exact[key] = label, label
        if inode is not None:
            self._write_inodes[inode] = label

    def write_dir(self, path: str | Path, label: str) -> None:
        """Claim a folder the job writes files into (its own names): no input may lie inside it."""
        self.write(path, label)
        prefix = os.path.normcase(self._real(path)[0]) + os.sep
        for key, read in self._reads.items():
            if key.startswith(prefix):
                raise UnilsegError(f"{label} is where the job writes, but it holds {read}, an input the job reads; "
                                   "give the output another name")
        self._dirs.append((prefix, label))

    def reserve(self, folder: str | Path, pattern: str, label: str) -> None:
        """Claim every name in `folder` that fully matches the regular expression `pattern`."""
        compiled = re.compile(pattern, re.IGNORECASE)
        prefix = os.path.join(os.path.normcase(os.path.realpath(os.path.join(self._cwd, folder))), "")
        for key, what in list(self._write_exact.items()) + list(self._reads.items()):
            if key.startswith(prefix) and compiled.fullmatch(key[len(prefix):]):
                raise UnilsegError(f"{what} is also {label}; give it another name")
        self._reserved.append((prefix, compiled, label))

    def write_all(self, paths: Iterable[tuple[Path, str]]) -> None:
        """`write` each (path, label)."""
        for path, label in paths:
            self.write(path, label)

    def is_free(self, path: str | Path) -> bool:
        """Whether no output claims `path` yet (for names a job may choose: it takes the next free one)."""
        real, inode = self._real(path)
        key = os.path.normcase(real)
        return (self._loose(real) not in self._writes and (inode is None or inode not in self._write_inodes)
                and not self._in_dir(key) and not self._reserved_for(key))

    def _in_dir(self, key: str) -> str | None:
        for prefix, label in self._dirs:
            if key.startswith(prefix):
                return label
        return None

    def _reserved_for(self, key: str) -> str | None:
        for prefix, pattern, label in self._reserved:
            if key.startswith(prefix) and pattern.fullmatch(key[len(prefix):]):
                return label
        return None


# ---------------------------------------------------------------- encoders


def encode_image(path: str | Path, image: np.ndarray) -> bytes:
    """Encode with OpenCV in the format the path's extension names (PNG, JPEG, ...)."""
    import cv2

    ext = Path(path).suffix or ".png"
    try:
        ok, buf = cv2.imencode(ext, image)
    except cv2.error:
        ok = False
    if not ok:
        raise UnilsegError(f"cannot write an image as {ext!r} ({path}); use a .png path")
    return buf.tobytes()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Bool (H, W) -> COCO compressed RLE {'size': [H, W], 'counts': str} (pycocotools)."""
    from pycocotools import mask as coco_mask

    with warnings.catch_warnings():  # pycocotools' NumPy-2 `copy=` DeprecationWarning; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed counts as str or bytes, or uncompressed counts as a list) -> bool (H, W)."""
    from pycocotools import mask as coco_mask

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    with warnings.catch_warnings():  # pycocotools' NumPy-2 `copy=` DeprecationWarning; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(counts, list):
            encoded = coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        else:
            encoded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return coco_mask.decode(encoded).astype(bool)


def rle_runs(counts: str | list) -> list[int] | None:
    """The run lengths of COCO RLE counts (compressed str or a list), or None if they cannot be parsed."""
    if isinstance(counts, list):
        ok = all(isinstance(c, int) and not isinstance(c, bool) for c in counts)
        return counts if ok else None
    if not isinstance(counts, str):
        return None
    runs: list[int] = []
    p, n = 0, len(counts)
    while p < n:  # pycocotools' rleFrString: 5 bits per character, a sign bit, deltas from two runs back
        x = k = 0
        more = True
        while more:
            if p >= n:
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def rle_valid(rle: Any, size: tuple[int, int] | None = None) -> bool:
    """Whether `rle` is a COCO RLE whose runs cover exactly its [H, W] (and that is `size`, if given).

    pycocotools decodes runs that fall short or overrun without complaint (into memory it
    does not own), so RLE read back from a file is checked here first.
    """
    if not isinstance(rle, dict):
        return False
    shape = rle.get("size")
    if not (isinstance(shape, list) and len(shape) == 2 and all(type(v) is int and v >= 0 for v in shape)):
        return False
    if size is not None and tuple(shape) != tuple(size):
        return False
    runs = rle_runs(rle.get("counts"))
    return runs is not None and all(r >= 0 for r in runs) and sum(runs) == shape[0] * shape[1]


def encode_mask(mask: np.ndarray, fmt: str, ext: str = ".png") -> bytes:
    """Bool (H, W) mask -> file bytes: 'png' 0/255 single channel (in the lossless image format
    `ext` names), 'npy' bool array, 'rle-json' COCO RLE."""
    if fmt == "png":
        return encode_image(f"mask{ext}", mask.astype(np.uint8) * 255)
    if fmt == "npy":
        return npy_bytes(mask.astype(bool))
    if fmt == "rle-json":
        return (json.dumps(rle_encode(mask)) + "\n").encode()
    raise UnilsegError(f"unknown mask format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_overlay(
    image_bgr: np.ndarray, mask: np.ndarray, alpha: float = TINT_ALPHA, outline: bool = True,
    tint_bgr: tuple[int, int, int] = TINT_BGR,
) -> np.ndarray:
    """The image (BGR uint8 (H, W, 3)) with the mask tinted and its edge outlined, BGR uint8.

    The outline is drawn on the mask's own border pixels, so exactly the mask's pixels
    change (an overlay can be decoded back to its mask).
    """
    import cv2

    out = image_bgr.copy()
    if not mask.any():
        return out
    h, w = mask.shape
    width = max(1, round(min(h, w) / 250))
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, np.ones((2 * width + 1, 2 * width + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    tint = np.array(tint_bgr, np.float32)
    out[mask] = np.round(out[mask].astype(np.float32) * (1 - alpha) + tint * alpha).astype(np.uint8)
    if outline:
        out[mask & ~inner.astype(bool)] = OUTLINE_BGR
    return out


# ---------------------------------------------------------------- writing


TEMP_MARK = ".unilseg-"  # in every temporary's name: `.{target}.unilseg-{12 hex}.part`
_TEMP_NAME = re.compile(r"\..*\.unilseg-[0-9a-f]{12}\.part(\.[a-z0-9]+)?", re.DOTALL | re.IGNORECASE)


def is_temporary_name(name: str) -> bool:
    """Whether `name` has the form of unilseg's temporary files (no output may take it)."""
    return _TEMP_NAME.fullmatch(name) is not None


def new_temporary(path: str | Path, suffix: str = ".part") -> Path:
    """Create an empty temporary file beside `path` and return its name: `.{name}.unilseg-{token}{suffix}`.

    Created exclusively (O_EXCL: an existing file of that name is never touched, another
    token is tried), with the mode a plain file gets. The caller owns it and removes it.
    """
    path = Path(path)
    for _ in range(100):
        tmp = path.parent / f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask, unlike mkstemp
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def write_atomic(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write `data` to a temporary file beside `path` (`new_temporary`), then rename it into place.

    Missing directories are created. `mode` sets the file's permissions (default: as a
    plain file gets). On any failure the temporary file is removed and a WriteError (exit
    code 1) is raised. Only this call's own temporary is ever removed: a file that merely
    looks like one (a killed run's, or a user's) is left alone.
    """
    with atomic_writer(path, mode) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str | Path, mode: int | None = None) -> Iterator[IO[bytes]]:
    """`write_atomic` for a file written in pieces: `with atomic_writer(p) as f: f.write(...)`.

    The file appears under `path` whole when the block ends, or not at all: if the block
    raises (a full disk included) the temporary is removed and `path` keeps what it held.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temporary(path)
        with open(tmp, "wb") as f:
            yield f
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {e.strerror or type(e).__name__}") from e
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every whole PNG ends with


def intact(path: str | Path, size: tuple[int, int] | None = None) -> bool:
    """Whether a file an earlier run wrote is whole, from its first and last bytes: not empty,
    and a .png / .jpg / .npy / .json that starts and ends as one does (a cut or foreign file
    does not); with `size` (H, W), a .png or .npy must also be that size. Cheap: a resumed
    batch checks every finished output."""
    path = Path(path)
    try:
        if not path.is_file():
            return False
        n = path.stat().st_size
        ext = path.suffix.lower()
        with open(path, "rb") as f:
            if ext == ".json":
                json.loads(f.read().decode("utf-8"))
                return True
            head = f.read(256)
            f.seek(max(0, n - 12))
            tail = f.read()
    except (OSError, ValueError, RecursionError):
        return False
    if n == 0:
        return False
    if ext == ".png":
        if not head.startswith(PNG_SIGNATURE) or len(head) < 24 or not tail.endswith(PNG_END):
            return False
        w, h = struct.unpack(">II", head[16:24])
        return size is None or (h, w) == tuple(size)
    if ext in (".jpg", ".jpeg"):
        return head.startswith(b"\xff\xd8") and tail.endswith(b"\xff\xd9")
    if ext == ".npy":
        try:
            f = io.BytesIO(head)
            version = np.lib.format.read_magic(f)
            reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            shape, _, dtype = reader[version](f)
        except (KeyError, ValueError, OSError, SyntaxError, TypeError):
            return False
        expected = f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return n == expected and (size is None or tuple(shape[:2]) == tuple(size))
    return True


def write_prediction(
    mask_path: Path, mask: np.ndarray, fmt: str, prob: np.ndarray | None = None, prob_path: Path | None = None,
    image_bgr: np.ndarray | None = None, overlay_path: Path | None = None,
) -> None:
    """Write the soft map and overlay (if asked), then the mask: a present mask means all is written."""
    if prob_path is not None and prob is not None:
        write_atomic(prob_path, npy_bytes(prob.astype(np.float32)))
    if overlay_path is not None and image_bgr is not None:
        write_atomic(overlay_path, encode_image(overlay_path, render_overlay(image_bgr, mask)))
    write_atomic(mask_path, encode_mask(mask, fmt, mask_path.suffix.lower() if fmt == "png" else ".png"))


def default_file_mode() -> int:
    """0o666 minus the process umask: the mode a plainly created file would get."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
