"""Label Studio tasks (`unilseg.batch.sinks.label_studio`) and the labeling config, up to a real server.

`unilseg segment --model unilseg-demo --classes ... --instances --label-studio` runs over
generated scenes. Offline: every brush RLE decodes (label-studio-sdk's decoder) to the mask
of its annotation and to a piece of the label map on disk, and the file is
byte-deterministic. Online: the session's real Label Studio (tests/label_studio_server.py, shared with
tests/test_serve_label_studio.py); the SDK creates a project from `label_studio_config`, a
local-files storage for the images, imports the tasks, and the predictions read back from
the API decode to the same masks; headless Chromium opens a task's labeling page and finds
the image and the prediction regions. Without the server the online tests fail under CI
(env CI set) and are skipped elsewhere.

Set UNILSEG_LS_SCREENSHOT=docs/img/label_studio_page.png to also write the docs' screenshot.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from label_studio_server import brush_regions_shown, chromium_path, log_in, sync_playwright

from unilseg.data.synthetic import SEMANTIC_INSTRUCTIONS

CLASSES = ["house", "tree", "car", "sky"]
SCENES = 3
SCENE_SEED = 7


def sdk_brush():
    """label-studio-sdk's brush converter, or a failure saying how to install it (`.ci/run` installs it)."""
    try:
        from label_studio_sdk.converter import brush
    except ImportError:
        pytest.fail("the Label Studio tests need label-studio-sdk: pip install 'unilseg[label-studio]' "
                    "(scripts/install.sh installs it)", pytrace=False)
    return brush


def render_scenes(directory: Path) -> list[tuple[Path, np.ndarray]]:
    """SCENES generated scenes written as PNGs (names with a space: data.image must be URL-quoted)."""
    from unilseg.data.synthetic import make_sample

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(SCENES):
        rgb = make_sample(SCENE_SEED, i).image
        path = directory / f"scene {i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        out.append((path, rgb))
    return out


def segment(images: Path, out: Path, documents: Path, *extra: str) -> int:
    """`unilseg segment` of CLASSES (label maps, instances) over a folder, writing Label Studio tasks."""
    from unilseg.__main__ import main

    classes = ",".join(f"{c}: {SEMANTIC_INSTRUCTIONS[c]}" for c in CLASSES)
    return main(["segment", "--model", "unilseg-demo", "--device", "cpu", "--threads", "2", "--img", str(images),
                 "--classes", classes, "--sp", str(out / "maps"), "--instances", "--label-studio",
                 str(out / "tasks.json"), "--image-root", str(documents), "--ls-image-root", "/data/local-files/?d=",
                 *extra])


def read_records(log: Path) -> list[dict]:
    """The annotation log's records in plan order (one per item in a run never resumed)."""
    return sorted((json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()), key=lambda r: r["index"])


def results_by_image(tasks: list[dict]) -> dict[str, list[dict]]:
    return {t["data"]["image"]: t["predictions"][0]["result"] for t in tasks}


# ------------------------------------------------------------------ the labeling config and its command

def test_config_has_one_coloured_label_per_class():
    from unilseg.batch.sinks.label_studio import label_studio_config

    classes = ["car", 'a "quoted" <b> & c', "l'arbre"]
    root = ET.fromstring(label_studio_config(classes, from_name="brush", to_name="img"))
    image, brush = root.find("Image"), root.find("BrushLabels")
    assert (image.get("name"), image.get("value")) == ("img", "$image")
    assert (brush.get("name"), brush.get("toName")) == ("brush", "img")
    labels = brush.findall("Label")
    assert [lab.get("value") for lab in labels] == classes
    colours = [lab.get("background") for lab in labels]
    assert len(set(colours)) == len(classes) and all(len(c) == 7 and c[0] == "#" for c in colours)


