"""The demo page served on 127.0.0.1 and attacked through its own API (`POST /gradio_api/call/segment`).

The page reads only files Gradio received as uploads (or copied for its examples), answers
every other file with one and the same message (no oracle of which server paths exist),
never blocks its one queue worker on a read, sizes an image from its header before decoding
it, and checks its numbers as the CLI does. Also here: an unreadable weights cache is
skipped with one warning, and the next place in the lookup order is tried.
"""
from __future__ import annotations

import errno
import io
import json
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import httpx
import numpy as np
import pytest
from conftest import ROOT

from fuzz.hostile import bomb_png, image_bytes, solid_png

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # Gradio's own
              pytest.mark.slow]  # a served page, 90 requests through its API

META = {"_type": "gradio.FileData"}
CALL_LIMIT_S = 30.0  # a refusal takes milliseconds; a blocked worker never answers
TEXT = "the red circle"


@dataclass
class Server:
    """The page, launched in this process on 127.0.0.1 with its own Gradio upload folder."""

    base: str  # http://127.0.0.1:PORT/gradio_api
    demo: gr.Blocks
    uploads: Path  # GRADIO_TEMP_DIR
    handler: Callable[..., tuple]  # the `segment` event handler itself

    def upload(self, data: bytes, name: str = "scene.png") -> str:
        """POST /gradio_api/upload, as the browser uploads -> the server path Gradio gives it."""
        r = httpx.post(f"{self.base}/upload", files={"files": (name, data, "image/png")}, timeout=30)
        r.raise_for_status()
        return r.json()[0]

    def call(self, image: Any, text: Any = TEXT, threshold: Any = 0.5, precision: Any = None,
             limit_s: float = CALL_LIMIT_S, min_score: Any = None) -> tuple[str, Any]:
        """One API call -> ('complete' or 'error', its data), or ('timeout', None) past `limit_s`."""
        body = json.dumps({"data": [image, text, threshold, precision, min_score]})  # NaN / Infinity as JSON extensions
        deadline = time.monotonic() + limit_s
        with httpx.Client(timeout=httpx.Timeout(10.0, read=limit_s)) as c:
            r = c.post(f"{self.base}/call/segment", content=body, headers={"content-type": "application/json"})
            if r.status_code != 200:
                return f"http-{r.status_code}", r.text
            event = None
            try:
                with c.stream("GET", f"{self.base}/call/segment/{r.json()['event_id']}") as stream:
                    for line in stream.iter_lines():
                        if line.startswith("event:"):
                            event = line.removeprefix("event:").strip()
                        elif line.startswith("data:") and event in ("complete", "error"):
                            return event, json.loads(line.removeprefix("data:"))
                        if time.monotonic() > deadline:
                            return "timeout", None
            except httpx.TimeoutException:
                return "timeout", None
        return "closed", None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    from unilseg import Predictor, load_model
    from unilseg.demo.app import build_app, launch

    uploads = tmp_path_factory.mktemp("gradio-uploads")
    old = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(uploads)
    try:
        demo = build_app(Predictor(load_model(model="unilseg-demo", device="cpu")))
        port = free_port()
        launch(demo, port=port, block=False)
        handler = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "segment")
        yield Server(f"http://127.0.0.1:{port}/gradio_api", demo, uploads, handler)
        demo.close()
    finally:
        if old is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> dict[str, str]:
    """Server files outside the upload folder, one of each kind: a caller must learn nothing of them."""
    root = tmp_path_factory.mktemp("server-files")
    (root / "secret.png").write_bytes(image_bytes(h=40, w=56))  # an image the model would segment
    (root / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "folder.png").mkdir()
    return {"image": str(root / "secret.png"), "text": str(root / "passwd"), "folder": str(root / "folder.png"),
            "missing": str(root / "missing.png")}


def status(reply: tuple[str, Any]) -> str:
    event, data = reply
    assert event == "complete", reply
    return data[3]


