"""`results.jsonl`: one row per item, appended and flushed as each item finishes."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..paths import MANIFEST_LIMIT, json_text, read_text_input
from ..writers import write_atomic
from .plan import Item


class ResultsLog:
    """The results file of a run.

    A killed run keeps the rows written so far. `finish()` rewrites the file atomically
    with one row per output (the latest), in plan order, older rows of other outputs after.
    keep_existing: start from the rows already in the file (a resumed run), else afresh.
    """

    def __init__(self, path: str | Path, keep_existing: bool = False) -> None:
        self.path = Path(path)
        keep = keep_existing and os.path.lexists(self.path)  # a FIFO or device there is refused, not opened
        self._rows: list[dict[str, Any]] = read_results(self.path) if keep else []
        if not keep_existing:
            self.path.unlink(missing_ok=True)
        self._succeeded = {r.get("output") for r in self._rows if not r.get("error")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # closed in finish()

    def has_success(self, output: Path) -> bool:
        """Whether a row records `output` as written without error."""
        return str(output) in self._succeeded

    def note_skipped(self, item: Item) -> None:
        """Log an item skipped as done, unless a row already says so (its run was killed before logging it)."""
        if not self.has_success(item.output):
            self.append({**row_of(item), "seconds": 0.0, "skipped": True})

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if not row.get("error"):
            self._succeeded.add(row.get("output"))
        self._file.write(json_text(row) + "\n")
        self._file.flush()

    def finish(self, plan: Sequence[Item]) -> None:
        self._file.close()
        latest: dict[Any, dict[str, Any]] = {}
        for row in self._rows:
            latest.pop(row.get("output"), None)  # re-insert: the latest row keeps its place last
            latest[row.get("output")] = row
        ordered = [latest.pop(str(item.output)) for item in plan if str(item.output) in latest]
        ordered += list(latest.values())
        write_atomic(self.path, "".join(json_text(r) + "\n" for r in ordered).encode())


def row_of(item: Item, score: float | None = None, foreground: float | None = None, seconds: float = 0.0,
           error: str | None = None) -> dict[str, Any]:
    """The results row of one item: image, expression, output, score, foreground share, seconds, error."""
    return {"image": str(item.image), "expression": item.expression, "output": str(item.output),
            "score": score, "foreground": foreground, "seconds": round(seconds, 4), "error": error}


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a results file; a torn last line (a killed run) is ignored. The file must be a regular file of
    at most MANIFEST_LIMIT bytes (a FIFO planted as results.jsonl is refused, not waited on)."""
    rows = []
    for line in read_text_input(path, "results log", MANIFEST_LIMIT).splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
