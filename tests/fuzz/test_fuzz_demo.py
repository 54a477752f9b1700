"""The demo page's handler on hostile uploads and texts, called directly (no browser, no server).

Every request ends in a status line: `**Done:**` with one PNG per instruction, or `**Problem:**`
saying what to do; the handler never raises, and the page keeps serving.
"""
from __future__ import annotations

import errno
import os
from functools import partial
from pathlib import Path

import cv2
import pytest

from fuzz.hostile import BAD, animated_gif, bomb_png, image_bytes, make, solid_png

pytest.importorskip("gradio")
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),  # gr.Warning outside a request
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.slow]  # the demo model on every case, through Gradio


@pytest.fixture(scope="module")
def segment():
    """The page's `segment` event handler, over the demo model."""
    from unilseg import Predictor, load_model
    from unilseg.demo.app import build_app

    demo = build_app(Predictor(load_model(model="unilseg-demo", device="cpu")))
    handler = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "segment")
    return lambda image, text: handler(image, text, 0.5, None, None, None)


def good(tmp_path: Path, h: int = 48, w: int = 64) -> str:
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes(h=h, w=w))
    return str(path)


def problem(result) -> str:
    status = result[3]
    assert status.startswith("**Problem:**"), status
    assert result[1] is None
    return status


def done(result, count: int, shape: tuple[int, int]) -> None:
    status, files = result[3], result[1]
    assert status.startswith("**Done:**"), status
    assert len(files) == count
    for f in files:
        assert cv2.imread(f, cv2.IMREAD_UNCHANGED).shape == shape


UPLOADS = {  # name -> maker of a bad upload (a path, or a raw payload)
    "none": lambda d: None,
    "empty-dict": lambda d: {},
    "dict-without-file": lambda d: {"path": str(d / "gone.png")},
    "gone-file": lambda d: str(d / "gone.png"),
    "huge": lambda d: str(solid_png(d / "huge.png", 5000, 8400)),  # 42 megapixels, over the page's 40
    "bomb": lambda d: str(bomb_png(d / "bomb.png")),
}
UPLOADS.update({f"bad-{name}": partial(lambda name, d: str(make(BAD, name, d)), name)
                for name in ("zero-byte", "truncated-png", "truncated-jpeg", "random-bytes", "html-as-png",
                             "text-as-jpeg", "directory-named-png")})


@pytest.mark.parametrize("name", sorted(UPLOADS))
def test_bad_upload(segment, tmp_path, name):
    problem(segment(UPLOADS[name](tmp_path), "the red circle"))


TEXTS_BAD = {"empty": "", "none": None, "blank-lines": "\n \n\t\n", "100-instructions": "\n".join(
    f"thing {i}" for i in range(100)), "17-instructions": "\n".join(f"thing {i}" for i in range(17))}


@pytest.mark.parametrize("name", sorted(TEXTS_BAD))
def test_bad_instructions(segment, tmp_path, name):
    problem(segment(good(tmp_path), TEXTS_BAD[name]))


TEXTS_ODD = {
    "16-instructions": ("\n".join(f"thing {i}" for i in range(16)), 16),
    "10k-chars": ("the red circle " * 667, 1),
    "rtl-emoji-nul": ("الدائرة 🔴\nthe\x00circle\n\u202eright", 3),
    "markdown-and-html": ("<script>alert(1)</script>\n| a | b |\n**bold** [x](y)", 3),
    "crlf": ("the sky\r\nthe grass\r\n", 2),
    "leading-dashes": ("--sp /etc/passwd\n-", 2),
}


@pytest.mark.parametrize("name", sorted(TEXTS_ODD))
def test_odd_instructions(segment, tmp_path, name):
    text, count = TEXTS_ODD[name]
    done(segment(good(tmp_path), text), count, (48, 64))


@pytest.mark.parametrize("shape", [(1, 1), (1, 3000), (3000, 1)])
def test_odd_sizes(segment, tmp_path, shape):
    done(segment(good(tmp_path, *shape), "x"), 1, shape)


def test_animated_gif_upload(segment, tmp_path):
    done(segment(str(animated_gif(tmp_path / "a.gif")), "x"), 1, (40, 40))


def test_mask_write_failing(segment, tmp_path, monkeypatch):
    """A full disk while writing the downloads: a problem line, and the next request works."""
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    upload = good(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(Path, "write_bytes", full)
        status = problem(segment(upload, "x"))
    assert "server" in status
    done(segment(good(tmp_path), "x"), 1, (48, 64))


STARTUP = {  # `unilseg demo` flags that must stop it before it serves (a model load at most)
    "port-too-big": ["--port", "70000"],
    "port-negative": ["--port", "-5"],
    "port-zero": ["--port", "0"],
    "weights-html": ["--weights", "HTML"],
    "config-not-a-mapping": ["--config", "LIST"],
    "opts-unknown-key": ["--opts", "model.bogus", "1"],
    "bad-device": ["--device", "tpu:7"],
    "bad-precision": ["--precision", "fp8"],
}


@pytest.mark.parametrize("name", sorted(STARTUP))
def test_demo_startup_refused(sandbox, name):
    from unilseg.cli.demo import main

    html, listing = sandbox.inp / "w.pth", sandbox.inp / "c.yaml"
    html.write_text("<html>quota exceeded</html>")
    listing.write_text("- a\n- b\n")
    argv = [{"HTML": str(html), "LIST": str(listing)}.get(a, a) for a in STARTUP[name]]
    sandbox.run(["--model", "unilseg-demo", "--device", "cpu", *argv], 2, main=main)