def refused(reply: tuple[str, Any]) -> None:
    """The page's one answer for a file it will not read: no overlay, no files."""
    from unilseg.demo.app import REFUSED_FILE

    assert status(reply) == f"**Problem:** {REFUSED_FILE}", reply
    assert reply[1][0] is None and reply[1][1] is None


def done(reply: tuple[str, Any], count: int = 1) -> None:
    assert status(reply).startswith("**Done:**"), reply
    assert len(reply[1][1]) == count


def plant(folder: Path, name: str) -> Path:
    """A fresh sub-folder of `folder` (as Gradio makes one per upload) -> the path `name` in it."""
    sub = folder / uuid.uuid4().hex
    sub.mkdir()
    return sub / name


def swapped(s: Server, make: Callable[[Path], object]) -> str:
    """A real upload (in Gradio's own upload set) whose file is then replaced by `make(path)`."""
    path = s.upload(image_bytes(h=30 + len(s.demo.upload_file_set) % 50, w=40))  # unique bytes, own folder
    assert path in s.demo.upload_file_set
    os.unlink(path)
    make(Path(path))
    return path


def climb(folder: Path | str, target: str) -> str:
    """`folder/../../..../target`: `target` reached from inside `folder` through `..`."""
    return str(folder) + "/.." * (len(Path(folder).resolve().parts) + 2) + target


# Every way a request can name a server file (t: the file, s: the server).
SHAPES: dict[str, Callable[[Server, str], Any]] = {
    "path": lambda s, t: {"path": t},
    "bare-string": lambda s, t: t,
    "path-with-meta": lambda s, t: {"path": t, "meta": META},
    "all-fields-but-meta": lambda s, t: {"path": t, "orig_name": "a.png", "size": 10, "mime_type": "image/png",
                                         "is_stream": False},
    "url-only": lambda s, t: {"url": f"{s.base}/file={t}"},
    "url-only-with-meta": lambda s, t: {"url": f"{s.base}/file={t}", "meta": META},
    "url-as-path": lambda s, t: {"path": f"{s.base}/file={t}"},
    "url-as-path-with-meta": lambda s, t: {"path": f"{s.base}/file={t}", "meta": META},
    "file=-path": lambda s, t: {"path": f"/gradio_api/file={t}"},
    "file=-path-with-meta": lambda s, t: {"path": f"/gradio_api/file={t}", "meta": META},
    "relative": lambda s, t: {"path": os.path.relpath(t)},
    "relative-dot-dot": lambda s, t: {"path": "../" * (len(Path.cwd().parts) + 2) + t.lstrip("/")},
    "relative-dot-dot-with-meta": lambda s, t: {"path": "../" * (len(Path.cwd().parts) + 2) + t.lstrip("/"),
                                                "meta": META},
    "upload-folder-dot-dot": lambda s, t: {"path": climb(s.uploads, t)},
    "upload-folder-dot-dot-with-meta": lambda s, t: {"path": climb(s.uploads, t), "meta": META},
    "real-upload-dot-dot": lambda s, t: {"path": climb(Path(s.upload(image_bytes())).parent, t)},
    "symlink-in-upload-folder": lambda s, t: {"path": str((p := plant(s.uploads, "a.png"), p.symlink_to(t), p)[2])},
    "symlink-in-upload-folder-with-meta": lambda s, t: {"path": str((p := plant(s.uploads, "a.png"),
                                                                     p.symlink_to(t), p)[2]), "meta": META},
    "upload-swapped-for-symlink": lambda s, t: {"path": swapped(s, lambda p: p.symlink_to(t))},
    "upload-folder-swapped-for-symlink": lambda s, t: {
        "path": swapped(s, lambda p: (os.rmdir(p.parent), p.parent.symlink_to(Path(t).parent)))
        .replace("scene.png", Path(t).name)},
}


