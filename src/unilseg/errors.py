"""Errors a user can fix; the CLIs print their message as one line, without a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable


class UnilsegError(Exception):
    """Bad input, a bad file or a bad setting; the message says what to do."""


class CheckpointError(UnilsegError):
    """A weights file that is missing, unreadable, unsafe or of another model."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's text (libraries such as ONNX Runtime raise many-line ones), cut to `limit`."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def shown(text: object) -> str:
    """`text` printable on any stream: undecodable bytes of a path (lone surrogates U+DC80..U+DCFF) as
    `\\xNN`, other lone surrogates escaped. A message may name any path, so this sits with the errors."""
    text = str(text)
    try:
        text.encode("utf-8")
        return text  # no lone surrogate
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def run_guarded(fn: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Run a command body -> exit code (its int result, else 0); a UnilsegError becomes one
    `error:` line and its exit code (2: bad input; 1: a write that failed), Ctrl-C 130.
    An OSError that no check foresaw (a disk filling up, a file system turned read-only
    mid-run) is one `error:` line too, with exit code 1: the run's own failure."""
    try:
        result = fn()
        return result if isinstance(result, int) else 0
    except UnilsegError as e:
        print(shown(f"error: {e}"), file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(shown(f"error: {e.strerror or type(e).__name__}{where}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130


class WriteError(UnilsegError):
    """An output that passed the checks but could not be written (disk full, permissions
    changed, a file system that refuses it): exit code 1, the run's own failure."""

    exit_code = 1