def test_config_command(capsys, tmp_path):
    from unilseg.__main__ import main

    assert main(["label-studio-config", "--classes", "sky,car: all the cars"]) == 0
    labels = ET.fromstring(capsys.readouterr().out).find("BrushLabels").findall("Label")
    assert [lab.get("value") for lab in labels] == ["sky", "car"]

    classes = tmp_path / "classes.txt"
    classes.write_text("# labels\nthe man in red\n\nhouse: all houses\n", encoding="utf-8")
    assert main(["label-studio-config", "--classes-file", str(classes), "--from-name", "mask"]) == 0
    root = ET.fromstring(capsys.readouterr().out)
    assert root.find("BrushLabels").get("name") == "mask"
    assert [lab.get("value") for lab in root.iter("Label")] == ["the man in red", "house"]

    assert main(["label-studio-config"]) == 2
    assert capsys.readouterr().err.strip() == "error: give the labels: --classes A,B,... or --classes-file FILE"
    assert main(["label-studio-config", "--classes", "a", "--classes-file", str(classes)]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["label-studio-config", "--classes", "a,a"]) == 2
    assert "given twice" in capsys.readouterr().err


def test_sink_without_sdk_says_how_to_install(monkeypatch, tmp_path):
    from unilseg.batch.sinks.label_studio import LabelStudioSink
    from unilseg.errors import UnilsegError

    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # what an environment without the SDK imports
    hint = r"^--label-studio needs label-studio-sdk: pip install 'unilseg\[label-studio\]'$"
    with pytest.raises(UnilsegError, match=hint):
        LabelStudioSink(tmp_path / "tasks.json")


# ------------------------------------------------------------------ the tasks file, offline

@pytest.fixture(scope="session")
def documents(ls_documents) -> Path:
    """Label Studio's local-files document root (the session's); the scenes are in its `scenes/` folder."""
    return ls_documents


@pytest.fixture(scope="session")
def scenes(documents):
    return render_scenes(documents / "scenes")


@pytest.fixture(scope="session")
def job(scenes, documents, tmp_path_factory):
    """(tasks.json, records, job folder) of `unilseg segment --label-studio` on the scenes, data.image relative to
    the document root."""
    out = tmp_path_factory.mktemp("ls-job")
    assert segment(documents / "scenes", out, documents) == 0
    return out / "tasks.json", read_records(out / "maps" / "annotations.jsonl"), out


@pytest.mark.slow  # its job: label maps and instances over the scenes
def test_tasks_decode_to_the_masks(job, documents):
    from PIL import Image

    from unilseg.io.writers import rle_decode

    brush = sdk_brush()
    tasks_path, records, out = job
    tasks = json.loads(tasks_path.read_bytes())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=scenes/scene%20{i}.png"
                                                   for i in range(SCENES)]
    assert sum(len(r["annotations"]) for r in records) >= SCENES  # the demo model finds things (the sky at least)
    ids = set()
    for task, rec in zip(tasks, records):
        (pred,) = task["predictions"]
        assert pred["model_version"] == "unilseg-demo"
        assert len(pred["result"]) == len(rec["annotations"])
        union = {c: np.zeros((rec["height"], rec["width"]), bool) for c in CLASSES}
        for res, ann in zip(pred["result"], rec["annotations"]):
            assert (res["type"], res["from_name"], res["to_name"], res["image_rotation"]) == (
                "brushlabels", "label", "image", 0)
            assert (res["original_height"], res["original_width"]) == (rec["height"], rec["width"])
            assert res["value"]["brushlabels"] == [ann["category"]] and res["value"]["format"] == "rle"
            assert res["score"] == ann["score"]
            rgba = brush.decode_rle(bytes(res["value"]["rle"])).reshape(rec["height"], rec["width"], 4)
            mask = rle_decode(ann["rle"])
            assert np.array_equal(rgba[..., 3] > 0, mask)
            assert set(np.unique(rgba)) <= {0, 255} and (rgba == rgba[..., :1]).all()  # 0/255 in all four channels
            union[ann["category"]] |= mask
            ids.add(res["id"])
        scores = [a["score"] for a in rec["annotations"]]
        assert pred["score"] == pytest.approx(sum(scores) / len(scores) if scores else 0.0, abs=1e-6)
        # the regions are the label map's: each 8-connected piece of a class is a region, or under --min-area (16)
        labels = np.array(Image.open(rec["key"]))
        for k, name in enumerate(CLASSES, start=1):
            n, pieces, stats, _ = cv2.connectedComponentsWithStats((labels == k).astype(np.uint8), connectivity=8)
            for j in range(1, n):
                inside = union[name][pieces == j]
                assert inside.all() or (not inside.any() and stats[j, cv2.CC_STAT_AREA] < 16)
            assert not (union[name] & (labels != k)).any()
    assert len(ids) == sum(len(r["annotations"]) for r in records)  # region ids are unique

    # written again from the log (a resumed job with nothing left to do): the same bytes
    first = tasks_path.read_bytes()
    tasks_path.unlink()
    assert segment(documents / "scenes", out, documents, "--skip-existing") == 0
    assert tasks_path.read_bytes() == first


