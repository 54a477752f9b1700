"""`results.jsonl`: one row per item, appended as each item finishes, in one schema for every job kind
(`ROW_FIELDS`, `results_row`) and written by one class (`ResultsLog`); and the one reader and appender
of the JSON-lines state a job leaves for its resume (results logs, a video's per-frame RLE)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from unilseg.errors import WriteError
from unilseg.io.paths import MANIFEST_LIMIT, json_text, open_input
from unilseg.io.writers import write_atomic

Check = Callable[[Any], bool]
Schema = Mapping[str, Check]  # key -> a test its value must pass (a missing key fails it)


def is_text(v: Any) -> bool:
    return isinstance(v, str)


def is_opt_text(v: Any) -> bool:
    return v is None or isinstance(v, str)


def is_index(v: Any) -> bool:
    """A whole number >= 0 (not a bool, which JSON keeps apart and Python does not)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def is_opt_index(v: Any) -> bool:
    return v is None or is_index(v)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# What a resumed run relies on in a results row: which output it names and whether it failed.
RESULT_ROW: Schema = {"output": is_text, "error": is_opt_text}

# Every field a results row may hold, in the order rows write them. Each job kind fills its own
# (a field it fills may be null); the others are left out of its rows:
#   masks:      image, expression, output, score, presence, present, foreground, seconds, error
#   label maps: image, output, legend, overlay, classes, absent, background, seconds, error
#   video:      video, frame, time, expression, output, score, presence, present, foreground, seconds, error
# presence: the prediction's presence score (`unilseg.inference.presence`); present: false when it fell below
# --min-score (the mask is then empty); label maps list the classes found absent so (absent).
# a row logged for an item found done is marked "skipped": true; with --instances (masks and label
# maps) a row also counts its instances and those cut by --max-instances (instances, instances_cut).
ROW_FIELDS = ("video", "frame", "time", "image", "expression", "output", "legend", "overlay", "classes", "absent",
              "score", "presence", "present", "foreground", "background", "instances", "instances_cut", "seconds",
              "error", "skipped")
_ORDER = {name: i for i, name in enumerate(ROW_FIELDS)}


def results_row(**fields: Any) -> dict[str, Any]:
    """A results row from a job kind's fields (see ROW_FIELDS), in the schema's order; seconds rounded to 4."""
    unknown = set(fields) - set(_ORDER)
    if unknown:
        raise ValueError(f"not results-row fields: {sorted(unknown)}")
    if "seconds" in fields:
        fields["seconds"] = round(fields["seconds"], 4)
    return dict(sorted(fields.items(), key=lambda kv: _ORDER[kv[0]]))


def by_output(row: dict[str, Any]) -> Any:
    """The default identity of a row: the output it names (one row per output survives `finish`)."""
    return row.get("output")


class ResultsLog:
    """The results file of a job, the one writer of results rows (masks, label maps, video, Ray).

    A killed run keeps the rows written so far. `finish(plan)` rewrites the file atomically
    with one row per identity (`key`, default: the output; the latest row), the plan's
    items first in plan order, then the others in the order last written.
    keep_existing: start from the rows already in the file (a resumed run), else afresh;
    rows that are damaged (not JSON, not an object, or failing `schema`) are dropped, so
    their items count as not logged.
    """

    def __init__(self, path: str | Path, keep_existing: bool = False, schema: Schema = RESULT_ROW,
                 key: Callable[[dict[str, Any]], Hashable] = by_output) -> None:
        self.path = Path(path)
        self.key = key
        self._rows: list[dict[str, Any]] = read_results(self.path, schema) if keep_existing else []
        if not keep_existing:
            self.path.unlink(missing_ok=True)
        self._succeeded = {key(r) for r in self._rows if not r["error"]}
        self._file = JsonlAppender(self.path)  # closed in close() / finish()

    def has_success(self, key: Hashable) -> bool:
        """Whether a row of this identity (an output path, by default) records it as written without error."""
        return (str(key) if isinstance(key, Path) else key) in self._succeeded

    def note_skipped(self, row: dict[str, Any]) -> None:
        """Log the row of an item skipped as done, unless a row already says so (its run was killed before
        logging it)."""
        if not self.has_success(self.key(row)):
            self.append({**row, "seconds": 0.0, "skipped": True})

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if not row.get("error"):
            self._succeeded.add(self.key(row))
        self._file.append(row)

    def close(self) -> None:
        self._file.close()

    def finish(self, plan: Sequence[Any] = ()) -> None:
        """Close, then rewrite the file deduplicated; `plan`: items (with `.output`) whose rows go first."""
        self._file.close()
        latest: dict[Any, dict[str, Any]] = {}
        for row in self._rows:
            key = self.key(row)
            latest.pop(key, None)  # re-insert: the latest row keeps its place last
            latest[key] = row
        ordered = [latest.pop(str(item.output)) for item in plan if str(item.output) in latest]
        ordered += list(latest.values())
        write_atomic(self.path, "".join(json_text(r) + "\n" for r in ordered).encode())


def row_of(item: Any, score: float | None = None, foreground: float | None = None, seconds: float = 0.0,
           error: str | None = None, presence: float | None = None, present: bool | None = None) -> dict[str, Any]:
    """The results row of one mask item (a `plan.Item`): image, expression, output, score, presence, present,
    foreground share, seconds, error."""
    return results_row(image=str(item.image), expression=item.expression, output=str(item.output), score=score,
                       presence=presence, present=present, foreground=foreground, seconds=seconds, error=error)


def read_results(path: str | Path, schema: Schema | None = None) -> list[dict[str, Any]]:
    """The rows of a JSON-lines state file a run left (none if there is no such file), trusting nothing.

    A line that is not UTF-8 JSON, not an object, or (with `schema`) lacks a key or holds a
    value its check refuses is dropped: what it recorded is redone. A killed run's torn last
    line is such a line. The file must be a regular file of at most MANIFEST_LIMIT bytes (a
    FIFO planted as results.jsonl is refused in one line, not waited on).
    """
    path = Path(path)
    if not os.path.lexists(path):
        return []
    with open_input(path, "results log", MANIFEST_LIMIT) as f:
        data = f.read()
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(row, dict) and (schema is None or all(k in row and ok(row[k]) for k, ok in schema.items())):
            rows.append(row)
    return rows


class JsonlAppender:
    """Rows appended to a JSON-lines file, each on disk as soon as `append` returns.

    Unbuffered, so a failed write (a full disk) leaves nothing pending, and it is raised as
    a WriteError (exit code 1). A torn last line that a killed run left is cut off first,
    so the first new row is not glued to it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from e
        self._fd = fd
        try:
            _cut_torn_tail(fd)
        except OSError as e:
            self.close()
            raise WriteError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from e

    def append(self, row: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (json_text(row) + "\n").encode()
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except OSError as e:
            raise WriteError(f"cannot write {self.path}: {e.strerror or type(e).__name__}") from e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _cut_torn_tail(fd: int) -> None:
    """Truncate an open file after its last newline, if it does not end in one."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            os.ftruncate(fd, start + at + 1)
            return
        end = start
    os.ftruncate(fd, 0)
