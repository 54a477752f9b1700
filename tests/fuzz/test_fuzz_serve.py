"""Hostile requests to `unilseg serve`: each gets its 4xx and one JSON sentence, and the server serves on.

One server (the demo model, an API key, small limits) takes every case; after each, a valid
request must still be answered. Then Hypothesis throws random JSON fields at it: the answer
is always 200 or a 4xx `{"error": ...}`, never a 5xx, an HTML page or a trace.
"""
from __future__ import annotations

import base64
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import Server, example, json_body

pytestmark = pytest.mark.slow  # a real server process, and Hypothesis' requests to it

KEY = "fuzz-serve-key-0123456789abcdef"
MAX_BODY = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("key") / "key"
    key_file.write_text(KEY)
    with Server("--api-key-file", str(key_file), "--max-body-mb", "2", "--max-pixels", "1000000",
                "--max-instructions", "16", "--max-instruction-chars", "200") as s:
        s.client.headers["Authorization"] = f"Bearer {KEY}"
        yield s


def small_png(h: int = 48, w: int = 64) -> bytes:
    rng = np.random.default_rng(0)
    return cv2.imencode(".png", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))[1].tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def post_json(server: Server, fields: dict | list | str, **kw):
    return server.client.post("/v1/segment", content=json.dumps(fields, allow_nan=True),
                              headers={"content-type": "application/json", **kw.pop("headers", {})}, **kw)


def assert_refused(r, status: int, says: str = "") -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and "\n" not in body["error"]
    assert "Traceback" not in body["error"] and says in body["error"], body["error"]


def assert_still_serving(server: Server) -> None:
    r = server.client.post("/v1/segment", json=json_body(small_png(), ["the sky"]))
    assert r.status_code == 200 and r.json()["results"][0]["instruction"] == "the sky"


JSON_CASES = {
    "not JSON": ("{image:", 400, "not valid JSON"),
    "a JSON array": ([1, 2], 400, "must be an object"),
    "no image": ({"instructions": ["x"]}, 400, "image missing"),
    "image not a string": ({"image": [1, 2], "instructions": ["x"]}, 400, "image missing"),
    "image not base64": ({"image": "###", "instructions": ["x"]}, 400, "not valid base64"),
    "no instructions": ({"image": "AAAA"}, 400, "instructions missing"),
    "instructions a number": ({"instructions": 3}, 400, "non-empty list of strings"),
    "instructions of numbers": ({"instructions": [1]}, 400, "must be strings"),
    "an empty instruction": ({"instructions": ["  "]}, 400, "empty instruction"),
    "a lone surrogate": ({"instructions": ["\ud800"]}, 400, "an instruction"),
    "10,000 instructions": ({"instructions": ["the sky"] * 10_000}, 400, "10000 instructions: at most 16"),
    "a long instruction": ({"instructions": ["x" * 300_000]}, 400, "an instruction of 300000 characters"),
    "NaN threshold": ({"threshold": float("nan")}, 400, "threshold must lie strictly between 0 and 1"),
    "threshold above 1": ({"threshold": 1.5}, 400, "strictly between 0 and 1 (a probability), not 1.5"),
    "threshold 0 (everything)": ({"threshold": 0}, 400, "threshold must lie strictly between 0 and 1"),
    "threshold 1 (nothing)": ({"threshold": 1.0}, 400, "threshold must lie strictly between 0 and 1"),
    "threshold a string": ({"threshold": "high"}, 400, "threshold must be a number"),
    "threshold a boolean": ({"threshold": True}, 400, "threshold must be a number"),
    "NaN min_score": ({"min_score": float("nan")}, 400, "min_score must be a number from 0 (off) to 1"),
    "min_score above 1": ({"min_score": 1.5}, 400, "min_score must be a number from 0 (off) to 1, not 1.5"),
    "min_score negative": ({"min_score": -0.1}, 400, "min_score must be a number from 0 (off) to 1, not -0.1"),
    "min_score a string": ({"min_score": "high"}, 400, "min_score must be a number from 0 to 1, not 'high'"),
    "min_score a boolean": ({"min_score": True}, 400, "min_score must be a number from 0 to 1, not True"),
    "min_score a list": ({"min_score": [0.5]}, 400, "min_score must be a number from 0 to 1"),
    "unknown output": ({"outputs": ["jpeg"]}, 400, "unknown output 'jpeg'"),
    "outputs a number": ({"outputs": 5}, 400, "outputs must be a list"),
    "instances a string": ({"instances": "yes"}, 400, "instances must be true or false"),
    "min_area zero": ({"instances": True, "min_area": 0}, 400, "min_area must be at least 1"),
    "min_area a float": ({"instances": True, "min_area": 1.5}, 400, "min_area must be a whole number"),
    "unknown field": ({"mode": "fast"}, 400, "unknown field 'mode'"),
    "duplicate classes": ({"classes": True, "instructions": ["sky", "sky"]}, 400, "sky"),
    "instances with classes": ({"classes": True, "instances": True}, 400, "instances applies to masks"),
}


@pytest.mark.parametrize("case", JSON_CASES)
def test_malformed_json_fields(server, case):
    fields, status, says = JSON_CASES[case]
    if isinstance(fields, dict) and case not in ("no image", "image not a string", "image not base64",
                                                 "no instructions"):
        fields = {**json_body(small_png(), ["the sky"]), **fields}
    elif isinstance(fields, dict) and case == "no instructions":
        fields = {**fields, "image": base64.b64encode(small_png()).decode()}
    r = post_json(server, fields) if not isinstance(fields, str) else server.client.post(
        "/v1/segment", content=fields, headers={"content-type": "application/json"})
    assert_refused(r, status, says)
    assert_still_serving(server)


