"""`unilseg serve` as Label Studio's ML backend (`unilseg.serve.label_studio`), up to a real Label Studio.

Offline: the labeling config's BrushLabels become instructions (or a task's text field
does), hostile configs are refused, image URLs off Label Studio are refused (another host
or port, file://, data:, ../ and symlink escapes from the local-files root), and bad
/predict bodies are one JSON sentence; in process (the demo model, no Label Studio), a task
field's lines and local-files images give the masks /v1/segment gives. Online: the session's Label Studio
(tests/label_studio_server.py) gets a project of `label_studio_config`, a local-files
storage and its tasks; a `unilseg serve` process is connected to it through Label Studio's
API (POST /api/ml), Label Studio is asked for predictions (the Data Manager action
retrieve_tasks_predictions), and the predictions read back from its API decode (the SDK's
brush decoder) to the very masks `unilseg segment` writes; a task whose image is on
another host gets an empty prediction and a logged warning. Headless Chromium then shows a
pre-annotated task; set UNILSEG_LS_SCREENSHOT_BACKEND=docs/img/label_studio_backend.png to keep
that screenshot.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_server import brush_regions_shown, chromium_path, log_in, sync_playwright
from serving import Server

from unilseg.batch.sinks.label_studio import label_studio_config
from unilseg.serve.label_studio import (
    Backend,
    Instruction,
    Source,
    Target,
    instructions_of,
    is_jwt,
    local_file,
    parse_config,
    read_local,
    resolve_image,
)
from unilseg.serve.schema import RequestError

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "unilseg" / "demo" / "examples"
LABELS = ["the sky", "all houses", "the blue car", "all the trees"]
LS = "http://127.0.0.1:8080"
READY_TIMEOUT_S = 180


def refused(call, *args, status: int = 400) -> str:
    with pytest.raises(RequestError) as e:
        call(*args)
    assert e.value.status == status
    return e.value.message


# ------------------------------------------------------------------ the labeling config -> instructions

def test_config_labels_are_the_instructions():
    (target,) = parse_config(label_studio_config(LABELS, from_name="brush", to_name="photo"))
    assert target == Target("brush", "photo", "image", tuple(LABELS))
    assert instructions_of(target, {"image": "/x.png"}, None) == [Instruction(t, t) for t in LABELS]
    two = parse_config('<View><Image name="a" value="$left"/><Image name="b" value="$right"/>'
                       '<BrushLabels name="la" toName="a"><Label value="car"/></BrushLabels>'
                       '<View><BrushLabels name="lb" toName="b"><Label value="sky"/><Label value="road"/>'
                       '</BrushLabels></View></View>')
    assert two == [Target("la", "a", "left", ("car",)), Target("lb", "b", "right", ("sky", "road"))]


def test_text_field_lines_are_the_instructions():
    (one,) = parse_config(label_studio_config(["car"]))
    (many,) = parse_config(label_studio_config(["car", "sky"]))
    data = {"prompts": "car: the red car on the left\n\n  the blue car \nsky:the sky\n"}
    assert instructions_of(many, data, "prompts") == [Instruction("car", "the red car on the left"),
                                                      Instruction("the blue car", "the blue car"),
                                                      Instruction("sky", "the sky")]
    # a bare instruction takes the control's only label
    assert instructions_of(one, {"prompts": "the blue car"}, "prompts") == [Instruction("car", "the blue car")]
    assert "no text field 'prompts'" in refused(instructions_of, one, {}, "prompts")
    assert "holds no instruction" in refused(instructions_of, one, {"prompts": "\n \n"}, "prompts")
    assert "both a label and an instruction" in refused(instructions_of, one, {"prompts": "car:"}, "prompts")
    (bare,) = parse_config('<View><Image name="i" value="$image"/><BrushLabels name="l" toName="i"/></View>')
    assert "has no Label" in refused(instructions_of, bare, {}, None)


@pytest.mark.parametrize(("xml", "words"), [
    ('<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><View>&b;</View>',
     "DOCTYPE or entities"),
    ('<!DOCTYPE View SYSTEM "file:///etc/passwd"><View/>', "DOCTYPE or entities"),
    ("<View><Image", "not well-formed XML"),
    ('<View><Image name="i" value="$image"/></View>', "no BrushLabels control"),
    ('<View><BrushLabels name="l" toName="i"><Label value="a"/></BrushLabels></View>', "no Image tag"),
    ('<View><Image name="i" value="http://x/a.png"/><BrushLabels name="l" toName="i"/></View>',
     "must name a task field"),
    ('<View><Image name="i" value="$image"/><BrushLabels toName="i"/></View>', "lacks its name or toName"),
    (42, "an XML string"),
])
def test_bad_configs_are_refused_in_one_sentence(xml, words):
    assert words in refused(parse_config, xml)


# ------------------------------------------------------------------ which image URLs are fetched

def test_only_label_studio_urls_are_fetched():
    assert resolve_image("/data/upload/1/x.png", LS, None) == Source(url=f"{LS}/data/upload/1/x.png")
    assert resolve_image(f"{LS}/data/upload/1/x.png", LS, None) == Source(url=f"{LS}/data/upload/1/x.png")
    assert resolve_image("http://127.0.0.1:80/a.png", "http://127.0.0.1/", None).url == "http://127.0.0.1:80/a.png"
    # without a local-files root, Label Studio serves its local files itself
    assert resolve_image("/data/local-files/?d=a/b.png", LS, None) == Source(url=f"{LS}/data/local-files/?d=a/b.png")
    for url in ("http://example.org/a.png", "http://127.0.0.1:8081/a.png", "https://127.0.0.1:8080/a.png",
                "http://localhost:8080/a.png", "//example.org/a.png", "http://127.0.0.1:8080@example.org/a.png",
                "file:///etc/passwd", "data:image/png;base64,iVBORw0KGgo=", "s3://bucket/a.png", "a.png",
                "ftp://127.0.0.1:8080/a.png"):
        assert refused(resolve_image, url, LS, None), url
    assert "not on Label Studio" in refused(resolve_image, "http://example.org/a.png", LS, None)
    assert "no --label-studio-url" in refused(resolve_image, "/data/upload/1/x.png", None, None)
    assert "no image URL" in refused(resolve_image, 3, LS, None)


def test_local_files_stay_inside_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub dir").mkdir(parents=True)
    outside.mkdir()
    (root / "sub dir" / "a b.png").write_bytes(b"inside")
    (outside / "secret.png").write_bytes(b"secret")
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "linked").symlink_to(outside)
    (root / "alias.png").symlink_to(root / "sub dir" / "a b.png")
    os.mkfifo(root / "pipe.png")

    # ?d= is URL-decoded, as Label Studio writes it
    source = resolve_image("/data/local-files/?d=sub%20dir/a%20b.png", LS, str(root))
    assert source == Source(path=str(root / "sub dir" / "a b.png"))
    assert read_local(source.path, 100) == b"inside"
    assert resolve_image(f"{LS}/data/local-files/?d=alias.png", LS, str(root)).path == source.path
    backend = Backend(url=None, local_files_root=str(root))  # no Label Studio URL needed for local files
    assert backend.read_image("/data/local-files/?d=sub%20dir/a%20b.png", 100) == b"inside"
    for rel in ("../outside/secret.png", "sub%20dir/../../outside/secret.png", "escape.png", "linked/secret.png",
                "%2E%2E/outside/secret.png", "sub%20dir/%2e%2e/%2e%2e/outside/secret.png", ""):
        with pytest.raises(RequestError) as e:
            resolve_image(f"/data/local-files/?d={rel}", LS, str(root))
        assert e.value.status in (400, 403), rel
    # an absolute ?d= is still under the root (as Label Studio reads it: relative to its document root)
    assert resolve_image("/data/local-files/?d=/etc/passwd", LS, str(root)).path == str(root / "etc" / "passwd")
    assert "outside the local-files root" in refused(local_file, "../outside/secret.png", str(root), status=403)
    assert "not a regular file" in refused(read_local, local_file("sub dir", str(root)), 100, status=403)
    assert "not a regular file" in refused(read_local, local_file("pipe.png", str(root)), 100, status=403)
    assert "at most 3" in refused(read_local, source.path, 3, status=413)
    assert refused(read_local, str(root / "missing.png"), 100, status=404)
    # a local-files URL of another host is not the root's
    assert "not on Label Studio" in refused(resolve_image, "http://example.org/data/local-files/?d=sub%20dir/a%20b.png",
                                            LS, str(root))


def test_key_kinds():
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    pat = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'token_type': 'refresh', 'exp': 4102444800})}.c2ln"
    assert is_jwt(pat)
    assert not is_jwt("0123456789abcdef0123456789abcdef01234567") and not is_jwt("a.b.c") and not is_jwt("..")


# ------------------------------------------------------------------ the protocol, in process (no model needed)

def test_protocol_refusals_are_one_json_sentence():
    from fastapi.testclient import TestClient

    from unilseg.serve.app import Service, create_app

    service = Service(label_studio=Backend(url=LS), model={"name": "unilseg-demo", "version": "9.9"})
    client = TestClient(create_app(service))
    config = label_studio_config(LABELS)
    assert client.get("/health").json()["status"] == "UP"
    assert client.post("/setup", json={"project": "1.1", "schema": config}).json() == {
        "model_version": "unilseg-demo@9.9"}
    assert client.get("/versions").json()["versions"] == ["unilseg-demo@9.9"]
    assert client.post("/validate", json={"config": config}).json()["status"] == "ok"
    assert client.post("/webhook", json={"action": "ANNOTATION_CREATED"}).status_code == 200
    for body, status, words in (
            (b"{not json", 400, "not valid JSON"), (b"[]", 400, "JSON object"),
            (json.dumps({"tasks": []}), 400, "non-empty list"), (json.dumps({"tasks": {"data": {}}}), 400,
                                                                 "non-empty list"),
            (json.dumps({"tasks": [{"data": {"image": "/x.png"}}], "label_config": "<View"}), 400, "well-formed"),
            (json.dumps({"tasks": [{"data": {"image": "/x.png"}}]}), 400, "label_config"),
            # every task refused: the first reason
            (json.dumps({"tasks": [{"id": 1, "data": {"image": "http://example.org/a.png"}},
                                   {"id": 2, "data": {"image": "file:///etc/passwd"}}], "label_config": config}),
             400, "'http://example.org/a.png' is not on Label Studio"),
            (json.dumps({"tasks": ["a task"], "label_config": config}), 400, "must be an object")):
        r = client.post("/predict", content=body)
        assert r.status_code == status and set(r.json()) == {"error"} and words in r.json()["error"], r.text
    r = client.post("/setup", json={"schema": '<View><Image name="i" value="$image"/></View>'})
    assert r.status_code == 400 and "no BrushLabels" in r.json()["error"]
    assert client.post("/train", json={}).status_code == 400


def test_text_field_and_local_files_in_process(tmp_path, caplog):
    """/predict with instructions from a task field and images from the local-files root: each labelled mask is
    the one /v1/segment gives for its instruction on the same service; failing tasks are empty and logged."""
    from fastapi.testclient import TestClient
    from torchthreads import torch_threads

    from unilseg.batch.sinks.label_studio import brush_mask
    from unilseg.inference import load_predictor
    from unilseg.io.writers import rle_decode
    from unilseg.serve.app import Service, create_app
    from unilseg.serve.server import attach

    (tmp_path / "documents" / "a").mkdir(parents=True)
    shutil.copyfile(EXAMPLES / "demo_scene_2.png", tmp_path / "documents" / "a" / "scene.png")
    prompts = "car: the blue car\nsky: the sky\nall the trees\n"
    expected = [("car", "the blue car"), ("sky", "the sky"), ("all the trees", "all the trees")]
    image = "/data/local-files/?d=a/scene.png"
    tasks = [{"id": 1, "data": {"image": image, "prompts": prompts}},
             {"id": 2, "data": {"image": "/data/local-files/?d=../outside.png", "prompts": prompts}},
             {"id": 3, "data": {"image": image}}]
    with torch_threads(1):
        service = Service(label_studio=Backend(local_files_root=str(tmp_path / "documents"), text_field="prompts"))
        batcher = attach(service, load_predictor("unilseg-demo", device="cpu"), "unilseg-demo", "torch", 4, 0.01, 32)
        try:
            client = TestClient(create_app(service))
            r = client.post("/predict", json={"tasks": tasks, "label_config": label_studio_config(["car", "sky"]),
                                              "project": "1.1", "params": {}})
            assert r.status_code == 200, r.text
            first, escaped, no_prompts = r.json()["results"]
            b64 = base64.b64encode((tmp_path / "documents" / "a" / "scene.png").read_bytes()).decode()
            answer = client.post("/v1/segment", json={"image": b64, "instructions": [t for _, t in expected]}).json()
        finally:
            batcher.close()
    assert escaped["result"] == [] == no_prompts["result"] and escaped["score"] == 0.0
    assert first["model_version"] == model_version_of(service)
    wanted = [(label, row) for (label, _), row in zip(expected, answer["results"]) if row["area"]]
    assert len(wanted) >= 2
    assert [r["value"]["brushlabels"] for r in first["result"]] == [[label] for label, _ in wanted]
    for res, (_, row) in zip(first["result"], wanted):
        h, w = row["rle"]["size"]
        assert np.array_equal(brush_mask(res["value"]["rle"], h, w), rle_decode(row["rle"]))
        assert res["score"] == row["presence"]
    assert first["score"] == pytest.approx(sum(row["presence"] for _, row in wanted) / len(wanted), abs=1e-6)
    warnings = [rec.getMessage() for rec in caplog.records if rec.name == "unilseg.serve.label_studio"]
    assert len(warnings) == 2 and "task 2" in warnings[0] and "outside the local-files root" in warnings[0]
    assert "task 3" in warnings[1] and "no text field 'prompts'" in warnings[1]


def model_version_of(service) -> str:
    from unilseg import __version__

    assert service.model["version"] == __version__
    return f"unilseg-demo@{__version__}"


# ------------------------------------------------------------------ a real Label Studio asks unilseg serve

@pytest.fixture(scope="module")
def images(ls_documents) -> dict[str, Path]:
    """The tasks' images in the document root's `backend/` folder: two examples, one cropped (not square)."""
    folder = ls_documents / "backend"
    folder.mkdir(exist_ok=True)
    first = folder / "scene 1.png"
    shutil.copyfile(EXAMPLES / "demo_scene.png", first)
    cropped = folder / "scene 2 crop.png"
    cv2.imwrite(str(cropped), cv2.imread(str(EXAMPLES / "demo_scene_2.png"))[10:160, 0:180])
    return {p.name: p for p in (first, cropped)}


@pytest.fixture(scope="module")
def cli_masks(images, tmp_path_factory) -> dict[tuple[str, str], tuple[np.ndarray, float]]:
    """(image name, label) -> (mask, presence score) of `unilseg segment --exp LABEL` (the PNG it writes)."""
    out = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "unilseg", "segment", "--model", "unilseg-demo", "--device", "cpu", "--threads", "1",
           "--img", *map(str, images.values()), "--sp", str(out)]
    for label in LABELS:
        cmd += ["--exp", label]
    subprocess.run(cmd, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {(Path(r["image"]).name, r["expression"]):
            (cv2.imread(r["output"], cv2.IMREAD_UNCHANGED) > 0, r["presence"]) for r in rows}


@pytest.fixture(scope="module")
def predicted(label_studio, images, tmp_path_factory):
    """(client, project id, {image name or 'elsewhere': task id}, serve process) once Label Studio has
    fetched the backend's predictions for every task of a project."""
    from label_studio_sdk.client import LabelStudio

    url, token = label_studio
    key = tmp_path_factory.mktemp("keys") / "ls.key"
    key.write_text(token + "\n")
    with Server("--label-studio-url", url, "--label-studio-api-key-file", str(key)) as server:
        client = LabelStudio(base_url=url, api_key=token)
        proj = client.projects.create(title="unilseg ML backend", label_config=label_studio_config(LABELS))
        folder = next(iter(images.values())).parent
        client.import_storage.local.create(project=proj.id, path=str(folder), use_blob_urls=True, title="backend")
        tasks = [{"data": {"image": f"/data/local-files/?d=backend/{name.replace(' ', '%20')}"}} for name in images]
        tasks.append({"data": {"image": "http://example.org/elsewhere.png"}})  # refused: not Label Studio's
        client.projects.import_tasks(proj.id, request=tasks)
        backend = client.ml.create(url=server.url, project=proj.id, is_interactive=False, title="unilseg")
        assert backend.state == "CO", backend  # connected: /health and /setup answered
        client.actions.create(id="retrieve_tasks_predictions", project=proj.id,
                              selected_items={"all": True, "excluded": []})
        ids = {}
        for task in client.tasks.list(project=proj.id):
            ref = task.data["image"]
            ids["elsewhere" if ref.startswith("http://example.org") else ref.rsplit("/", 1)[1].replace("%20", " ")] = (
                task.id)
        yield client, proj.id, ids, server


