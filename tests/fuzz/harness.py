"""The fuzz suite's harness: run a command in-process on hostile input and check the rules.

Every case states the exit-code class it expects (0 done, 1 a per-item or write failure,
2 bad input refused before any work) and `Sandbox.run` checks the rest, the same for all:
no traceback, exactly one `error:` line when the code is not 0 (none when it is), no new
temporary file left anywhere in the sandbox (a case's own look-alikes stay, untouched),
and nothing new outside the output folder.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MODEL = ["--model", "unilseg-demo", "--device", "cpu"]
# writers (.NAME.unilseg-TOKEN.part, overlay videos .part.mp4), probes, downloads (NAME.part), exports (.NAME.X.tmp)
TEMP_PATTERNS = (".*.part", ".*.part.mp4", ".unilseg-probe-*", "*.part", ".*.tmp")


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def error_lines(err: str) -> list[str]:
    """Our `error:` lines and argparse's `PROG: error:` usage line."""
    return [line for line in err.splitlines() if line.startswith("error:") or ": error: " in line]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if any(fnmatch.fnmatch(p.name, pat) for pat in TEMP_PATTERNS)]


def files_outside(root: Path, out: Path) -> set[Path]:
    """Every path under root, except those under out (what a command may write)."""
    return {p for p in root.rglob("*") if out != p and out not in p.parents}


class Sandbox:
    """A folder with `in/` (the inputs a case makes) and `out/` (where outputs may go)."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root, self.capsys = root, capsys
        self.inp, self.out = root / "in", root / "out"
        self.inp.mkdir()
        self.out.mkdir()

    def run(self, argv: list[str], codes: int | tuple[int, ...], main=None) -> Outcome:
        """Run `unilseg ARGV` (or `main(argv)`) and check the rules; `codes`: the exit codes allowed."""
        if main is None:
            from unilseg.__main__ import main
        before = files_outside(self.root, self.out)
        temps_before = set(temp_files(self.root))
        self.capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 1
        out, err = self.capsys.readouterr()
        codes = (codes,) if isinstance(codes, int) else codes
        assert "Traceback" not in err, err
        assert code in codes, f"exit {code}, expected {codes}; stderr:\n{err}"
        lines = error_lines(err)
        assert len(lines) == (0 if code == 0 else 1), f"expected {'no' if code == 0 else 'one'} error line:\n{err}"
        left = set(temp_files(self.root)) - temps_before
        assert not left, sorted(left)
        new = files_outside(self.root, self.out) - before
        assert not new, f"written outside the output folder: {sorted(map(str, new))}"
        return Outcome(code, out, err)

    def outputs(self) -> list[Path]:
        """The files written under out/, results logs excepted."""
        return sorted(p for p in self.out.rglob("*") if p.is_file() and not p.name.startswith("results"))
