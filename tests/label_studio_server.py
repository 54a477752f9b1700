"""A real Label Studio server for the tests (one per pytest session: tests/conftest.py's `label_studio`).

The server runs from its own virtual environment (made by `scripts/install_label_studio.sh`,
found at VENV/label-studio/bin/label-studio for the test's VENV = sys.prefix, or at
$UNILSEG_LABEL_STUDIO) on 127.0.0.1 with sqlite in a temporary directory, local-files
serving on (document root: the session's `ls_documents`), ML backends on loopback allowed
(the tests' `unilseg serve` listens on 127.0.0.1: ML_BLOCK_LOCAL_IP=false, and
SSRF_PROTECTION_ENABLED=false for the webhook Label Studio registers with a backend). Without it the
tests that need it fail under CI (env CI set) and are skipped elsewhere.

Authentication: started with `--enable-legacy-api-token` and a `--user-token` made for the
session, so API clients use that legacy token (1.23 refuses legacy tokens unless so enabled);
a browser logs in with USER / PASSWORD (`log_in`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_S = 300  # a first start initialises the database: ~40 s here, minutes on a loaded machine
PAGE_TIMEOUT_MS = 60_000
USER, PASSWORD = "unilseg@example.com", "unilseg-test-password"


def label_studio_executable() -> Path:
    """The server's executable, or a failure (CI) / skip (elsewhere) saying how to install it."""
    named = os.environ.get("UNILSEG_LABEL_STUDIO")
    path = Path(named) if named else Path(sys.prefix) / "label-studio" / "bin" / "label-studio"
    if not path.is_file():
        why = (f"the Label Studio test needs the server at {path}: bash scripts/install_label_studio.sh "
               f"{Path(sys.prefix) / 'label-studio'} (scripts/install.sh does it), or set UNILSEG_LABEL_STUDIO "
               "to a label-studio executable")
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return json.loads(r.read()).get("status") == "UP"
    except (OSError, ValueError):
        return False


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session (it and anything it started): SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def running_label_studio(documents: Path, home: Path) -> Iterator[tuple[str, str]]:
    """(base URL, legacy API token) of a Label Studio started in `home`; stopped on exit."""
    executable = label_studio_executable()
    token, port = secrets.token_hex(20), free_port()
    env = {**os.environ, "HOME": str(home), "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true", "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(documents),
           "LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
           "LABEL_STUDIO_SENTRY_DSN": "", "LABEL_STUDIO_FRONTEND_SENTRY_DSN": "",
           # an ML backend on loopback: allowed (ML_BLOCK_LOCAL_IP), and so is the webhook Label Studio then
           # makes for it (webhook URLs are checked against local addresses unless SSRF_PROTECTION_ENABLED is off)
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    for name in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"):  # the server runs in its own environment
        env.pop(name, None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(
        [str(executable), "start", "--no-browser", "--port", str(port), "--internal-host", "127.0.0.1",
         "--data-dir", str(home / "data"), "--username", USER, "--password", PASSWORD, "--user-token", token,
         "--enable-legacy-api-token"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=home, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (home / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"Label Studio did not come up on {url} (exit {proc.poll()}):\n{tail}", pytrace=False)
            time.sleep(1)
        yield url, token
    finally:
        stop(proc)
        log.close()


def chromium_path() -> str:
    path = os.environ.get("UNILSEG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.fail("the Label Studio page test needs Chromium: `apt-get install -y chromium` (as root), "
                    "or set UNILSEG_CHROMIUM to a Chromium binary", pytrace=False)
    return path


def sync_playwright():
    """Playwright's sync entry point, or a failure saying how to install it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Label Studio page test needs Playwright for Python: pip install playwright "
                    "(the system Chromium is used)", pytrace=False)
    return sync_playwright()


def log_in(page, url: str) -> None:
    """Log a Playwright page in to the Label Studio at `url` as USER."""
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(f"{url}/user/login/")
    page.fill("input[name=email]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/user/login" not in u)


def brush_regions_shown(page, count: int) -> None:
    """Wait until the labeling page shows its image and `count` brush regions with painted pixels."""
    page.wait_for_function("() => { const i = document.querySelector('img[alt=image]');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    page.wait_for_function(f"() => document.querySelectorAll('.lsf-tree__node_type_brushregion').length"
                           f" === {count}")
    page.wait_for_function(f"() => ({PAINTED_CANVASES})() >= {count}")


# how many of the page's brush-region canvases hold painted pixels (Konva draws each region on a canvas)
PAINTED_CANVASES = """() => [...document.querySelectorAll('canvas')].filter(c => {
    if (!c.width || !c.height || c.style.opacity !== '0.6') return false;
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i]) return true;
    return false;
}).length"""