def answer(reply: tuple[str, Any]) -> tuple[str, Any]:
    """What a caller learns from a reply (Gradio's event ids and timings aside)."""
    event, data = reply
    return (event, data[3]) if event == "complete" else (event, data)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_page_reads_no_server_file(server, outside, shape):
    """Whatever the request shape, a file outside the uploads is not read, and the answer is the
    same whether it is an image, a text file, a folder or nothing at all."""
    replies = {kind: server.call(SHAPES[shape](server, target)) for kind, target in outside.items()}
    for kind, reply in replies.items():
        assert reply[0] in ("complete", "error"), (kind, reply)
        if reply[0] == "complete":  # the page's own refusal (Gradio refuses some shapes itself: an error event)
            refused(reply)
    assert len({json.dumps(answer(r)) for r in replies.values()}) == 1, replies  # no existence oracle


def test_uploads_and_examples_still_work(server):
    done(server.call({"path": server.upload(image_bytes()), "meta": META}))
    done(server.call({"path": server.upload(image_bytes(h=20, w=30))}))  # without meta, as before
    image_in = next(b for b in server.demo.blocks.values() if isinstance(b, gr.Image))
    example = next(p for p in image_in.temp_files if p.endswith("demo_scene.png"))  # what a click on it sends
    done(server.call({"path": example, "meta": META}, text="the sky\nthe roof of the red house"), 2)


def unblock(path: Path) -> None:
    """Release a reader stuck on the FIFO `path` (a page that blocked on it), so the test run can end."""
    for _ in range(50):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# Files a read would block on, or never finish reading: each must be answered at once.
BLOCKERS: dict[str, Callable[[Server], tuple[Any, Path | None]]] = {  # -> (the image value, a FIFO to release)
    "fifo-in-upload-folder": lambda s: ({"path": str(p := fifo(plant(s.uploads, "a.png")))}, p),
    "fifo-in-upload-folder-with-meta": lambda s: ({"path": str(p := fifo(plant(s.uploads, "a.png"))),
                                                   "meta": META}, p),
    "upload-swapped-for-fifo": lambda s: ({"path": (p := swapped(s, fifo))}, Path(p)),
    "upload-swapped-for-fifo-with-meta": lambda s: ({"path": (p := swapped(s, fifo)), "meta": META}, Path(p)),
    "upload-swapped-for-folder": lambda s: ({"path": swapped(s, os.mkdir)}, None),
    "dev-zero": lambda s: ({"path": "/dev/zero"}, None),
    "dev-urandom": lambda s: ({"path": "/dev/urandom"}, None),
    "dev-stdin": lambda s: ({"path": "/dev/stdin"}, None),
    "proc-self-fd-0": lambda s: ("/proc/self/fd/0", None),
}


@pytest.mark.parametrize("name", sorted(BLOCKERS))
def test_pipes_and_devices_never_block_the_page(server, name):
    image, pipe = BLOCKERS[name](server)
    try:
        t0 = time.monotonic()
        reply = server.call(image)
        assert reply[0] != "timeout", f"the page blocked on {image}"
        assert time.monotonic() - t0 < CALL_LIMIT_S
        if reply[0] == "complete":
            refused(reply)
        done(server.call({"path": server.upload(image_bytes())}))  # the worker is free: the next user is served
    finally:
        if pipe is not None:
            unblock(pipe)