def test_sink_writes_one_task_per_image(tmp_path):
    """Two images (one with nothing found), one of them asked twice: one task each, in plan order, the same
    bytes every time; region ids depend on the image and the region's place, not on the output paths."""
    from unilseg.batch.plan import Item
    from unilseg.batch.sinks import AnnotateOptions, AnnotationLog, Catalog, make_record
    from unilseg.batch.sinks.label_studio import LabelStudioSink, brush_mask

    disc = cv2.circle(np.zeros((30, 40), np.uint8), (12, 14), 8, 1, -1).astype(bool)
    bars = np.zeros((30, 40), bool)
    bars[2:6, 25:39] = bars[20:28, 30:33] = True
    plan = [("a.png", "car", disc), ("a.png", "road", bars), ("b.png", "car", np.zeros((30, 40), bool))]

    def write(out: Path) -> bytes:
        items = [Item(index=i, image=tmp_path / "images" / img, expression=exp, output=out / f"{i}.png")
                 for i, (img, exp, _) in enumerate(plan)]
        log = AnnotationLog(out / "annotations.jsonl", [LabelStudioSink(out / "tasks.json", tmp_path / "images",
                                                                       "https://example.org/data/", "m1")],
                            Catalog.of(items, ["car", "road"]))
        for item, (_, exp, mask) in reversed(list(zip(items, plan))):  # finished in another order than planned
            log.add(make_record(item, mask.shape, [(exp, mask, mask * 0.75 + 0.1)], AnnotateOptions(instances=True)))
        log.finish(items)
        return (out / "tasks.json").read_bytes()

    first = write(tmp_path / "one")
    assert write(tmp_path / "one") == first and write(tmp_path / "two") == first
    a, b = json.loads(first)
    assert (a["data"], b["data"]) == ({"image": "https://example.org/data/a.png"},
                                      {"image": "https://example.org/data/b.png"})
    assert b["predictions"] == [{"model_version": "m1", "score": 0.0, "result": []}]
    (pred,) = a["predictions"]
    assert [r["value"]["brushlabels"] for r in pred["result"]] == [["car"], ["road"], ["road"]]
    assert pred["score"] == pytest.approx(0.85) and all(r["score"] == pytest.approx(0.85) for r in pred["result"])
    assert len({r["id"] for r in pred["result"]}) == 3
    decoded = [brush_mask(r["value"]["rle"], 30, 40) for r in pred["result"]]
    assert np.array_equal(decoded[0], disc) and np.array_equal(decoded[1] | decoded[2], bars)
    assert not (decoded[1] & decoded[2]).any()


def test_image_urls(tmp_path):
    from unilseg.batch.sinks.label_studio import LabelStudioSink

    sink = LabelStudioSink(tmp_path / "t.json", image_root=tmp_path / "root", ls_image_root="https://cdn.example/x/")
    assert sink.image_url(str(tmp_path / "root" / "a b" / "c#1?.png")) == "https://cdn.example/x/a%20b/c%231%3F.png"
    assert sink.image_url(str(tmp_path / "root" / "été.jpg")) == "https://cdn.example/x/%C3%A9t%C3%A9.jpg"
    no_root = LabelStudioSink(tmp_path / "t.json")
    assert no_root.image_url("dir/x.png") == "/data/local-files/?d=dir/x.png"


# ------------------------------------------------------------------ a real Label Studio server

