"""`unilseg serve` over real HTTP: a server process on 127.0.0.1 (a free port), the demo model, httpx.

Masks are the CLI's (the PNG bytes `unilseg segment` writes; the RLE decoded by
pycocotools), concurrent requests share encoder batches (the server's own counters), a
repeated image is a cache hit, a full queue answers 503 with Retry-After, a slow request
504, and the API key refuses and admits. Bad input is tests/fuzz/test_fuzz_serve.py.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask
from serving import EXAMPLES, Server, example, json_body

SCENES = ("demo_scene.png", "demo_scene_2.png", "demo_scene_3.png")
TEXTS = ("the sky", "the blue car", "all the trees")
CLASSES = ("sky", "tree: all the trees", "house")


@pytest.fixture(scope="module")
def server():
    with Server("--batch-wait-ms", "300") as s:
        yield s


@pytest.fixture(scope="module")
def cli_masks(tmp_path_factory) -> dict[tuple[str, str], bytes]:
    """(scene, text) -> the PNG bytes `unilseg segment` writes for it (one torch thread, as the server)."""
    out = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "unilseg", "segment", "--model", "unilseg-demo", "--device", "cpu", "--threads", "1",
           "--img", *(str(EXAMPLES / s) for s in SCENES), "--sp", str(out)]
    for text in TEXTS:
        cmd += ["--exp", text]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(Path(r["image"]).name, r["expression"]): Path(r["output"]).read_bytes() for r in rows}


def png_mask(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) > 0


def rle_mask(rle: dict) -> np.ndarray:
    """pycocotools' decoding of an answer's COCO RLE."""
    with warnings.catch_warnings():  # pycocotools' NumPy-2 `copy=` DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def segment(server: Server, scene: str, texts: list[str], **fields) -> dict:
    r = server.client.post("/v1/segment", json=json_body(example(scene), texts, **fields))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_health_ready_models_and_openapi(server):
    assert server.client.get("/healthz").json() == {"status": "ok"}
    assert server.client.get("/readyz").json() == {"status": "ready"}
    model = server.client.get("/v1/models").json()["models"][0]
    assert model["name"] == "unilseg-demo" and model["runtime"] == "torch" and model["ready"] is True
    assert model["input_size"] == 192 and model["threshold"] == 0.35
    spec = server.client.get("/openapi.json").json()
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert {"/predict", "/setup", "/health", "/v1/models", "/readyz"} <= set(spec["paths"])


@pytest.mark.slow
@pytest.mark.parametrize("scene", SCENES)
def test_masks_are_the_clis_in_every_output_form(server, cli_masks, scene):
    answer = segment(server, scene, list(TEXTS), outputs=["rle", "png", "polygons"])
    h, w = cv2.imread(str(EXAMPLES / scene)).shape[:2]
    assert answer["image"] == {"height": h, "width": w}
    assert [r["instruction"] for r in answer["results"]] == list(TEXTS)
    for row in answer["results"]:
        png = base64.b64decode(row["png"])
        assert png == cli_masks[scene, row["instruction"]]  # the very file the CLI writes
        mask = png_mask(png)
        assert np.array_equal(rle_mask(row["rle"]), mask)
        assert row["area"] == int(mask.sum())
        if mask.any():
            ys, xs = np.nonzero(mask)
            assert row["bbox"] == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                   int(ys.max() - ys.min() + 1)]
            assert row["polygons"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in row["polygons"])
            assert 0.35 < row["score"] <= 1.0
        else:
            assert row["score"] == 0.0 and row["bbox"] == [0, 0, 0, 0] and row["polygons"] == []


@pytest.mark.slow
def test_multipart_upload_answers_as_json_does(server):
    files = {"image": ("scene.png", example("demo_scene_2.png"), "image/png")}
    data = {"instructions": ["the sky", "the blue car"], "outputs": "rle,png"}
    r = server.client.post("/v1/segment", files=files, data=data)
    assert r.status_code == 200, r.text
    as_json = segment(server, "demo_scene_2.png", ["the sky", "the blue car"], outputs=["rle", "png"])
    strip = ("timings",)
    assert {k: v for k, v in r.json().items() if k not in strip} == {k: v for k, v in as_json.items()
                                                                    if k not in strip}


@pytest.mark.slow
def test_instances_partition_the_mask(server):
    answer = segment(server, "demo_scene_2.png", ["all the trees"], instances=True, min_area=1, outputs=["rle"])
    row = answer["results"][0]
    mask = rle_mask(row["rle"])
    parts = [rle_mask(i["rle"]) for i in row["instances"]]
    assert parts and row["instances_cut"] == 0
    assert np.array_equal(np.logical_or.reduce(parts), mask)
    assert sum(int(p.sum()) for p in parts) == int(mask.sum())  # disjoint
    assert [i["area"] for i in row["instances"]] == sorted((i["area"] for i in row["instances"]), reverse=True)


@pytest.mark.slow
def test_classes_give_the_clis_label_map(server, tmp_path):
    out = tmp_path / "labels.png"
    subprocess.run([sys.executable, "-m", "unilseg", "segment", "--model", "unilseg-demo", "--device", "cpu",
                    "--threads", "1", "--img", str(EXAMPLES / "demo_scene.png"), "--classes", ",".join(CLASSES),
                    "--sp", str(out)], check=True, capture_output=True)
    answer = segment(server, "demo_scene.png", list(CLASSES), classes=True, outputs=["rle"])
    assert base64.b64decode(answer["label_map"]) == out.read_bytes()
    labels = np.asarray(Image.open(out))  # palette indices
    for row in answer["classes"]:
        assert np.array_equal(rle_mask(row["rle"]), labels == row["index"])
    assert [r["name"] for r in answer["classes"]] == ["sky", "tree", "house"]


@pytest.mark.slow
def test_concurrent_requests_share_encoder_batches_and_each_gets_its_own_answer(server, cli_masks):
    before = server.client.get("/v1/stats").json()
    flipped = cv2.imencode(".png", cv2.flip(cv2.imread(str(EXAMPLES / "demo_scene.png")), 1))[1].tobytes()
    jobs = [(scene, example(scene), text) for scene, text in zip(SCENES, TEXTS)]
    jobs.append(("flipped", flipped, "the sky"))
    # new images for this server: a fresh copy of each (a trailing PNG chunk changes the bytes, not the pixels)
    jobs = [(scene, data + b"\0", text) for scene, data, text in jobs]

    def call(job):
        scene, data, text = job
        return server.client.post("/v1/segment", json=json_body(data, [text], outputs=["png"]))

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(call, jobs))
    after = server.client.get("/v1/stats").json()
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert after["images_encoded"] - before["images_encoded"] == len(jobs)
    assert after["encoder_calls"] - before["encoder_calls"] < len(jobs)  # several images per Swin batch
    assert max(a.json()["timings"]["batch_requests"] for a in answers) > 1
    for (scene, _, text), a in zip(jobs[:3], answers):
        assert base64.b64decode(a.json()["results"][0]["png"]) == cli_masks[scene, text]
    mirrored = png_mask(base64.b64decode(answers[3].json()["results"][0]["png"]))
    assert mirrored.any() and mirrored.shape == cv2.imread(str(EXAMPLES / "demo_scene.png")).shape[:2]


@pytest.mark.slow
def test_a_repeated_image_with_a_new_instruction_is_a_cache_hit(server):
    data = example("demo_scene_3.png") + b"\0\0"  # bytes no other test sent
    first = server.client.post("/v1/segment", json=json_body(data, ["the sky"])).json()
    before = server.client.get("/v1/stats").json()
    second = server.client.post("/v1/segment", json=json_body(data, ["the ground"])).json()
    after = server.client.get("/v1/stats").json()
    assert not first["timings"]["cache_hit"] and second["timings"]["cache_hit"]
    assert second["timings"]["encode_ms"] == 0.0
    assert after["cache_hits"] == before["cache_hits"] + 1
    assert after["encoder_calls"] == before["encoder_calls"] and after["images_encoded"] == before["images_encoded"]


@pytest.mark.slow
def test_a_full_queue_answers_503_with_retry_after_and_then_serves():
    texts = [f"the sky {i}" for i in range(24)]  # each request: 24 decoder passes
    with Server("--queue-size", "1", "--batch-images", "1", "--batch-wait-ms", "0") as s:
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: s.client.post("/v1/segment", json=json_body(
                example("demo_scene.png"), texts)), range(10)))
        codes = [a.status_code for a in answers]
        assert 503 in codes and 200 in codes, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["retry-after"].isdigit() and int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"].startswith("the server is busy")
        assert s.client.post("/v1/segment", json=json_body(example("demo_scene.png"), ["the sky"])).status_code == 200


@pytest.mark.slow
def test_a_request_past_the_timeout_answers_504_and_the_server_goes_on():
    with Server("--timeout", "0.05") as s:
        r = s.client.post("/v1/segment", json=json_body(example("demo_scene.png"), [f"t {i}" for i in range(40)]))
        assert r.status_code == 504 and "took over 0.05 s" in r.json()["error"]
        assert s.client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_the_api_key_refuses_and_admits(tmp_path):
    key = "k" * 8 + "-unilseg-test-key-" + "9" * 8
    (tmp_path / "key").write_text(key + "\n")
    with Server("--api-key-file", str(tmp_path / "key")) as s:
        body = json_body(example("demo_scene.png"), ["the sky"])
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {key}x"},
                        {"Authorization": key}, {"Authorization": "Basic !!"}):
            r = s.client.post("/v1/segment", json=body, headers=headers)
            assert r.status_code == 401 and r.json() == {"error": "a valid API key is required: send "
                                                                  "`Authorization: Bearer KEY`"}
            assert s.client.get("/v1/models", headers=headers).status_code == 401
        assert s.client.get("/healthz").status_code == 200 and s.client.get("/readyz").status_code == 200
        assert s.client.post("/v1/segment", json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        basic = base64.b64encode(f"labelstudio:{key}".encode()).decode()
        assert s.client.get("/v1/models", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def run_cli(*flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "unilseg", "serve", *flags], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flags, says", [
    (("--host", "0.0.0.0"), "--host 0.0.0.0 lets other machines in: give an API key"),
    (("--no-auth", "--port", "70000"), "--port 70000: a port is a number from 0 to 65535"),
    (("--queue-size", "0"), "--queue-size must be at least 1, not 0"),
    (("--timeout", "0"), "--timeout must be more than 0, not 0"),
    (("--api-key-file", "/nonexistent/key"), "--api-key-file /nonexistent/key: cannot read it"),
    (("--address", "auto"), "--address applies to --ray"),
    (("--threshold", "2"), "threshold"),
])
def test_bad_flags_are_one_line_before_anything_binds_or_loads(flags, says):
    r = run_cli(*flags, env={"UNILSEG_API_KEY": ""})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: ") and says in r.stderr, r.stderr


def test_a_short_key_or_a_key_with_no_auth_is_refused(tmp_path):
    (tmp_path / "key").write_text("short\n")
    r = run_cli("--api-key-file", str(tmp_path / "key"))
    assert r.returncode == 2 and "use at least 16" in r.stderr and r.stderr.count("\n") == 1
    r = run_cli("--no-auth", env={"UNILSEG_API_KEY": "x" * 32})
    assert r.returncode == 2 and "--no-auth and an API key" in r.stderr


def test_a_taken_port_is_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = run_cli("--port", str(taken.getsockname()[1]))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "the port is in use" in r.stderr, r.stderr


def test_a_model_that_cannot_load_stops_the_server_with_one_line(tmp_path):
    (tmp_path / "w.pth").write_bytes(b"not a checkpoint")
    r = run_cli("--weights", str(tmp_path / "w.pth"), "--port", "0", "--device", "cpu")
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: the model did not load: "), r.stderr
