"""The demo page (`unilseg demo`), served in-process and driven in a real browser.

Headless Chromium (Debian's `chromium` package, or the binary named by $UNILSEG_CHROMIUM)
through Playwright for Python. Missing either is a failure with the command to install
it, not a skip: `.ci/run` installs both.

Set UNILSEG_DEMO_SCREENSHOT=docs/img/demo_page.png to also write the docs' screenshot.
"""
from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# Gradio's queue itself trips pandas' deprecations; not ours to fix
pytestmark = [pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

SCENE = ROOT / "imgs" / "demo_scene.png"
INSTRUCTIONS = ["the roof of the red house", "the sky"]
TIMEOUT_MS = 120_000  # a run on a busy 2-core machine


def chromium_path() -> str:
    """The browser binary, or a test failure saying how to install one."""
    path = os.environ.get("UNILSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.fail("the demo test needs Chromium: `apt-get install -y chromium` (as root), "
                    "or set UNILSEG_CHROMIUM to a Chromium binary", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url():
    """The page with the demo model, as `unilseg demo` serves it (same loading, same page)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        pytest.fail("the demo test needs Gradio: pip install 'unilseg[demo]' (or -r requirements.txt)",
                    pytrace=False)
    from unilseg.cli.demo import get_parser, predictor_for
    from unilseg.demo.app import build_app, launch, models_note, page_precisions

    args = get_parser().parse_args(["--device", "cpu"])
    predictor = predictor_for(args)
    demo = build_app(predictor, load_precision=lambda p: predictor_for(args, p),
                     precisions=page_precisions("cpu", predictor.precision), models_note=models_note())
    port = free_port()
    launch(demo, port=port, block=False)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the demo test needs Playwright for Python: pip install playwright "
                    "(its own browser download is not needed: the test uses the system Chromium)", pytrace=False)
    executable = chromium_path()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.locator("#run").wait_for()
    yield page
    context.close()


def run_page(page, text: str, expect: str) -> str:
    """Type the instructions, press Segment, wait until the status says `expect` (which it must
    not say already); -> status text."""
    status = page.locator("#status")
    assert expect.lower() not in status.inner_text().lower()
    page.locator("#instructions textarea").fill(text)
    page.get_by_role("button", name="Segment", exact=True).click()
    status.filter(has_text=expect).wait_for()
    return status.inner_text()


def upload(page, path: Path) -> None:
    page.locator("#image input[type=file]").set_input_files(str(path))


def cli_masks(tmp_path: Path, image: Path, texts: list[str]) -> list[bytes]:
    """The segment CLI's mask files for the same image and instructions."""
    from unilseg.cli.segment import main as segment_main

    out = []
    for i, text in enumerate(texts):
        sp = tmp_path / f"cli{i}.png"
        assert segment_main(["--model", "unilseg-demo", "--device", "cpu", "--img", str(image), "--exp", text,
                             "--sp", str(sp)]) == 0
        out.append(sp.read_bytes())
    return out


@pytest.mark.slow
def test_page_segments_like_the_cli(page, tmp_path):
    upload(page, SCENE)
    status = run_page(page, "\n".join(INSTRUCTIONS), "Done")
    assert "2 instructions" in status and "image encoded" in status

    overlay = page.locator("#overlay")
    for i, text in enumerate(INSTRUCTIONS, 1):  # the legend: one entry per instruction
        assert overlay.get_by_text(f"{i}. {text}", exact=True).is_visible()
    images = overlay.locator("img")
    assert images.count() == 1 + len(INSTRUCTIONS)  # the image and one coloured layer per mask
    assert images.first.is_visible()
    assert images.first.evaluate("img => img.complete && img.naturalWidth > 0")

    rows = page.locator("#scores tbody tr")  # score and foreground share per instruction
    assert rows.count() == len(INSTRUCTIONS)
    for row, text in zip(rows.all(), INSTRUCTIONS):
        cells = row.locator("td").all_inner_texts()
        assert cells[1] == text and 0 < float(cells[2]) <= 1 and cells[3].endswith("%")

    links = page.locator("#masks a[download]")
    assert links.count() == len(INSTRUCTIONS)
    downloaded = []
    for i in range(len(INSTRUCTIONS)):
        with page.expect_download() as info:
            links.nth(i).click()
        target = tmp_path / f"page{i}.png"
        info.value.save_as(target)
        downloaded.append(target.read_bytes())
    expected = cli_masks(tmp_path, SCENE, INSTRUCTIONS)
    for got, want in zip(downloaded, expected):
        assert cv2.imdecode(np.frombuffer(got, np.uint8), cv2.IMREAD_UNCHANGED).any()
        assert got == want  # byte-equal PNGs: same model, same reader, same encoder

    shot = tmp_path / "demo_page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    if os.environ.get("UNILSEG_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["UNILSEG_DEMO_SCREENSHOT"])


@pytest.mark.slow
def test_bad_input_gets_a_message_and_the_page_keeps_serving(page, tmp_path):
    status = run_page(page, "the sky", "Upload an image first")
    assert status.startswith("Problem:")

    upload(page, SCENE)
    status = run_page(page, "  \n ", "Type what to segment")
    assert status.startswith("Problem:")
    assert page.locator("#masks a[download]").count() == 0

    status = run_page(page, "the sky", "Done")
    assert "1 instruction " in status
    assert page.locator("#masks a[download]").count() == 1
    run_page(page, "the roof of the red house", "reused the encoded image")  # cached per session
    assert "Traceback" not in page.content()

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really an image" * 10)
    upload(page, broken)
    status = run_page(page, "the sky", "could not be decoded")
    assert status.startswith("Problem:") and "upload a PNG, JPEG" in status

    huge = tmp_path / "huge.png"  # 50 megapixels (a small file: one grey level)
    cv2.imwrite(str(huge), np.full((5000, 10000), 128, np.uint8))
    upload(page, huge)
    status = run_page(page, "the sky", "50.0 megapixels")
    assert status.startswith("Problem:") and "at most 40 megapixels" in status

    upload(page, SCENE)
    assert "Done" in run_page(page, "the sky", "Done")


def test_demo_without_gradio_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    from unilseg.__main__ import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install 'unilseg[demo]'" in err


def test_models_note_names_the_download_command_for_missing_weights(monkeypatch, tmp_path):
    from unilseg.demo.app import models_note

    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))  # an empty cache: UniLSeg-20 is not downloaded
    note = models_note()
    assert "**unilseg-demo** (running)" in note
    assert "unilseg-20: weights not downloaded; fetch them with `python -m unilseg download unilseg-20`" in note


def test_demo_with_missing_weights_names_the_download_command(monkeypatch, tmp_path, capsys):
    from unilseg.__main__ import main

    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    assert main(["demo", "--model", "unilseg-20", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "python -m unilseg download unilseg-20" in err
