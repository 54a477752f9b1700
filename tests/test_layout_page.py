"""The docs' "Internals" page shows the package tree as `scripts/layout.py` prints it."""
import difflib
import importlib.util

import pytest
from conftest import ROOT


def load_layout():
    spec = importlib.util.spec_from_file_location("layout", ROOT / "scripts" / "layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_internals_page_lists_the_package_tree():
    layout = load_layout()
    shown, actual = layout.shown_section(layout.PAGE.read_text(encoding="utf-8")), layout.tree()
    if shown != actual:
        diff = "\n".join(difflib.unified_diff(shown.splitlines(), actual.splitlines(), "docs/internals.md", "the tree",
                                              lineterm=""))
        pytest.fail(f"docs/internals.md differs from the package tree; run `python scripts/layout.py "
                    f"--write`:\n{diff}", pytrace=False)


def test_a_moved_module_shows_in_the_diff(tmp_path, monkeypatch):
    layout = load_layout()
    package = tmp_path / "src" / "unilseg"
    (package / "io").mkdir(parents=True)
    (package / "__init__.py").write_text('"""The package. More text."""\n')
    (package / "io" / "__init__.py").write_text('"""Files in and out:\nwrapped line.\n\nDetails."""\n')
    (package / "io" / "paths.py").write_text("x = 1\n")
    (package / "configs").mkdir()
    (package / "configs" / "a.yaml").write_text("")
    monkeypatch.setattr(layout, "PACKAGE", package)
    assert layout.tree().splitlines() == [
        "```",
        "src/unilseg/                The package.",
        "  configs/                  package data: .yaml files",
        "  io/                       Files in and out: wrapped line.",
        "    paths.py",
        "```"]