@pytest.mark.slow
def test_label_studio_gets_the_clis_masks(predicted, images, cli_masks):
    from unilseg.batch.sinks.label_studio import brush_mask

    client, pid, ids, server = predicted
    assert set(ids) == {*images, "elsewhere"}
    found = 0
    for name, path in images.items():
        (pred,) = client.predictions.list(task=ids[name])
        assert pred.model_version.startswith("unilseg-demo@")
        h, w = cv2.imread(str(path)).shape[:2]
        by_label = {}
        for r in pred.result:
            assert (r["type"], r["from_name"], r["to_name"]) == ("brushlabels", "label", "image")
            assert (r["original_height"], r["original_width"]) == (h, w)
            (label,) = r["value"]["brushlabels"]
            by_label[label] = (brush_mask(r["value"]["rle"], h, w), r["score"])
        for label in LABELS:
            mask, score = cli_masks[name, label]
            if not mask.any():
                assert label not in by_label  # nothing found, no region
                continue
            found += 1
            got, got_score = by_label[label]
            assert np.array_equal(got, mask), (name, label)
            assert got_score == pytest.approx(score, abs=2e-6)
        scores = [s for _, s in by_label.values()]
        assert pred.score == pytest.approx(sum(scores) / len(scores), abs=1e-6)
    assert found >= 4  # the demo model finds the sky, houses, a car, trees
    # the refused task: an empty prediction, and one line in the server's log saying why
    (empty,) = client.predictions.list(task=ids["elsewhere"])
    assert empty.result == [] and empty.score == 0.0
    warned = [line for line in server.lines if "no prediction" in line]
    assert len(warned) == 1 and "'http://example.org/elsewhere.png' is not on Label Studio" in warned[0]