def in_thread(fn: Callable[[], Any], limit_s: float = CALL_LIMIT_S) -> Any:
    """fn() in a daemon thread -> its result; a test failure if it has not returned within limit_s."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    worker.start()
    worker.join(limit_s)
    assert result, f"still running after {limit_s:.0f} s (blocked on a read)"
    return result[0]


@pytest.mark.parametrize("name", ["fifo", "dev-zero", "dev-null", "folder", "fifo-behind-symlink"])
def test_direct_call_never_blocks(server, tmp_path, name):
    """A direct Python call (no web request) may name any path, and still reads regular files only."""
    pipe = fifo(tmp_path / "pipe.png")
    if name == "fifo-behind-symlink":
        (tmp_path / "link.png").symlink_to(pipe)
    (tmp_path / "folder.png").mkdir()
    path = {"fifo": str(pipe), "dev-zero": "/dev/zero", "dev-null": "/dev/null", "folder": str(tmp_path / "folder.png"),
            "fifo-behind-symlink": str(tmp_path / "link.png")}[name]
    try:
        result = in_thread(lambda: server.handler(path, TEXT, 0.5, None, None, None))
    finally:
        unblock(pipe)
    from unilseg.demo.app import REFUSED_FILE

    assert result[3] == f"**Problem:** {REFUSED_FILE}" and result[1] is None


BAD_THRESHOLDS = {"nan": float("nan"), "inf": float("inf"), "minus-inf": float("-inf"), "minus-5": -5, "1e308": 1e308,
                  "zero": 0, "one": 1, "1.0000001": 1.0000001, "text": "half", "none": None, "true": True,
                  "list": [0.5], "dict": {"value": 0.5}}


@pytest.fixture(scope="module")
def upload(server) -> dict:
    return {"path": server.upload(image_bytes()), "meta": META}


@pytest.mark.parametrize("name", sorted(BAD_THRESHOLDS))
def test_threshold_checked_like_the_cli(server, upload, name):
    reply = server.call(upload, threshold=BAD_THRESHOLDS[name])
    text = status(reply)
    assert text.startswith("**Problem:** The threshold must"), text
    assert "between 0 and 1" in text and "Traceback" not in text and reply[1][1] is None


@pytest.mark.parametrize("threshold", [0.01, 0.99, "0.5"])
def test_threshold_in_range_accepted(server, upload, threshold):
    reply = server.call(upload, threshold=threshold)
    done(reply)
    assert f"threshold {float(threshold):.2f}" in status(reply)


BAD_MIN_SCORES = {"nan": float("nan"), "inf": float("inf"), "minus-0.1": -0.1, "1.0000001": 1.0000001, "text": "half",
                  "true": True, "list": [0.5], "dict": {"value": 0.5}}


@pytest.mark.parametrize("name", sorted(BAD_MIN_SCORES))
def test_min_score_checked_like_the_cli(server, upload, name):
    reply = server.call(upload, min_score=BAD_MIN_SCORES[name])
    text = status(reply)
    assert text.startswith("**Problem:** The minimum presence must be a number from 0"), text
    assert "Traceback" not in text and reply[1][1] is None


@pytest.mark.parametrize("min_score", [0, 0.5, "1", None])
def test_min_score_in_range_accepted(server, upload, min_score):
    reply = server.call(upload, min_score=min_score)
    done(reply)
    from unilseg.model.config import load_config
    from unilseg.model.spec import effective_min_score

    model_min = load_config("unilseg-demo")["test"].get("min_score")  # the shipped demo's: 0.8
    in_force = effective_min_score(model_min, None if min_score is None else float(min_score))
    assert ("min presence" in status(reply)) is (in_force is not None)  # 0: off; None: the model's


ODD_FIELDS = {  # (instructions, precision) -> what the message says
    "text-a-number": (123, None, "The instructions must be text"),
    "text-a-list": (["the sky"], None, "The instructions must be text"),
    "text-a-dict": ({"the": "sky"}, None, "The instructions must be text"),
    "precision-a-number": (TEXT, 16, "The precision must be one of fp32"),
    "precision-a-list": (TEXT, ["fp32"], "The precision must be one of fp32"),
    "precision-unknown": (TEXT, "fp8", "precision 'fp8' is not offered here"),
}


@pytest.mark.parametrize("name", sorted(ODD_FIELDS))
def test_other_fields_checked(server, upload, name):
    text, precision, says = ODD_FIELDS[name]
    message = status(server.call(upload, text=text, precision=precision))
    assert message.startswith("**Problem:**") and says in message, message
    assert "went wrong on the server" not in message


def patched(data: bytearray, at: int, fmt: str, *values: int) -> bytes:
    data[at:at + struct.calcsize(fmt)] = struct.pack(fmt, *values)
    return bytes(data)


def jpeg_claiming(h: int, w: int) -> bytes:
    data = bytearray(image_bytes(".jpg"))
    return patched(data, data.find(b"\xff\xc0") + 5, ">HH", h, w)  # SOF0: height, width


def gif_claiming(h: int, w: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(buf, "GIF")
    return patched(bytearray(buf.getvalue()), 6, "<HH", w, h)  # the logical screen


# name -> (maker of the file in a folder, the megapixels the page must name; None: not sizable, not decoded)
HUGE: dict[str, tuple[Callable[[Path], Path], float | None]] = {
    "png-15000x15000": (lambda d: solid_png(d / "a.png", 15000, 15000), 225.0),  # the 1 MB upload
    "png-header-14000x14000": (lambda d: bomb_png(d / "a.png", 14000), 196.0),
    "png-header-10000x10000": (lambda d: bomb_png(d / "a.png", 10000), 100.0),  # PIL only warns at this size
    "png-header-7000x7000": (lambda d: bomb_png(d / "a.png", 7000), 49.0),
    "jpeg-header-16000x16000": (lambda d: (d / "a.jpg", (d / "a.jpg").write_bytes(jpeg_claiming(16000, 16000)))[0],
                                256.0),
    "gif-header-20000x20000": (lambda d: (d / "a.gif", (d / "a.gif").write_bytes(gif_claiming(20000, 20000)))[0],
                               400.0),
    "bmp-header-20000x20000": (lambda d: (d / "a.bmp", (d / "a.bmp").write_bytes(
        patched(bytearray(image_bytes(".bmp")), 18, "<ii", 20000, 20000)))[0], 400.0),
    "hdr-header-30000x30000": (lambda d: (d / "a.hdr", (d / "a.hdr").write_bytes(
        b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + b"\x02\x02\x75\x30" * 64))[0], None),
}


@pytest.fixture
def no_decoding(monkeypatch) -> list:
    """cv2.imdecode made to fail the test when called: the page must refuse from the header alone."""
    calls: list = []

    def imdecode(buf, flags):
        calls.append(len(buf))
        raise AssertionError("decoded an image the header already said was too large")

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    return calls


@pytest.mark.parametrize("name", sorted(HUGE))
def test_size_refused_from_the_header(server, tmp_path, no_decoding, name):
    make, megapixels = HUGE[name]
    message = server.handler(str(make(tmp_path)), TEXT, 0.5, None, None, None)[3]
    if megapixels is None:
        from unilseg.demo.app import UNDECODABLE

        assert message == f"**Problem:** {UNDECODABLE}"
    else:
        assert f"This image has {megapixels:.1f} megapixels" in message and "at most 40 megapixels" in message, message
    assert not no_decoding


def test_huge_upload_refused_before_decoding(server, tmp_path, no_decoding):
    """The issue's case through the API: a 15000 x 15000 PNG (250 kB here) is refused from its header."""
    upload = server.upload(solid_png(tmp_path / "big.png", 15000, 15000).read_bytes(), "big.png")
    message = status(server.call({"path": upload, "meta": META}))
    assert "225.0 megapixels" in message and not no_decoding