@pytest.fixture(scope="session")
def server(label_studio):
    """(base URL, API token) of the session's Label Studio (tests/conftest.py)."""
    return label_studio


@pytest.fixture(scope="session")
def project(server, job, documents):
    """(client, project id, our tasks) after the SDK imported the tasks into a project of our config."""
    sdk_brush()
    from label_studio_sdk.client import LabelStudio

    from unilseg.batch.sinks.label_studio import label_studio_config

    url, token = server
    client = LabelStudio(base_url=url, api_key=token)
    proj = client.projects.create(title="unilseg pre-annotations", label_config=label_studio_config(CLASSES))
    # the storage grants access to the files under it (a sub-folder of the document root, as Label Studio asks)
    client.import_storage.local.create(project=proj.id, path=str(documents / "scenes"), use_blob_urls=True,
                                       title="scenes")
    tasks = json.loads(job[0].read_bytes())
    imported = client.projects.import_tasks(proj.id, request=tasks, return_task_ids=True)
    assert imported.task_count == len(tasks) and imported.prediction_count == len(tasks)
    # the page prelabels from these predictions
    client.projects.update(proj.id, model_version=tasks[0]["predictions"][0]["model_version"])
    return client, proj.id, tasks


@pytest.mark.slow
def test_server_predictions_decode_to_our_masks(project, server, job):
    from unilseg.io.writers import rle_decode

    brush = sdk_brush()
    client, pid, tasks = project
    ours = results_by_image(tasks)
    records = {f"/data/local-files/?d=scenes/{Path(r['image']).name.replace(' ', '%20')}": r for r in job[1]}
    served = list(client.tasks.list(project=pid))
    assert sorted(t.data["image"] for t in served) == sorted(ours)
    url, token = server
    for task in served:
        (pred,) = client.predictions.list(task=task.id)
        rec = records[task.data["image"]]
        assert pred.model_version == "unilseg-demo"
        assert [r["id"] for r in pred.result] == [r["id"] for r in ours[task.data["image"]]]
        assert [r["score"] for r in pred.result] == [a["score"] for a in rec["annotations"]]
        # the SDK's own decoder of brush results (it reads them flat: value's keys beside type and sizes)
        layers = brush.decode_from_annotation("label", [{**r, **r["value"]} for r in pred.result])
        assert len(layers) == len(rec["annotations"])
        seen: dict[str, int] = {}
        for ann in rec["annotations"]:
            k = seen[ann["category"]] = seen.get(ann["category"], -1) + 1
            assert np.array_equal(layers[f"label-{ann['category']}-{k}"] > 0, rle_decode(ann["rle"]))
        # and Label Studio serves the image itself at data.image
        request = urllib.request.Request(url + task.data["image"], headers={"Authorization": f"Token {token}"})
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.read() == Path(rec["image"]).read_bytes()


@pytest.mark.slow
def test_labeling_page_shows_the_predictions(project, server, tmp_path):
    client, pid, tasks = project
    url, _ = server
    served = {t.data["image"]: t.id for t in client.tasks.list(project=pid)}
    # the task that shows most: the most distinct categories, then the most regions
    image = max(served, key=lambda k: (len({r["value"]["brushlabels"][0] for r in results_by_image(tasks)[k]}),
                                       len(results_by_image(tasks)[k]), k))
    results = results_by_image(tasks)[image]
    assert results
    shot = tmp_path / "label_studio_page.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            log_in(page, url)
            page.goto(f"{url}/projects/{pid}/data?task={served[image]}")
            brush_regions_shown(page, len(results))
            regions = page.locator(".lsf-tree__node_type_brushregion")
            named = sorted(name for text in regions.all_inner_texts() for name in CLASSES if name in text.split())
            assert named == sorted(r["value"]["brushlabels"][0] for r in results)
            natural = page.evaluate("() => { const i = document.querySelector('img[alt=image]');"
                                    " return [i.naturalHeight, i.naturalWidth]; }")
            assert natural == [results[0]["original_height"], results[0]["original_width"]]
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    if os.environ.get("UNILSEG_LS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["UNILSEG_LS_SCREENSHOT"])