@pytest.mark.slow
def test_labeling_page_shows_the_backend_prediction(predicted, label_studio, cli_masks, tmp_path):
    client, pid, ids, _ = predicted
    url, _ = label_studio
    # the task that shows most regions
    name = max(sorted(ids.keys() - {"elsewhere"}), key=lambda n: sum(cli_masks[n, label][0].any() for label in LABELS))
    regions = sum(cli_masks[name, label][0].any() for label in LABELS)
    assert regions >= 2
    client.projects.update(pid, model_version=client.predictions.list(task=ids[name])[0].model_version)
    shot = tmp_path / "label_studio_backend.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            log_in(page, url)
            page.goto(f"{url}/projects/{pid}/data?task={ids[name]}")
            brush_regions_shown(page, regions)
            texts = page.locator(".lsf-tree__node_type_brushregion").all_inner_texts()
            assert sorted(label for label in LABELS for t in texts if label in t) == sorted(
                label for label in LABELS if cli_masks[name, label][0].any())
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("UNILSEG_LS_SCREENSHOT_BACKEND"):  # 256 colours: the docs' copy stays small
        from PIL import Image

        with Image.open(shot) as im:
            im.convert("RGB").quantize(256).save(os.environ["UNILSEG_LS_SCREENSHOT_BACKEND"], optimize=True)


@pytest.mark.slow
def test_images_come_with_either_kind_of_key(predicted, label_studio, images):
    """The legacy token goes as `Token KEY`; a personal access token is exchanged at /api/token/refresh/ for an
    access token sent as `Bearer`. A wrong key, or none, is one sentence."""
    from label_studio_sdk.client import LabelStudio

    url, token = label_studio
    pat = LabelStudio(base_url=url, api_key=token).tokens.create().token
    assert is_jwt(pat) and not is_jwt(token)
    ref, expected = "/data/local-files/?d=backend/scene%201.png", images["scene 1.png"].read_bytes()
    for key in (token, pat):
        assert Backend(url=url, api_key=key).read_image(ref, 10_000_000) == expected
    assert "over 1000 bytes" in refused(Backend(url=url, api_key=token).read_image, ref, 1000, status=413)
    for key in (None, "0" * 40):
        assert "answered 401" in refused(Backend(url=url, api_key=key).read_image, ref, 10_000_000)
    wrong = pat[:-4] + ("AAAA" if not pat.endswith("AAAA") else "BBBB")
    assert "refused the personal access token" in refused(Backend(url=url, api_key=wrong).read_image, ref,
                                                          10_000_000, status=502)
