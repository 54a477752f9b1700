"""The `slow` marker: registered under strict markers, never applied by default, and carried by every test on
a costly session fixture, so `python -m pytest -q -m "not slow"` stays the quick run for contributors."""
from __future__ import annotations

import pytest

# session fixtures that cost minutes: the seeded full-size UniLSeg-20 (tests/conftest.py), a real Label Studio
COSTLY_FIXTURES = frozenset({"seeded_checkpoint", "seeded_model", "label_studio"})


def test_slow_is_registered_and_unknown_markers_are_errors(pytestconfig: pytest.Config) -> None:
    assert any(line.startswith("slow:") for line in pytestconfig.getini("markers"))
    addopts = pytestconfig.getini("addopts")
    assert "--strict-markers" in addopts
    assert not any(a == "-m" or a.startswith("-m") for a in addopts)  # a plain `pytest` (.ci/run) deselects nothing


def test_every_test_on_a_costly_fixture_is_marked_slow(request: pytest.FixtureRequest) -> None:
    """Checks the tests of this run: all of them in the full suite, none left to check under -m "not slow"."""
    unmarked = [item.nodeid for item in request.session.items
                if COSTLY_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None]
    assert unmarked == []
