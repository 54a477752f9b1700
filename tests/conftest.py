"""Shared fixtures: golden data paths and a seeded checkpoint in the official layout."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

try:  # Ray's and Ray Data's log handlers keep the sys.stderr of their first import: import them before any
    import ray.data  # noqa: F401   test swaps in a capture stream (capsys) that is closed when that test ends
except ImportError:
    pass

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
FIXTURES = TESTS / "fixtures"

sys.path.insert(0, str(TESTS))


def golden_cases() -> list[dict]:
    return json.loads((FIXTURES / "cases.json").read_text())


@pytest.fixture(scope="session")
def seeded_checkpoint(tmp_path_factory) -> Path:
    """All 931 official keys (CLIP image tower included), seed 0, `module.` prefixed."""
    from seeded import official_seeded_checkpoint

    return official_seeded_checkpoint(FIXTURES / "keys.tsv", 0, tmp_path_factory.mktemp("ckpt") / "seed0.pth")


@pytest.fixture(scope="session")
def seeded_model(seeded_checkpoint):
    from unilseg.model.build import load_model

    return load_model(seeded_checkpoint, ROOT / "src" / "unilseg" / "configs" / "unilseg20.yaml", device="cpu")


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Path:
    """A folder for one test module's shared files (exports, venvs, converted checkpoints), removed when the
    module ends: a run's module-wide gigabytes must not pile up until the session ends."""
    path = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list:
    """Counts model loads: every front end loads through unilseg.model.build.load_model."""
    import unilseg.model.build

    calls: list = []
    real = unilseg.model.build.load_model

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(unilseg.model.build, "load_model", counting)
    return calls


@pytest.fixture(scope="session")
def ls_documents(tmp_path_factory) -> Path:
    """Label Studio's local-files document root (each test module uses a sub-folder of its own)."""
    return tmp_path_factory.mktemp("ls-documents")


@pytest.fixture(scope="session")
def label_studio(ls_documents, tmp_path_factory):
    """(base URL, legacy API token) of the one Label Studio server of the session (tests/label_studio_server.py)."""
    from label_studio_server import running_label_studio

    with running_label_studio(ls_documents, tmp_path_factory.mktemp("ls-server")) as server:
        yield server


def pytest_terminal_summary(terminalreporter) -> None:
    """The docs examples' tally, when tests/test_docs_examples.py ran pages: blocks run, and those not tested."""
    runner = sys.modules.get("docs_runner")
    if runner is not None and runner.RESULTS:
        terminalreporter.write_sep("=", "docs examples")
        for line in runner.summary(runner.RESULTS):
            terminalreporter.write_line(line)


_exit_status: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without Python's interpreter teardown, once the report is out: this one process has loaded torch,
    ONNX Runtime, Gradio, Ray, Playwright and tokenizers side by side, and a full run once ended in a
    segmentation fault after its summary line ('1255 passed'), while tearing them down. No user process loads
    them together, and the tests check every command's own exit code in its own process."""
    import os

    if _exit_status:
        # os._exit skips atexit, where pytest removes the lock of this run's temporary folder; a folder left
        # locked is never cleaned up by later runs (kept if the run failed: tmp_path_retention_policy).
        basetemp = getattr(getattr(config, "_tmp_path_factory", None), "_basetemp", None)
        if basetemp is not None:
            (Path(basetemp) / ".lock").unlink(missing_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[0])
