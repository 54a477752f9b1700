"""The command-line reference, docs/reference/cli.md, generated from the subcommands' argparse parsers.

    python scripts/cli_reference.py           print the page
    python scripts/cli_reference.py --write   write it to docs/reference/cli.md
    python scripts/cli_reference.py --check   exit 1 with a diff if docs/reference/cli.md differs

Each parser is taken from its command's own main, called the way `unilseg` calls it, with
`ArgumentParser.parse_known_args` replaced by a function that hands the parser back instead of
parsing: nothing runs, and as with `--help` no torch is imported. tests/test_docs_cli.py fails
when the page is out of date, and when a flag in the first column of a docs table is none of
`known_flags()` (the tables are read by tests/docs_blocks.py).
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "reference" / "cli.md"
COMMAND = "python scripts/cli_reference.py --write"
USAGE_WIDTH = 100  # argparse wraps usage to the terminal; fixed here so the page does not depend on it

sys.path.insert(0, str(ROOT / "src"))  # this checkout's parsers, not an installed copy's


class _Parser(Exception):  # a result carried out of main, not an error
    """Raised instead of parsing: carries the parser a command built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def _hand_back(parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
    raise _Parser(parser)


def parser_of(main: Callable[[list[str]], object]) -> argparse.ArgumentParser:
    """The parser `main(argv)` builds (its first `parse_args`), without running the command."""
    # ["--help"]: were the patch ever bypassed, argparse would print help and exit, not run the command
    with mock.patch.object(argparse.ArgumentParser, "parse_known_args", _hand_back):
        try:
            main(["--help"])
        except _Parser as found:
            return found.parser
    raise RuntimeError(f"{main.__module__}.{main.__qualname__} returned without parsing its arguments")


def subcommands() -> dict[str, tuple[str, argparse.ArgumentParser]]:
    """name -> (one-line summary, parser), in `unilseg --help`'s order."""
    from unilseg.__main__ import SUBCOMMANDS

    out = {}
    for name, (target, summary) in SUBCOMMANDS.items():
        module, _, func = target.partition(":")
        out[name] = summary, parser_of(getattr(importlib.import_module(module), func))
    return out


# ---------------------------------------------------------------- Markdown

_SPECIAL = {c: "\\" + c for c in "\\`*_[]{}|"} | {"<": "&lt;", ">": "&gt;", "&": "&amp;"}


def escape(text: str) -> str:
    """Plain text as Markdown that shows it as is, in a table cell too (GitHub's and Python-Markdown's)."""
    return "".join(_SPECIAL.get(c, c) for c in text)


def code(text: str) -> str:
    """`text` as code. A `|` splits a GitHub table cell even inside backticks, and Python-Markdown shows the
    backslash that escapes it there: such text goes into <code> tags (whose content is Markdown, so escaped)."""
    if "|" in text or "`" in text:
        return f"<code>{escape(text)}</code>"
    return f"`{text}`"


def inline(text: str) -> str:
    """A help text as Markdown: its `quoted` parts as code, the rest escaped, whitespace collapsed as argparse
    does."""
    text = " ".join(text.split())
    out, pos = [], 0
    for m in re.finditer(r"`([^`]+)`", text):
        out += [escape(text[pos:m.start()]), code(m.group(1))]
        pos = m.end()
    return "".join(out + [escape(text[pos:])])


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    def row(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    return [row(header), "|" + "---|" * len(header)] + [row(r) for r in rows]


# ---------------------------------------------------------------- one parser

def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage lines `--help` starts with, wrapped at USAGE_WIDTH."""
    f = _formatter(parser)
    f.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return f.format_help().strip()


def default_of(action: argparse.Action) -> str:
    """The default worth showing: none for None, False, an empty list or SUPPRESS; `required` if required."""
    if action.required and action.option_strings:
        return "required"
    value = action.default
    if value is None or value is False or value == [] or value is argparse.SUPPRESS:
        return ""
    return code(str(value) if str(value) else repr(value))


def action_row(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    """| flag | value | default | meaning | of one argument, as `--help` words it (argparse's own formatter
    helpers: metavars and %(default)s-style help exactly as it prints them)."""
    f = _formatter(parser)
    if action.option_strings:
        flag = ", ".join(code(s) for s in action.option_strings)
        value = f._format_args(action, f._get_default_metavar_for_optional(action)) if action.nargs != 0 else ""
    else:
        flag, value = code(f._format_args(action, f._get_default_metavar_for_positional(action))), ""
    meaning = inline(f._expand_help(action)) if action.help else ""
    return [flag, code(value) if value else "", default_of(action), meaning]


def section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """`## unilseg NAME`: description, usage, and a table per argument group (-h/--help left out)."""
    lines = [f'<a id="{name}"></a>', "", f"## unilseg {name}", ""]
    if parser.description:
        lines += [inline(parser.description), ""]
    lines += ["```text", usage(parser), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions
                   if a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"**{inline(group.title)}**" if group.title else "", ""]
        if group.description:
            lines += [inline(group.description), ""]
        lines += table(("flag", "value", "default", "meaning"), (action_row(parser, a) for a in actions)) + [""]
    if parser.epilog:
        lines += [inline(parser.epilog), ""]
    return lines[:-1]


def page() -> str:
    """docs/reference/cli.md."""
    commands = subcommands()
    lines = [
        "# Command-line reference",
        "",
        f"This page is generated from the argument parsers, so it says what `unilseg COMMAND --help` says; "
        f"regenerate it with `{COMMAND}` (tests/test_docs_cli.py fails when it is out of date).",
        "",
        "`unilseg` without a command runs `unilseg segment`. `python general_inference.py` takes the same flags as "
        "[`unilseg segment`](#segment) (its usage line names it `general_inference.py`), `python -m unilseg` is "
        "`unilseg`, and `python -m unilseg.data` is [`unilseg data`](#data).",
        "",
    ]
    lines += table(("command", "what it does"),
                   ([f"[`unilseg {name}`](#{name})", inline(summary)] for name, (summary, _) in commands.items()))
    for name, (_, parser) in commands.items():
        lines += [""] + section(name, parser)
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- flags

def known_flags() -> set[str]:
    """Every option string of every subcommand's parser."""
    return {s for _, parser in subcommands().values() for a in parser._actions for s in a.option_strings}



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help=f"write the page to {PAGE.relative_to(ROOT)}")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if the written page differs")
    args = p.parse_args(argv)
    text = page()
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(text, encoding="utf-8")
    elif args.check:
        written = PAGE.read_text(encoding="utf-8") if PAGE.is_file() else ""
        if written != text:
            sys.stdout.writelines(difflib.unified_diff(written.splitlines(True), text.splitlines(True),
                                                       str(PAGE.relative_to(ROOT)), "the parsers"))
            print(f"\n{PAGE.relative_to(ROOT)} is out of date; run `{COMMAND}`", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
