"""The docs' examples: which fenced blocks of docs/**/*.md run, which are marked not run, and what output they show.

The rules (tests/test_docs_examples.py runs them):

- A fenced block (``` or ~~~, indented or not) whose info string's first word is `bash` or `python` is an
  example; attributes may follow (```` ```bash title="x" ````). Blocks of any other language are not.
- An example whose first (non-blank) line is `# not tested: REASON` is not run; REASON must not be empty.
- An example followed (blank lines allowed) by a block with info string `text title="Output"` shows output:
  each non-blank line of it must be a line of the example's stdout, in order; `...` in a line stands for any
  text, and lines are compared without trailing whitespace.

The docs' tables are read here too: `table_flags` gives the flags their first columns name
(tests/test_docs_cli.py checks each is a real one).
"""
from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = ("bash", "python")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
NOT_TESTED = re.compile(r"#\s*not tested\s*:?(?P<reason>.*)", re.IGNORECASE)
FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")
DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$")  # |---|:--:|


@dataclass(frozen=True)
class Fence:
    """One fenced block of a markdown file: `line` is its opening fence's (1-based)."""

    line: int
    end: int  # the closing fence's line (or the file's last line when never closed)
    language: str
    attrs: dict[str, str]
    code: str


@dataclass(frozen=True)
class Block:
    """One example: a `bash` or `python` block of a docs page."""

    path: Path
    line: int  # the opening fence's line, 1-based
    language: str  # "bash" | "python"
    code: str
    not_tested: str | None = None  # the reason after `# not tested:` ("" when missing); None: the block runs
    expected: tuple[str, ...] | None = None  # the lines of the `text title="Output"` block after it, if any

    @property
    def first_line(self) -> str:
        return next((s for s in self.code.splitlines() if s.strip()), "").strip()

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _info(info: str) -> tuple[str, dict[str, str]]:
    """'bash title="x" linenums="1"' -> ("bash", {"title": "x", "linenums": "1"})."""
    try:
        words = shlex.split(info)
    except ValueError:  # an unbalanced quote: take the words as they stand
        words = info.split()
    if not words:
        return "", {}
    attrs = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    return words[0].lower().lstrip("{."), attrs


def fences(text: str) -> list[Fence]:
    """Every fenced block of a markdown text, in order; code is dedented by its opening fence's indent."""
    lines = text.splitlines()
    out: list[Fence] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or (m["fence"][0] == "`" and "`" in m["info"]):
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((k for k in range(i + 1, len(lines)) if closing.match(lines[k])), len(lines))
        body = [s[indent:] if s[:indent].strip() == "" else s.lstrip() for s in lines[i + 1:end]]
        language, attrs = _info(m["info"].strip())
        out.append(Fence(i + 1, end + 1, language, attrs, "\n".join(body) + "\n" if body else ""))
        i = end + 1
    return out


def _is_output(f: Fence) -> bool:
    return f.language == "text" and f.attrs.get("title") == "Output"


def _blank_between(lines: list[str], first: int, last: int) -> bool:
    """Lines first..last (1-based, inclusive) are all blank."""
    return all(not s.strip() for s in lines[first - 1:last])


def extract_blocks(path: Path, label: Path | None = None) -> list[Block]:
    """The examples of one markdown file, in order, each with its `# not tested:` reason and shown output.

    `label` is the path the blocks carry (e.g. relative to the repository); default `path`.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = fences(text)
    blocks = []
    for k, f in enumerate(found):
        if f.language not in LANGUAGES:
            continue
        first = next((s.strip() for s in f.code.splitlines() if s.strip()), "")
        m = NOT_TESTED.fullmatch(first)
        nxt = found[k + 1] if k + 1 < len(found) else None
        expected = None
        if nxt is not None and _is_output(nxt) and _blank_between(lines, f.end + 1, nxt.line - 1):
            expected = tuple(s.rstrip() for s in nxt.code.splitlines() if s.strip())
        blocks.append(Block(label or path, f.line, f.language, f.code,
                            m["reason"].strip() if m else None, expected))
    return blocks


def orphan_outputs(path: Path, label: Path | None = None) -> list[str]:
    """`text title="Output"` blocks that follow no example (their output would silently go unchecked)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    found = fences(text)
    return [f"{label or path}:{f.line}" for k, f in enumerate(found) if _is_output(f) and not (
        k > 0 and found[k - 1].language in LANGUAGES and _blank_between(lines, found[k - 1].end + 1, f.line - 1))]


def docs_pages(docs: Path) -> list[Path]:
    """Every markdown page under `docs`, sorted."""
    return sorted(docs.rglob("*.md")) if docs.is_dir() else []


def line_pattern(expected: str) -> re.Pattern[str]:
    """One shown output line as a whole-line pattern: `...` stands for any text."""
    return re.compile(".*".join(re.escape(part) for part in expected.rstrip().split("...")))


def missing_output(expected: tuple[str, ...], stdout: str) -> str | None:
    """None when every expected line is a line of `stdout`, in order; else the first one that is not."""
    actual = [s.rstrip() for s in stdout.splitlines()]
    at = 0
    for want in expected:
        pattern = line_pattern(want)
        at = next((k for k in range(at, len(actual)) if pattern.fullmatch(actual[k])), -1) + 1
        if at == 0:
            return want
    return None


def first_cell(row: str) -> str:
    """The first cell of a Markdown table row: up to the first `|` that is neither escaped nor in a code span."""
    text = row.strip().removeprefix("|")
    span, i = 0, 0  # span: the backtick run that opened the code span we are in (0: none)
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == "`":
            run = len(text) - i - len(text[i:].lstrip("`"))
            if span == 0 and re.search(rf"(?<!`)`{{{run}}}(?!`)", text[i + run:]):
                span = run
            elif run == span:
                span = 0
            i += run
        elif text[i] == "|" and span == 0:
            return text[:i]
        else:
            i += 1
    return text


def table_flags(text: str) -> list[tuple[int, str]]:
    """(line number, flag) of every `--flag` in the first column of the Markdown tables in `text`: a row with a
    `|`, a delimiter row (|---|---|) under it, and the rows up to a line without `|`; fenced code left out."""
    lines, found, i = text.splitlines(), [], 0
    fenced = {k for f in fences(text) for k in range(f.line - 1, f.end)}  # 0-based, fence lines included
    while i < len(lines):
        starts = "|" in lines[i] and i + 1 < len(lines) and "|" in lines[i + 1] and DELIMITER.match(lines[i + 1])
        if i in fenced or not starts:
            i += 1
            continue
        end = i + 2
        while end < len(lines) and "|" in lines[end]:
            end += 1
        for k in [i, *range(i + 2, end)]:
            found += [(k + 1, m.group(0).rstrip("-")) for m in FLAG.finditer(first_cell(lines[k]))]
        i = end
    return found


def unknown_flags(paths: Iterable[Path], known: set[str], root: Path) -> list[str]:
    """`file:line: --flag` for each first-column table flag of `paths` that is not in `known`."""
    out = []
    for path in paths:
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        out += [f"{shown}:{line}: {flag}" for line, flag in table_flags(path.read_text(encoding="utf-8"))
                if flag not in known]
    return out
