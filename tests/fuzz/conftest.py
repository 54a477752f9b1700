"""The fuzz suite's fixtures: a sandbox per case (see `harness`), one torch thread for all."""
from __future__ import annotations

from pathlib import Path

import pytest
from torchthreads import torch_threads

from fuzz.harness import Sandbox


@pytest.fixture
def sandbox(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    box = Sandbox(tmp_path, capsys)
    monkeypatch.chdir(box.out)  # a default output (demo.png, labels.png) lands in out/
    return box


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One torch thread: the demo model is tiny, and on a shared machine more threads only contend."""
    with torch_threads(1):
        yield
