"""--min-score / a request's min_score through every front end, on the shipped demo model.

Each test first runs with the min score off (0) and reads the presence scores the run reports, then
picks a cut S between two of them (`cut`: in the widest gap below which a non-empty mask lies)
and runs again with S: what scored below S comes back empty with present false, what scored
above is byte-equal to the run without it. Batch rows and masks, label maps (legend and
pixels), video frames, the demo page's handler, the COCO file, the HTTP API, and bad values.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT
from serving import Server, example, json_body
from test_labelmap import read_label_png
from torchthreads import torch_threads

from unilseg.__main__ import main

EXAMPLES = ROOT / "src" / "unilseg" / "demo" / "examples"
SCENES = ("demo_scene.png", "demo_scene_2.png", "demo_scene_3.png")
DEMO = ["--model", "unilseg-demo", "--device", "cpu"]
TEXTS = ["the red house", "the sky", "the tree on the left"]  # sure where present, everywhere, unsure (0.6-0.8)
OFF = ["--min-score", "0"]  # the runs to compare with: the demo model's own min score (0.8) off
CLASSES = "sky,car: the blue car,house: the red house,tree: the tree on the left"
MIN_GAP = 0.02  # a cut this far from every presence holds across CPUs' last-bit differences


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture
def scenes(tmp_path: Path) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for name in SCENES:
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def cut(found: list[tuple[float, bool]]) -> float:
    """(presence, mask non-empty) pairs -> a min score S mid-way in the widest gap between two measured
    presences that has a non-empty mask below it (so S empties a mask that was not empty)."""
    values = sorted(found)
    best: tuple[float, float] | None = None
    for (low, _), (high, _) in zip(values, values[1:]):
        if any(nonempty for p, nonempty in values if p <= low) and (best is None or high - low > best[1] - best[0]):
            best = (low, high)
    assert best is not None and best[1] - best[0] > 2 * MIN_GAP, f"no usable gap in {values}"
    return round((best[0] + best[1]) / 2, 4)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def mask_png(path: str | Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED) > 0


def segment(*argv: str) -> int:
    return main(["segment", *DEMO, *argv])


def exps(texts: list[str]) -> list[str]:
    return [a for t in texts for a in ("--exp", t)]


def check_rows(before: list[dict], after: list[dict], s: float) -> int:
    """Rows of the same items without and with --min-score s; -> how many came back absent."""
    assert [r["output"] for r in before] == [r["output"].replace("/on/", "/off/") for r in after]
    absent = 0
    for b, a in zip(before, after):
        assert b["present"] is True and a["presence"] == pytest.approx(b["presence"], abs=1e-6)
        assert a["present"] is (b["presence"] >= s)
        if a["present"]:
            assert Path(a["output"]).read_bytes() == Path(b["output"]).read_bytes()
            assert (a["score"], a["foreground"]) == (b["score"], b["foreground"])
        else:
            absent += 1
            assert not mask_png(a["output"]).any() and a["score"] == 0.0 and a["foreground"] == 0.0
    return absent


def test_batch_rows_and_masks(scenes, tmp_path, capsys):
    assert segment("--img", str(scenes), *exps(TEXTS), "--sp", str(tmp_path / "off"), *OFF) == 0
    before = rows_of(tmp_path / "off" / "results.jsonl")
    s = cut([(r["presence"], r["foreground"] > 0) for r in before])
    assert segment("--img", str(scenes), *exps(TEXTS), "--sp", str(tmp_path / "on"), "--min-score", str(s)) == 0
    off = {r["output"]: r for r in before}
    after = rows_of(tmp_path / "on" / "results.jsonl")
    before = [off[r["output"].replace("/on/", "/off/")] for r in after]
    absent = check_rows(before, after, s)
    assert 0 < absent < len(after)
    assert any(b["foreground"] > 0 and not a["present"] for b, a in zip(before, after))  # a mask was emptied
    assert list(after[0]) == ["image", "expression", "output", "score", "presence", "present", "foreground",
                              "seconds", "error"]
    # 0 turns it off: every output as without the flag
    assert segment("--img", str(scenes), *exps(TEXTS), "--sp", str(tmp_path / "zero"), "--min-score", "0") == 0
    for r in rows_of(tmp_path / "zero" / "results.jsonl"):
        assert r["present"] is True
        assert Path(r["output"]).read_bytes() == Path(r["output"].replace("/zero/", "/off/")).read_bytes()


def test_single_call_says_not_found(tmp_path, capsys):
    image = str(EXAMPLES / "demo_scene_3.png")
    assert segment("--img", image, "--exp", "the tree on the left", "--sp", str(tmp_path / "a.png"), *OFF) == 0
    assert mask_png(tmp_path / "a.png").any()
    assert segment("--img", image, "--exp", "the tree on the left", "--sp", str(tmp_path / "b.png"),
                   "--min-score", "0.99") == 0
    assert not mask_png(tmp_path / "b.png").any()
    err = capsys.readouterr().err
    assert "note: not found: the presence score" in err and "below --min-score" in err


def test_label_map_legend_and_pixels(scenes, tmp_path):
    argv = ["--img", str(scenes), "--classes", CLASSES, "--no-progress"]
    assert segment(*argv, "--sp", str(tmp_path / "off"), *OFF) == 0
    legends = {p.name: json.loads(p.read_text()) for p in (tmp_path / "off").glob("*.legend.json")}
    s = cut([(c["presence"], c["share"] > 0) for lg in legends.values() for c in lg["classes"] if c["index"]])
    assert segment(*argv, "--sp", str(tmp_path / "on"), "--min-score", str(s)) == 0
    absent_seen = 0
    rows = {Path(r["image"]).name: r for r in rows_of(tmp_path / "on" / "results.jsonl")}
    for name, before in legends.items():
        assert before["min_score"] is None
        after = json.loads((tmp_path / "on" / name).read_text())
        assert after["min_score"] == s and after["threshold"] == before["threshold"]
        labels_off = read_label_png(tmp_path / "off" / name.replace(".legend.json", ".png"))[0]
        labels_on = read_label_png(tmp_path / "on" / name.replace(".legend.json", ".png"))[0]
        absent = set()
        for b, a in zip(before["classes"][1:], after["classes"][1:]):
            assert b["present"] is True and a["presence"] == pytest.approx(b["presence"], abs=1e-6)
            assert a["present"] is (b["presence"] >= s)
            if not a["present"]:
                absent.add(a["index"])
                assert a["share"] == 0.0 and not (labels_on == a["index"]).any()  # not painted
        assert before["classes"][0]["presence"] is None  # the background has none
        kept = ~np.isin(labels_off, list(absent))  # pixels a present class (or no class) held: unchanged
        assert np.array_equal(labels_on[kept], labels_off[kept])
        assert not np.isin(labels_on[~kept], list(absent)).any()
        row = rows[Path(after["image"]).name]
        assert row["absent"] == [c["name"] for c in after["classes"][1:] if c["index"] in absent]
        absent_seen += bool(absent & {c["index"] for c in before["classes"][1:] if c["share"] > 0})
    assert absent_seen  # a class that painted pixels was found absent


def test_video_frames(tmp_path):
    frames = tmp_path / "frames"  # a folder of frames: the three scenes, so presences differ frame to frame
    frames.mkdir()
    for i, name in enumerate(SCENES):
        shutil.copy(EXAMPLES / name, frames / f"{i:06d}.png")
    argv = ["--video", str(frames), *exps(["the red house", "the tree on the left"]), "--no-progress"]
    assert segment(*argv, "--sp", str(tmp_path / "off"), *OFF) == 0
    before = rows_of(tmp_path / "off" / "results.jsonl")
    s = cut([(r["presence"], r["foreground"] > 0) for r in before])
    assert segment(*argv, "--sp", str(tmp_path / "on"), "--min-score", str(s)) == 0
    after = rows_of(tmp_path / "on" / "results.jsonl")
    key = {(r["frame"], r["expression"]): r for r in before}
    before = [key[(r["frame"], r["expression"])] for r in after]  # the same (frame, instruction) pairs
    absent = check_rows(before, after, s)
    assert 0 < absent < len(after)
    assert any(b["foreground"] > 0 and not a["present"] for b, a in zip(before, after))


@pytest.mark.slow  # the demo page's handler, through Gradio
@pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request
def test_demo_page_handler(tmp_path):
    pytest.importorskip("gradio")
    from unilseg import Predictor, load_model
    from unilseg.demo.app import build_app

    predictor = Predictor(load_model(model="unilseg-demo", device="cpu"), min_score=0)
    demo = build_app(predictor)
    handler = next(f.fn for f in demo.fns.values() if f.fn.__name__ == "segment")
    image, text = str(EXAMPLES / "demo_scene_3.png"), "\n".join(TEXTS)
    off = handler(image, text, 0.35, None, None, None, 0)  # (image, text, threshold, precision, cache, request, min)
    predictor.set_image(image)  # the page's numbers are the predictor's
    preds = predictor.predict(TEXTS)
    presences = [p.presence for p in preds]
    s = cut([(p.presence, p.mask.any()) for p in preds])
    on = handler(image, text, 0.35, None, None, None, s)
    assert on[3].startswith("**Done:**") and f"min presence {s:.2f}" in on[3]
    rows = on[2].splitlines()[2:]
    assert len(rows) == len(TEXTS)
    for row, presence, f_off, f_on in zip(rows, presences, off[1], on[1]):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4].split()[0]) == pytest.approx(presence, abs=1e-3)
        if presence >= s:
            assert "not found" not in row and Path(f_on).read_bytes() == Path(f_off).read_bytes()
        else:
            assert "**not found**" in row and not mask_png(f_on).any()
    assert any(p < s for p in presences) and any(p >= s for p in presences)
    bad = handler(image, text, 0.35, None, None, None, 1.5)
    assert bad[3].startswith("**Problem:** The minimum presence must be a number from 0 (off) to 1"), bad[3]


@pytest.mark.slow  # four runs over the scenes
def test_coco_and_label_studio_absent_has_no_annotation_and_scores_are_presence(scenes, tmp_path):
    off, on = tmp_path / "off", tmp_path / "on"
    ls = ["--label-studio", "ls.json"] if importlib.util.find_spec("label_studio_sdk") else []
    assert segment("--img", str(scenes), *exps(TEXTS), "--sp", str(off), "--coco", str(off / "coco.json"),
                   "--image-root", str(scenes), *OFF, *[str(off / a) if a == "ls.json" else a for a in ls]) == 0
    before = rows_of(off / "results.jsonl")
    s = cut([(r["presence"], r["foreground"] > 0) for r in before])
    assert segment("--img", str(scenes), *exps(TEXTS), "--sp", str(on), "--coco", str(on / "coco.json"),
                   "--image-root", str(scenes), "--min-score", str(s),
                   *[str(on / a) if a == "ls.json" else a for a in ls]) == 0
    for folder in (off, on):
        coco = json.loads((folder / "coco.json").read_text())
        if ls:  # Label Studio: one brush result per annotation, scored alike
            tasks = json.loads((folder / "ls.json").read_text())
            scores = sorted(r["score"] for t in tasks for r in t["predictions"][0]["result"])
            assert scores == sorted(a["score"] for a in coco["annotations"])
        images = {i["id"]: i["file_name"] for i in coco["images"]}
        cats = {c["id"]: c["name"] for c in coco["categories"]}
        anns = {(images[a["image_id"]], cats[a["category_id"]]): a for a in coco["annotations"]}
        for r in rows_of(folder / "results.jsonl"):
            ann = anns.get((Path(r["image"]).name, r["expression"]))
            if r["present"] and r["foreground"] > 0:
                assert ann is not None and ann["score"] == r["presence"]  # the presence score, rounded to 6
            else:
                assert ann is None  # absent, or an empty mask: no annotation
    n_off = len(json.loads((off / "coco.json").read_text())["annotations"])
    assert len(json.loads((on / "coco.json").read_text())["annotations"]) < n_off


def test_cvat_and_supervision_drop_what_is_absent(measured):
    pytest.importorskip("supervision")
    pytest.importorskip("cvat_sdk")
    import PIL.Image

    from unilseg import Predictor, load_model
    from unilseg.integrations import to_detections
    from unilseg.integrations.cvat import create

    presences, s = measured
    predictor = Predictor(load_model(model="unilseg-demo", device="cpu"), min_score=s)
    predictor.set_image(str(EXAMPLES / "demo_scene_3.png"))
    preds = predictor.predict(TEXTS)
    kept = [p for p in preds if p.present and p.mask.any()]
    assert len(kept) < len(preds)
    det = to_detections(preds)
    assert det.data["class_name"].tolist() == [p.text for p in kept]
    assert det.confidence.tolist() == [pytest.approx(p.presence, abs=1e-6) for p in kept]
    function = create(classes=[f"c{k}: {t}" for k, t in enumerate(TEXTS)], predictor=predictor)
    with PIL.Image.open(EXAMPLES / "demo_scene_3.png") as image:
        shapes = function.detect(None, image)
    assert sorted(sh.label_id for sh in shapes) == [k for k, p in enumerate(preds) if p.present and p.mask.any()]
    for sh in shapes:
        assert sh.score == pytest.approx(preds[sh.label_id].presence, abs=1e-6)


# ---------------------------------------------------------------- the HTTP API


@pytest.fixture(scope="module")
def measured() -> tuple[list[float], float]:
    """The presences of TEXTS on demo_scene_3 and a cut between them (through the Python API)."""
    from unilseg import Predictor, load_model

    predictor = Predictor(load_model(model="unilseg-demo", device="cpu"), min_score=0)
    predictor.set_image(str(EXAMPLES / "demo_scene_3.png"))
    preds = predictor.predict(TEXTS)
    return [p.presence for p in preds], cut([(p.presence, p.mask.any()) for p in preds])


@pytest.fixture(scope="module")
def server(measured):
    with Server("--min-score", str(measured[1])) as s:
        yield s


def post(server: Server, **fields) -> dict:
    r = server.client.post("/v1/segment", json=json_body(example("demo_scene_3.png"), TEXTS, outputs=["png"],
                                                          **fields))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_serve_min_score_flag_and_field(server, measured):
    presences, s = measured
    assert server.client.get("/v1/models").json()["models"][0]["min_score"] == s
    off = post(server, min_score=0)  # a request's 0: off, whatever the server's
    default = post(server)  # the server's --min-score
    field = post(server, min_score=s)  # the same, asked for
    assert off["min_score"] is None and default["min_score"] == s == field["min_score"]
    assert default["results"] == field["results"]
    for o, d, presence in zip(off["results"], default["results"], presences):
        assert o["present"] is True and d["presence"] == o["presence"] == pytest.approx(presence, abs=1e-6)
        assert d["present"] is (presence >= s)
        if d["present"]:
            assert d["png"] == o["png"] and d["area"] == o["area"]
        else:
            assert d["area"] == 0 and not cv2.imdecode(np.frombuffer(base64.b64decode(d["png"]), np.uint8),
                                                       cv2.IMREAD_UNCHANGED).any()
    assert any(not d["present"] for d in default["results"]) and any(d["present"] for d in default["results"])
    assert any(o["area"] > 0 and not d["present"] for o, d in zip(off["results"], default["results"]))


@pytest.mark.slow
def test_serve_classes_absent_class_paints_nothing(server, measured):
    r = server.client.post("/v1/segment", json=json_body(example("demo_scene_3.png"),
                                                         ["house: the red house", "sky", "elephant: a purple elephant"],
                                                         classes=True, outputs=["rle"]))
    assert r.status_code == 200, r.text
    labels = cv2.imdecode(np.frombuffer(base64.b64decode(r.json()["label_map"]), np.uint8), cv2.IMREAD_UNCHANGED)
    for row in r.json()["classes"]:
        assert row["present"] is (row["presence"] >= measured[1])
        if not row["present"]:
            assert row["area"] == 0 and not (labels == row["index"]).any()


@pytest.mark.slow
@pytest.mark.parametrize("value", [1.5, -1, "abc", True, [0.5]])
def test_serve_bad_min_score_is_400_one_line(server, value):
    r = server.client.post("/v1/segment", json=json_body(example("demo_scene_3.png"), TEXTS, min_score=value))
    assert r.status_code == 400 and list(r.json()) == ["error"], r.text
    message = r.json()["error"]
    assert "min_score must be a number from 0" in message and "\n" not in message


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "nan"])
@pytest.mark.parametrize("command", ["masks", "labels", "video", "serve", "ray", "demo"])
def test_bad_min_score_is_one_line_exit_2(capsys, tmp_path, value, command):
    image = str(EXAMPLES / "demo_scene.png")
    argv = {"masks": ["segment", *DEMO, "--img", image, "--exp", "the sky", "--sp", str(tmp_path / "a.png")],
            "labels": ["segment", *DEMO, "--img", image, "--classes", "sky", "--sp", str(tmp_path / "l.png")],
            "video": ["segment", *DEMO, "--video", str(EXAMPLES), "--exp", "the sky", "--sp", str(tmp_path / "v")],
            "serve": ["serve", *DEMO, "--port", "0"],
            "ray": ["ray", *DEMO, "--img", image, "--exp", "the sky", "--sp", str(tmp_path / "r")],
            "demo": ["demo", *DEMO]}[command]
    if command == "ray":
        pytest.importorskip("ray")
    if command == "demo":
        pytest.importorskip("gradio")
    try:
        code = main([*argv, f"--min-score={value}"])
    except SystemExit as e:  # argparse's refusal of a non-number
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--min-score" in errors[0], err
    assert not list(tmp_path.iterdir())  # nothing written