def image_cases() -> dict[str, tuple[bytes, int, str]]:
    png = example("demo_scene.png")
    jpg = cv2.imencode(".jpg", cv2.imread(str(__import__("serving").EXAMPLES / "demo_scene.png")))[1].tobytes()
    return {
        "not an image": (b"hello, this is text" * 10, 400, "not an image the server reads"),
        "empty image": (b"", 400, "the image is empty"),
        "truncated PNG": (png[: len(png) // 2], 400, "truncated or corrupt"),
        "truncated JPEG": (jpg[: len(jpg) // 2], 400, "truncated or corrupt"),
        "decompression bomb": (png_header_only(60_000, 60_000), 413, "pixels"),
        "over the pixel limit": (png_header_only(2000, 1000), 413, "2000x1000 pixels: at most 1000000"),
    }


@pytest.mark.parametrize("case", list(image_cases()))
@pytest.mark.parametrize("transport", ["json", "multipart"])
def test_bad_images(server, case, transport):
    data, status, says = image_cases()[case]
    if transport == "json":
        r = server.client.post("/v1/segment", json={"image": base64.b64encode(data).decode(),
                                                    "instructions": ["the sky"]})
    else:
        r = server.client.post("/v1/segment", files={"image": ("x.png", data, "image/png")},
                               data={"instructions": "the sky"})
    assert_refused(r, status, says)
    assert_still_serving(server)


def test_transport_errors(server):
    cases = [
        (dict(content=b"x", headers={"content-type": "text/plain"}), 415, "content type 'text/plain'"),
        (dict(content=b"x"), 415, "content type 'none'"),
        (dict(content=b"--zz\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=zz"}), 400,
         "multipart"),
        (dict(content=b"abc", headers={"content-type": "multipart/form-data"}), 400, "multipart"),
        (dict(files={"other": ("x.png", small_png(), "image/png")}, data={"instructions": "sky"}), 400,
         "image missing"),
        (dict(data={"image": "not a file", "instructions": "sky"}), 415, "x-www-form-urlencoded"),
        (dict(files={"image": (None, b"not a file"), "other": ("x.png", small_png(), "image/png")}), 400,
         "image missing"),
        (dict(files=[("image", ("x.png", small_png(), "image/png"))] * 6, data={"instructions": "sky"}), 400,
         "multipart body is malformed (Too many files"),
        (dict(files={"image": ("x.png", small_png(), "image/png"), "instructions": ("t.txt", b"sky", "text/plain")}),
         400, "instructions must be a text field"),
        (dict(files={"image": ("x.png", small_png(), "image/png")}, data={"instructions": "sky", "threshold": "x"}),
         400, "threshold must be a number"),
        (dict(files={"image": ("x.png", small_png(), "image/png")}, data={"instructions": "sky", "min_score": "2"}),
         400, "min_score must be a number from 0 (off) to 1, not 2"),
    ]
    for kwargs, status, says in cases:
        r = server.client.post("/v1/segment", **kwargs)
        assert says in r.text, (kwargs.keys(), r.text)
        assert_refused(r, status, says)
        assert_still_serving(server)


def test_a_body_over_the_limit_is_413_declared_or_streamed(server):
    big = {"image": base64.b64encode(b"\0" * (MAX_BODY + 10)).decode(), "instructions": ["x"]}
    assert_refused(post_json(server, big), 413, "at most 2097152")

    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = server.client.post("/v1/segment", content=chunks(), headers={"content-type": "application/json"})
    assert_refused(r, 413, "over 2097152 bytes")
    assert_still_serving(server)


def test_keys_missing_or_wrong_are_401(server):
    body = json_body(small_png(), ["the sky"])
    for auth in (None, "", "Bearer", "Bearer " + KEY[:-1], "Bearer " + KEY + "x", "Token " + KEY,
                 "Basic " + base64.b64encode(b"user:wrong").decode(), b"Basic \xff\xfe"):
        headers = {"Authorization": auth} if auth is not None else {}
        r = server.client.post("/v1/segment", json=body, headers=headers) if auth is not None else \
            __import__("httpx").post(server.url + "/v1/segment", json=body)
        assert_refused(r, 401, "a valid API key is required")
    assert_still_serving(server)


def test_wrong_routes_and_methods_answer_json(server):
    assert_refused(server.client.get("/v1/segment"), 405, "GET is not allowed")
    assert_refused(server.client.get("/nowhere"), 404, "no route /nowhere")
    assert_refused(server.client.post("/v1/models"), 405, "POST is not allowed")


values = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True), st.text(max_size=30),
                   st.lists(st.text(max_size=12), max_size=20), st.lists(st.integers(), max_size=3),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
FIELDS = ["instructions", "threshold", "min_score", "outputs", "instances", "min_area", "max_instances", "classes",
          "extra"]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(fields=st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
def test_random_fields_are_answered_or_refused_never_failed(server, fields):
    fields.setdefault("instructions", ["the sky"])
    r = post_json(server, {"image": base64.b64encode(small_png(24, 24)).decode(), **fields})
    assert r.status_code in (200, 400), (fields, r.status_code, r.text)
    if r.status_code == 400:
        assert_refused(r, 400)
    else:
        assert "results" in r.json() or "classes" in r.json()
