"""A manifest row whose output's extension contradicts the job's mask format fails, as `--sp` does."""
import json
from pathlib import Path

from conftest import FIXTURES

from unilseg.batch import OutputOptions, plan_items

IMAGE = str(FIXTURES / "images" / "astronaut.png")


def test_the_plan_fails_the_contradicting_rows_only(tmp_path):
    requests = [(IMAGE, "the sky", "a/sky.png"), (IMAGE, "the face", "a/face.jpg"), (IMAGE, "the face", "a/ok.npy"),
                (IMAGE, "the sky", "picked/no_extension"), (IMAGE, "the sky", None)]
    items = plan_items(requests, tmp_path, OutputOptions(fmt="npy"))
    assert [item.error for item in items] == [
        "output a/sky.png ends in .png, but the job writes npy masks; name it a/sky.npy",
        "output a/face.jpg ends in .jpg, but the job writes npy masks; name it a/face.npy",
        None, None, None]
    assert [item.output.relative_to(tmp_path).as_posix() for item in items[2:]] == [
        "a/ok.npy", "picked/no_extension", "astronaut__the-sky.npy"]
    # png masks: any lossless image extension fits; .npy, .json and lossy ones contradict
    png = plan_items([(IMAGE, "sky", "a.tif"), (IMAGE, "sky", "b.json"), (IMAGE, "sky", "c.webp")], tmp_path)
    assert [item.error is None for item in png] == [True, False, False]


def test_a_manifest_row_writing_json_into_a_png_fails_in_one_line(tmp_path, capsys):
    from unilseg.__main__ import main

    rows = [{"image": IMAGE, "expression": "the sky", "output": "a/sky.png"},
            {"image": IMAGE, "expression": "the face", "output": "a/face.json"},
            {"image": IMAGE, "expression": "the face", "output": "picked/face"}]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["--model", "unilseg-demo", "--device", "cpu", "--manifest", str(manifest), "--sp", str(out),
                 "--format", "rle-json", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"failed: {IMAGE} 'the sky': output a/sky.png ends in .png, but the job writes rle-json masks; "
                   "name it a/sky.json", f"error: 1 of 3 items failed; see {out / 'results.jsonl'}"]
    assert not (out / "a" / "sky.png").exists()
    for name in ("a/face.json", "picked/face"):  # the other rows are written, in the job's format
        assert json.loads((out / name).read_text())["size"]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["error"] is None for r in results] == [False, True, True]
    assert Path(results[0]["output"]) == out / "a" / "sky.png"
