"""Run one docs page's examples (tests/docs_blocks.py) in order in one working directory and check them.

Bash blocks run each in `bash -e -o pipefail -c CODE`; whatever a block leaves running in the background is
killed when it ends. Python blocks share one interpreter session per page (tests/docs_session.py), so names
carry from block to block. Every block has a timeout; its exit code must be 0 and its shown output (if any) must
be in its stdout. A failure names the block's file:line, its first line, the exit code and the tail of stderr.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from docs_blocks import Block, missing_output

TIMEOUT = 300.0  # seconds per block
TAIL = 30  # lines of stderr (or stdout) quoted in a failure
SESSION = Path(__file__).resolve().parent / "docs_session.py"


@dataclass(frozen=True)
class Outcome:
    block: Block
    passed: bool | None  # None: not tested
    message: str = ""


RESULTS: list[Outcome] = []  # every block of this pytest session's page tests, for the terminal summary (conftest)


def example_env(home: Path) -> dict[str, str]:
    """The environment of every block: this interpreter's bin first on PATH, this checkout's unilseg, an empty
    UNILSEG_HOME (no user cache leaks in) and matplotlib without a display."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    package = Path(importlib.util.find_spec("unilseg").origin).parent.parent  # src/ (or site-packages)
    paths = [str(package)] + [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["UNILSEG_HOME"] = str(home)
    env["MPLBACKEND"] = "Agg"
    return env


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(text: str, label: str) -> str:
    lines = text.rstrip().splitlines()[-TAIL:]
    if not lines:
        return f"\n  {label}: empty"
    return f"\n  {label} (last {len(lines)} lines):\n" + "\n".join(f"    {s}" for s in lines)


class PythonSession:
    """One interpreter (tests/docs_session.py) running a page's python blocks in one namespace."""

    def __init__(self, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen([sys.executable, str(SESSION)], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)

    def run(self, block: Block, stdout: Path, stderr: Path, timeout: float) -> int | None:
        """The block's exit code, or None when it ran past `timeout` or the session died (it is then closed)."""
        request = {"code": block.code, "file": str(block.path), "line": block.line,
                   "stdout": str(stdout), "stderr": str(stderr)}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        if select.select([self.proc.stdout], [], [], timeout)[0]:
            answer = self.proc.stdout.readline()
            if answer:
                return int(json.loads(answer)["exit"])
        self.close(wait=False)
        return None

    def close(self, wait: bool = True) -> None:
        """End the session: let it finish (up to 10 s) when `wait`, then kill what is left of its process group."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # ends its loop
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        _kill_group(self.proc.pid)
        self.proc.wait()
        self.proc.stdout.close()


def run_bash(block: Block, cwd: Path, env: dict[str, str], stdout: Path, stderr: Path, timeout: float) -> int | None:
    """The block's exit code, or None when it ran past `timeout`."""
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
        _kill_group(proc.pid)  # and whatever it left running
        proc.wait()
    return code


def run_page(blocks: list[Block], cwd: Path, logs: Path, env: dict[str, str],
             timeout: float = TIMEOUT) -> list[Outcome]:
    """Run `blocks` (one page's, in order) in `cwd`; per-block stdout/stderr go to `logs` (outside `cwd`)."""
    logs.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    session: PythonSession | None = None
    try:
        for n, block in enumerate(blocks):
            if block.not_tested is not None:
                outcomes.append(Outcome(block, None, block.not_tested))
                continue
            stdout, stderr = logs / f"{n}.out", logs / f"{n}.err"
            if block.language == "bash":
                code = run_bash(block, cwd, env, stdout, stderr, timeout)
            else:
                if session is None:
                    session = PythonSession(cwd, env, logs / "python-session.err")
                code = session.run(block, stdout, stderr, timeout)
                if code is None:
                    session = None  # timed out or died: closed; a later block gets a fresh interpreter
            out = stdout.read_text(errors="replace") if stdout.exists() else ""
            err = stderr.read_text(errors="replace") if stderr.exists() else ""
            after = " (after an earlier failure on this page)" if any(o.passed is False for o in outcomes) else ""
            head = f"{block.where} ({block.language}){after}: {block.first_line!r}\n  "
            if code is None:
                outcomes.append(Outcome(block, False, head + f"ran past {timeout:g} s or its interpreter died"
                                        + _tail(err, "stderr")))
            elif code != 0:
                outcomes.append(Outcome(block, False, head + f"exit code {code}" + _tail(err, "stderr")))
            elif block.expected and (want := missing_output(block.expected, out)) is not None:
                outcomes.append(Outcome(block, False, head + f"its stdout lacks the shown line {want!r} (the shown "
                                        "lines must appear in order)" + _tail(out, "stdout")))
            else:
                outcomes.append(Outcome(block, True))
    finally:
        if session is not None:
            session.close()
    return outcomes


def summary(outcomes: list[Outcome]) -> list[str]:
    """Lines for the terminal summary: blocks run and failed, and every block not tested with its reason."""
    ran = [o for o in outcomes if o.passed is not None]
    skipped = [o for o in outcomes if o.passed is None]
    pages = len({o.block.path for o in outcomes})
    lines = [f"{len(ran)} blocks run on {pages} pages ({sum(o.passed for o in ran)} passed, "
             f"{sum(not o.passed for o in ran)} failed); {len(skipped)} not tested:"]
    return lines + [f"  {o.block.where}: {o.message}" for o in skipped]
