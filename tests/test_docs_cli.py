"""The docs' command-line tables agree with the parsers: docs/reference/cli.md is what `scripts/cli_reference.py`
generates from them, and every flag a docs table names in its first column is a real one."""
from __future__ import annotations

import argparse
import difflib
import importlib.util
import subprocess
import sys

import pytest
from conftest import ROOT
from docs_blocks import table_flags, unknown_flags

from unilseg.__main__ import SUBCOMMANDS


def load_reference():
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "scripts" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = load_reference()


def test_the_committed_page_is_the_generated_one():
    written, generated = ref.PAGE.read_text(encoding="utf-8"), ref.page()
    if written != generated:
        diff = "\n".join(difflib.unified_diff(written.splitlines(), generated.splitlines(), "docs/reference/cli.md",
                                              "the parsers", lineterm=""))
        pytest.fail(f"docs/reference/cli.md differs from the parsers; run `{ref.COMMAND}`:\n{diff}", pytrace=False)


def test_the_page_has_every_subcommand_and_every_flag():
    text = ref.page()
    for name in SUBCOMMANDS:
        assert f'<a id="{name}"></a>\n\n## unilseg {name}\n' in text
    flags = {flag for _, flag in table_flags(text)}
    assert flags == ref.known_flags() - {"-h", "--help"}


def test_generating_the_page_imports_no_torch():
    code = ("import runpy, sys; runpy.run_path(sys.argv[1])['page'](); "
            "print(sorted(m for m in sys.modules if m.partition('.')[0] in ('torch', 'numpy', 'cv2')))")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts" / "cli_reference.py")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_check_exits_1_with_a_diff_when_the_page_is_stale(tmp_path, monkeypatch, capsys):
    page = tmp_path / "docs" / "reference" / "cli.md"
    monkeypatch.setattr(ref, "ROOT", tmp_path)
    monkeypatch.setattr(ref, "PAGE", page)
    assert ref.main(["--check"]) == 1  # no page yet
    assert ref.main(["--write"]) == 0 and ref.main(["--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("## unilseg serve\n", "## unilseg sevre\n"))
    capsys.readouterr()
    assert ref.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert "-## unilseg sevre\n+## unilseg serve\n" in out and ref.COMMAND in err


def test_docs_tables_name_only_real_flags():
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    unknown = unknown_flags(paths, ref.known_flags(), ROOT)
    assert not unknown, "flags in docs tables that no subcommand has:\n" + "\n".join(unknown)


def test_unknown_flags_are_reported_with_file_and_line(tmp_path):
    doc = tmp_path / "page.md"
    doc.write_text("\n".join([
        "# Flags",
        "",
        "| flag | what |",
        "|---|---|",
        "| `--img PATH` | real; `--not-in-first-column` is not looked at |",
        "| `--exp TEXT` / `--exp-flie FILE` | one real, one misspelt |",
        r"| `--format png\|npy` | escaped pipe inside the first cell |",
        "| `--runtime onnx|--bogus-one` | a code span's pipe does not end the cell |",
        "| `--no-progress` | ok |",
        "",
        "--also-not-in-a-table",
        "",
        "```",
        "| `--inside-code` | x |",
        "|---|---|",
        "```",
        "",
        "flag | what",
        "--- | ---",
        "`--shard I/N` | a table without outer pipes",
        "`--shards I/N` | and its unknown flag",
        "",
    ]) + "\n")
    known = ref.known_flags()
    assert unknown_flags([doc], known, ROOT) == [f"{doc}:6: --exp-flie", f"{doc}:8: --bogus-one",
                                               f"{doc}:21: --shards"]
    assert [flag for _, flag in table_flags(doc.read_text())] == [
        "--img", "--exp", "--exp-flie", "--format", "--runtime", "--bogus-one", "--no-progress", "--shard",
        "--shards"]


def test_a_parser_is_taken_without_running_its_command():
    ran = []

    def main(argv):
        p = argparse.ArgumentParser(prog="unilseg tool")
        p.parse_args(argv)
        ran.append(argv)

    assert ref.parser_of(main).prog == "unilseg tool" and ran == []
    with pytest.raises(RuntimeError, match="without parsing"):
        ref.parser_of(lambda argv: 0)


def test_a_section_shows_what_help_shows(monkeypatch):
    monkeypatch.setenv("COLUMNS", str(ref.USAGE_WIDTH + 2))  # --help's width in such a terminal
    p = argparse.ArgumentParser(prog="unilseg tool", description="Do *one* thing.", epilog="see also: a | b")
    p.add_argument("src", help="input file")
    p.add_argument("--mode", choices=("fast", "exact"), default="fast", help="fast | exact (default %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE|DIR", help="where `a|b` and <x> go")
    p.add_argument("--n", type=int, default=0, nargs="+", help="counts of s_t")
    g = p.add_argument_group("extra", "More flags.")
    g.add_argument("--flag", "--alias", action="store_true", help="on")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, help="a bar")
    g.add_argument("--hidden", help=argparse.SUPPRESS)
    head = "| flag | value | default | meaning |\n|---|---|---|---|"
    assert "\n".join(ref.section("tool", p)) == "\n".join([
        '<a id="tool"></a>',
        "",
        "## unilseg tool",
        "",
        r"Do \*one\* thing.",
        "",
        "```text",
        p.format_usage().strip(),
        "```",
        "",
        "**positional arguments**",
        "",
        head,
        "| `src` | | | input file |",
        "",
        "**options**",
        "",
        head,
        r"| `--mode` | `{fast,exact}` | `fast` | fast \| exact (default fast) |",
        r"| `--out` | <code>FILE\|DIR</code> | required | where <code>a\|b</code> and &lt;x&gt; go |",
        r"| `--n` | `N [N ...]` | `0` | counts of s\_t |",
        "",
        "**extra**",
        "",
        "More flags.",
        "",
        head,
        "| `--flag`, `--alias` | | | on |",
        "| `--progress`, `--no-progress` | | | a bar |",
        "",
        r"see also: a \| b",
    ])