# The weights lookup: an unreadable place is skipped with one warning, then the next is tried.

def unreadable(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory the lookup cannot look into. 'no-permission' holds a junk weight file that must
    not be found; as root (whom mode 000 does not stop) stat() there fails with EACCES as it would."""
    if kind == "name-too-long":
        return tmp_path / ("x" * 300)
    if kind == "component-too-long":
        return tmp_path / ("y" * 256) / "cache"
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "unilseg-demo.safetensors").write_bytes(b"<html>not weights</html>")
    (locked / "unilseg").mkdir()
    (locked / "unilseg" / "unilseg-demo.safetensors").write_bytes(b"<html>not weights</html>")
    locked.chmod(0)
    if os.geteuid() == 0:
        real = Path.stat

        def stat(self, *args, **kwargs):
            if str(self).startswith(f"{locked}{os.sep}"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Path, "stat", stat)
    return locked


@pytest.fixture
def restore_modes(tmp_path):
    """Give 'locked' its mode back after the test, so that it can be cleaned up."""
    yield
    if (tmp_path / "locked").exists():
        (tmp_path / "locked").chmod(0o700)


def warning_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("kind", ["name-too-long", "component-too-long", "no-permission"])
@pytest.mark.parametrize("variable", ["UNILSEG_HOME", "XDG_CACHE_HOME"])
def test_unreadable_cache_falls_back_to_the_packaged_model(sandbox, monkeypatch, restore_modes, variable, kind):
    from fuzz.harness import MODEL

    place = unreadable(kind, sandbox.root, monkeypatch)
    monkeypatch.delenv("UNILSEG_HOME", raising=False)
    monkeypatch.setenv(variable, str(place))
    (sandbox.inp / "a.png").write_bytes(image_bytes())
    sp = sandbox.out / "mask.png"
    outcome = sandbox.run([*MODEL, "--img", str(sandbox.inp / "a.png"), "--exp", TEXT, "--sp", str(sp)], 0)
    lines = warning_lines(outcome.err)
    assert len(lines) == 1, outcome.err
    assert ("$UNILSEG_HOME" if variable == "UNILSEG_HOME" else "user cache") in lines[0] and "next place" in lines[0]
    assert cv2.imread(str(sp), cv2.IMREAD_UNCHANGED).shape == (48, 64)


@pytest.mark.parametrize("kind", ["name-too-long", "component-too-long", "no-permission"])
def test_models_lists_past_an_unreadable_cache(sandbox, monkeypatch, restore_modes, kind):
    monkeypatch.setenv("UNILSEG_HOME", str(unreadable(kind, sandbox.root, monkeypatch)))
    outcome = sandbox.run(["models"], 0)
    assert len(warning_lines(outcome.err)) == 1, outcome.err
    assert "unilseg-demo   found in package" in outcome.out


@pytest.mark.parametrize("kind", ["name-too-long", "component-too-long", "no-permission"])
def test_demo_loads_past_an_unreadable_cache(sandbox, monkeypatch, restore_modes, kind):
    """`unilseg demo`'s model load and its models list: the packaged model, one warning for both."""
    from unilseg.cli.demo import get_parser, predictor_for
    from unilseg.demo.app import models_note

    monkeypatch.setenv("UNILSEG_HOME", str(unreadable(kind, sandbox.root, monkeypatch)))
    args = get_parser().parse_args(["--device", "cpu"])
    with pytest.warns(UserWarning, match="cannot look into") as caught:
        predictor = predictor_for(args)
        note = models_note(args.model, args.weights, args.config)
    assert len([w for w in caught if "cannot look into" in str(w.message)]) == 1
    predictor.set_image(cv2.imread(str(ROOT / "imgs" / "demo_scene.png")))
    assert predictor.predict(["the sky"])[0].mask.any()  # the packaged demo model, working
    assert "**unilseg-demo** (running)" in note


@pytest.mark.parametrize("kind", ["name-too-long", "no-permission"])
def test_missing_model_past_an_unreadable_cache(sandbox, monkeypatch, restore_modes, kind):
    """Weights found nowhere: still the one error naming the download command (exit 2), after the warning."""
    monkeypatch.setenv("UNILSEG_HOME", str(unreadable(kind, sandbox.root, monkeypatch)))
    (sandbox.inp / "a.png").write_bytes(image_bytes())
    outcome = sandbox.run(["--model", "unilseg-20", "--device", "cpu", "--img", str(sandbox.inp / "a.png"),
                           "--exp", TEXT, "--sp", str(sandbox.out / "m.png")], 2)
    assert len(warning_lines(outcome.err)) == 1
    assert "python -m unilseg download unilseg-20" in outcome.err
