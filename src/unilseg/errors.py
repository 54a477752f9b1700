"""Errors a user can fix; the CLIs print their message as one line, without a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

# What the running front end calls each field; str(error) words it so. The command line sets its flags for
# the whole command (run_guarded), so text a library makes of an error mid-job (a failed item's line and
# results row) names flags as the command's own errors do; API callers get the API's terms.
_NAMES: ContextVar[Mapping[str, str] | None] = ContextVar("unilseg_error_names", default=None)


@contextmanager
def worded_as(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, `str(UnilsegError)` calls each field by `names` (field -> a front end's name)."""
    token = _NAMES.set(names)
    try:
        yield
    finally:
        _NAMES.reset(token)


def current_names() -> dict[str, str]:
    """The names `worded_as` set here ({}: the API's terms), for work sent to other processes (Ray)."""
    return dict(_NAMES.get() or {})


class _Words(dict):
    """Slot values for a message template; a slot nobody names reads as its own name."""

    def __missing__(self, key: str) -> str:
        return key


class UnilsegError(Exception):
    """Bad input, a bad file or a bad setting; the message says what to do.

    `field` names the argument at fault in the API's terms ("image", "output", "expression",
    "weights", "model", ...; None: no one argument). With a field the message is a template:
    `{field}` is the field's name, another bare slot (`{format}`) names that argument, the
    other slots are `values`. `str(e)` says it in the API's terms (or, inside `worded_as`, in the
    running front end's); a front end that calls the arguments something else (the CLI's flags)
    passes its names to `worded`:

        e = UnilsegError("{field} {path} is a directory; give a file path", field="output", path="m")
        str(e)                        # 'output m is a directory; give a file path'
        e.worded({"output": "--sp"})  # '--sp m is a directory; give a file path'
    """

    def __init__(self, message: str, *, field: str | None = None, **values: object) -> None:
        self.template, self.field, self.values = message, field, values
        super().__init__(self.worded({}))

    def __str__(self) -> str:
        return self.worded(_NAMES.get() or {})

    def worded(self, names: Mapping[str, str]) -> str:
        """The message with each argument called by `names` (field -> its name there), else its own name."""
        if self.field is None:
            return self.template
        words = _Words(names)
        words.update(self.values, field=names.get(self.field, self.field))
        return self.template.format_map(words)

    def __reduce__(self):  # keyword arguments survive pickling (Ray sends errors between processes)
        return _rebuild, (type(self), self.template, self.field, self.values, self.__dict__)


def _rebuild(cls: type[UnilsegError], template: str, field: str | None, values: dict, state: dict) -> UnilsegError:
    e = cls(template, field=field, **values)
    e.__dict__.update(state)
    return e


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


TORCH_MISSING = ("this command needs PyTorch, which this environment does not have (the slim install runs an "
                 "`unilseg export` with --runtime onnx --weights EXPORT_DIR: single calls, batches, --classes, "
                 "--video, serve, demo); for the rest install the full unilseg: pip install -r requirements.txt -e .")


def torch_missing(e: ModuleNotFoundError) -> int:
    """For a failed import of torch (or torchvision): print the one line saying so -> exit code 2. Any other
    missing module is raised again."""
    if (e.name or "").split(".")[0] not in ("torch", "torchvision"):
        raise e
    print(f"error: {TORCH_MISSING}", file=sys.stderr)
    return 2


def run_guarded(fn: Callable[[], object], interrupted: str = "interrupted",
                names: Mapping[str, str] | None = None) -> int:
    """Run a command body -> exit code (its int result, else 0); a UnilsegError becomes one
    `error:` line and its exit code (2: bad input; 1: a write that failed), Ctrl-C 130.
    A command that needs torch where it is not installed (a slim install) is one line saying so.
    An OSError that no check foresaw (a disk filling up, a file system turned read-only
    mid-run) is one `error:` line too, with exit code 1: the run's own failure. `names`: what this
    front end calls each error field (UnilsegError.worded)."""
    try:
        with worded_as(names or {}):
            result = fn()
        return result if isinstance(result, int) else 0
    except UnilsegError as e:
        print(shown(f"error: {e.worded(names or {})}"), file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except ModuleNotFoundError as e:
        return torch_missing(e)
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
