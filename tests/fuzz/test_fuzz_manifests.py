"""Hostile manifests and instructions: the CLI's batch, the Python batch API, and outputs kept inside --sp."""
from __future__ import annotations

import csv
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.harness import MODEL, Sandbox, error_lines, files_outside, temp_files
from fuzz.hostile import image_bytes
from unilseg.batch import OutputOptions, plan_items, read_batch_manifest, run_batch

HYPOTHESIS = settings(derandomize=True, deadline=None, max_examples=25, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def predictor():
    from unilseg import Predictor, load_model

    return Predictor(load_model(model="unilseg-demo", device="cpu"))


def good_image(box: Sandbox, name: str = "a.png") -> Path:
    path = box.inp / name
    path.write_bytes(image_bytes())
    return path


def results(box: Sandbox) -> list[dict]:
    return [json.loads(line) for line in (box.out / "results.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- instructions

ODD_TEXTS = {
    "long-10k": "the red circle " * 667,
    "control-chars": "the \x01red\x07 circle\x1b[31m",
    "rtl": "الدائرة الحمراء",
    "rtl-override": "\u202ethe red circle",
    "emoji": "🔴 the red circle 🟢",
    "nul": "the red\x00circle",
    "leading-dashes": "--sp",
    "single-dash": "-",
    "zero-width": "\u200b",
    "cjk": "红色的圆",
    "newlines-inside": "the red\ncircle",
    "quotes-and-commas": '"the red, round" circle',
    "path-like": "../../etc/passwd",
}
EMPTY_TEXTS = {"empty": "", "space": " ", "whitespace": "\t \r\n"}


@pytest.mark.parametrize("name", sorted(ODD_TEXTS))
def test_odd_instruction_alone(sandbox, name):
    """Any non-blank text is segmented; its mask is where --sp says."""
    image = good_image(sandbox)
    sandbox.run(["--img", str(image), f"--exp={ODD_TEXTS[name]}", "--sp", "m.png", *MODEL], 0)
    assert (sandbox.out / "m.png").is_file()


@pytest.mark.parametrize("name", sorted(ODD_TEXTS))
def test_odd_instruction_names_a_safe_file(sandbox, name):
    """In a batch the derived name is a short safe ASCII name inside --sp, whatever the text."""
    image = good_image(sandbox)
    sandbox.run(["--img", str(image), f"--exp={ODD_TEXTS[name]}", "--exp", "the grass", "--sp", ".", *MODEL], 0)
    masks = sandbox.outputs()
    assert len(masks) == 2
    assert all(p.parent == sandbox.out and p.name.isascii() and len(p.name) < 130 for p in masks)


@pytest.mark.parametrize("name", sorted(EMPTY_TEXTS))
def test_blank_instruction(sandbox, name):
    """Alone: refused (2). In a batch: that item fails (1), the other is written."""
    image = good_image(sandbox)
    sandbox.run(["--img", str(image), f"--exp={EMPTY_TEXTS[name]}", "--sp", "m.png", *MODEL], 2)
    sandbox.run(["--img", str(image), f"--exp={EMPTY_TEXTS[name]}", "--exp", "x", "--sp", ".", *MODEL], 1)
    assert len(sandbox.outputs()) == 1 and [bool(r["error"]) for r in results(sandbox)] == [True, False]


@pytest.mark.slow  # Hypothesis
@pytest.mark.filterwarnings("ignore:expression has")  # long texts are cut to the tokenizer's length, with a warning
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=4))
@HYPOTHESIS
def test_any_instructions_through_the_batch_api(predictor, texts):
    """Any texts: blank ones fail as items, the rest are written, each under its own name inside out_dir."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = root / "a.png"
        image.write_bytes(image_bytes())
        out = root / "out"
        out.mkdir()
        items = plan_items([(str(image), t, None) for t in texts], out)
        report = run_batch(predictor, items, report=lambda line: None)
        assert report.done + len(report.failed) == len(texts)
        for item, text in zip(items, texts):
            failed = any(i is item for i, _ in report.failed)
            assert failed == (not text.strip())
            assert item.output.is_file() != failed and item.output.parent == out
        assert len({p.name.casefold() for p in out.iterdir()}) == len(list(out.iterdir()))
        assert not temp_files(root)


# ---------------------------------------------------------------- manifests

A_ROW = 'image,expression\na.png,the red circle\n'
MANIFESTS: dict[str, tuple[str, bytes, int]] = {  # name -> (file name, content, exit code)
    "empty": ("m.csv", b"", 2),
    "header-only": ("m.csv", b"image,expression,output\n", 2),
    "missing-expression-column": ("m.csv", b"image\na.png\n", 2),
    "missing-image-column": ("m.csv", b"expression\nthe sky\n", 2),
    "not-utf8": ("m.csv", "image,expression\na.png,caf\u00e9\n".encode("latin-1"), 2),
    "utf16": ("m.csv", A_ROW.encode("utf-16"), 2),
    "bom": ("m.csv", b"\xef\xbb\xbf" + A_ROW.encode(), 0),
    "crlf": ("m.csv", A_ROW.replace("\n", "\r\n").encode(), 0),
    "extra-columns": ("m.csv", b"image,expression,score,notes\na.png,the sky,0.5,hi\n", 0),
    "more-values-than-header": ("m.csv", b"image,expression\na.png,the sky,extra\n", 2),
    "unterminated-quote": ("m.csv", b'image,expression\na.png,"the sky\n', 0),  # the field runs to the end
    "nul-byte": ("m.csv", b"image,expression\na.png,the\x00sky\n", (0, 2)),
    "binary": ("m.csv", bytes(range(256)) * 4, 2),
    "jsonl-ok": ("m.jsonl", b'{"image": "a.png", "expression": ["the sky", "the grass"]}\n\n', 0),
    "jsonl-broken": ("m.jsonl", b'{"image": "a.png", "expression": "the sky"\n', 2),
    "jsonl-array-line": ("m.jsonl", b'["a.png", "the sky"]\n', 2),
    "jsonl-number-line": ("m.jsonl", b"42\n", 2),
    "jsonl-null-line": ("m.jsonl", b"null\n", 2),
    "jsonl-image-number": ("m.jsonl", b'{"image": 5, "expression": "x"}\n', 2),
    "jsonl-expression-object": ("m.jsonl", b'{"image": "a.png", "expression": {"a": 1}}\n', 2),
    "jsonl-expression-empty-list": ("m.jsonl", b'{"image": "a.png", "expression": []}\n', 2),
    "jsonl-output-number": ("m.jsonl", b'{"image": "a.png", "expression": "x", "output": 3}\n', 2),
    "jsonl-empty": ("m.jsonl", b"\n\n", 2),
    "jsonl-huge-number": ("m.jsonl", b'{"image": "a.png", "expression": "x", "id": 1e999999}\n', 0),
    "jsonl-deep-nesting": ("m.jsonl", b'{"image": "a.png", "expression": "x", "meta": ' + b"[" * 100_000
                           + b"]" * 100_000 + b"}\n", 2),
    "missing-image-file": ("m.csv", b"image,expression\nnope.png,the sky\n", 1),
    "empty-expression-row": ("m.csv", b"image,expression\na.png,\na.png,the sky\n", 1),
    "duplicate-outputs": ("m.csv", b"image,expression,output\na.png,x,same.png\na.png,y,same.png\n", 2),
    "output-too-long": ("m.csv", b"image,expression,output\na.png,x," + b"n" * 300 + b".png\n", 1),
    "output-is-dot": ("m.csv", b"image,expression,output\na.png,x,.\n", 1),
    "output-is-dotdot": ("m.csv", b"image,expression,output\na.png,x,sub/..\n", 1),
    "output-is-a-folder": ("m.csv", b"image,expression,output\na.png,x,sub/\na.png,y,sub/m.png\n", 1),
    "output-is-results-log": ("m.csv", b"image,expression,output\na.png,x,results.jsonl\n", 2),
    "output-is-results-log-npy": ("m.csv", b"image,expression,output\na.png,x,results.npy\n", 2),
    "output-in-subfolder": ("m.csv", b"image,expression,output\na.png,x,sub/dir/m.png\n", 0),
    "output-unknown-user": ("m.csv", b"image,expression,output\na.png,x,~nosuchuser\\/m.png\n", 0),
    "image-unknown-user": ("m.csv", b"image,expression\n~nosuchuser/a.png,x\n", 1),
    "output-home": ("m.csv", b"image,expression,output\na.png,x,~/escaped-home.png\n", 1),
}


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_hostile_manifest(sandbox, name):
    """A malformed manifest stops the job before any work (2); a bad row fails as an item (1)."""
    good_image(sandbox)
    file_name, content, code = MANIFESTS[name]
    manifest = sandbox.inp / file_name
    manifest.write_bytes(content)
    result = sandbox.run(["--manifest", str(manifest), "--sp", ".", *MODEL], code)
    if result.code == 2:
        assert not sandbox.outputs() and not (sandbox.out / "results.jsonl").exists()
    else:
        rows = results(sandbox)
        assert rows and all(bool(r["error"]) or Path(r["output"]).is_file() for r in rows), rows
        assert not sandbox.outputs() if all(r["error"] for r in rows) else sandbox.outputs()
        assert (sandbox.out / "results.jsonl").read_text().endswith("\n")


@pytest.mark.parametrize("output", ["sub/..", ".", "..", "sub/../..", "/", "~"])
def test_outputs_naming_no_file_with_sidecars(sandbox, output):
    """With --save-prob and --overlay too, an output naming a folder fails as an item."""
    good_image(sandbox)
    manifest = sandbox.inp / "m.csv"
    manifest.write_text(f"image,expression,output\na.png,x,{output}\na.png,y,\n")
    sandbox.run(["--manifest", str(manifest), "--sp", ".", "--save-prob", "--overlay", *MODEL], 1)
    assert [bool(r["error"]) for r in results(sandbox)] == [True, False]
    assert len(sandbox.outputs()) == 3


# ---------------------------------------------------------------- outputs stay inside --sp

ESCAPES = {"parent": "../escaped.png", "nested-parent": "x/../../escaped2.png", "absolute": "ABS/abs_escape.png",
           "symlinked-dir": "linked/m.png"}


def escaping_rows(box: Sandbox) -> list[tuple[str, str, str]]:
    """The hostile rows (absolute: a path in the sandbox, outside out/) plus one good row; links out/linked."""
    (box.out / "linked").symlink_to(box.inp, target_is_directory=True)
    image = str(good_image(box))
    rows = [(image, f"text {k}", v.replace("ABS", str(box.root))) for k, v in ESCAPES.items()]
    return rows + [(image, "the red circle", "fine/m.png")]


def check_refused(box: Sandbox, rows: list[dict]) -> None:
    assert [bool(r["error"]) for r in rows] == [True] * len(ESCAPES) + [False], rows
    assert all("--sp" in r["error"] for r in rows[:-1])
    assert (box.out / "fine" / "m.png").is_file() and not list(box.inp.glob("m.png"))
    assert not (box.root / "escaped.png").exists() and not (box.root / "escaped2.png").exists()


def test_escaping_outputs_refused_by_the_cli(sandbox):
    rows = escaping_rows(sandbox)
    manifest = sandbox.inp / "m.csv"
    with open(manifest, "w", newline="") as f:
        csv.writer(f).writerows([("image", "expression", "output"), *rows])
    result = sandbox.run(["--manifest", str(manifest), "--sp", ".", *MODEL], 1)
    assert result.err.count("failed:") == len(ESCAPES)
    check_refused(sandbox, results(sandbox))


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escaping_output_refused_by_the_batch_api(sandbox, predictor, name):
    rows = escaping_rows(sandbox)
    items = plan_items([rows[list(ESCAPES).index(name)], rows[-1]], sandbox.out)
    assert items[0].error and "out_dir" in items[0].error  # the API's term; the CLI's rows say --sp (above)
    report = run_batch(predictor, items, results=sandbox.out / "results.jsonl", report=lambda line: None)
    assert report.done == 1 and [i.index for i, _ in report.failed] == [0]
    assert files_outside(sandbox.root, sandbox.out) == {sandbox.inp, sandbox.inp / "a.png"}


def test_symlink_planted_after_planning_is_refused_at_write(sandbox, predictor):
    """The check runs again just before writing, so a link made mid-run leads nowhere."""
    image = str(good_image(sandbox))
    items = plan_items([(image, "x", "later/m.png")], sandbox.out, OutputOptions(save_prob=True))
    assert items[0].error is None
    (sandbox.out / "later").symlink_to(sandbox.inp, target_is_directory=True)
    report = run_batch(predictor, items, report=lambda line: None)
    assert report.done == 0 and "not inside the output directory" in report.failed[0][1]
    assert sorted(p.name for p in sandbox.inp.iterdir()) == ["a.png"]


def test_absolute_outputs_allowed_by_the_flag(sandbox):
    image = good_image(sandbox)
    target = sandbox.out / "abs" / "m.png"
    manifest = sandbox.inp / "m.csv"
    manifest.write_text(f"image,expression,output\n{image},x,{target}\n")
    sandbox.run(["--manifest", str(manifest), "--sp", ".", *MODEL], 1)
    sandbox.run(["--manifest", str(manifest), "--sp", ".", "--allow-absolute-output", *MODEL], 0)
    assert target.is_file()


def test_escaping_label_folder_stops_the_job(sandbox):
    """Label maps name their files themselves; a planted symlink leading out stops the whole job (2)."""
    image = good_image(sandbox)
    (sandbox.out / "a__labels.png").symlink_to(sandbox.inp / "stolen.png")
    sandbox.run(["--img", str(image), str(image), "--classes", "x,y", "--sp", ".", *MODEL], 2)


@pytest.mark.slow  # Hypothesis
@given(rows=st.lists(st.tuples(
    st.sampled_from(["a.png", "missing.png", "in/a.png", "", " "]),
    st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "the sky"])),
    st.one_of(st.none(), st.sampled_from(["", "..", "../x.png", "a/../../x.png", "/tmp/x.png", "~/x.png", ".", "sub/",
                                          "m.png", "M.PNG", "a\\..\\..\\x.png", "results.jsonl"]),
              st.text(alphabet="ab./~-_\\ ", max_size=12))), min_size=1, max_size=5),
       flags=st.sampled_from([[], ["--save-prob"], ["--overlay", "png"], ["--format", "rle-json"], ["--format", "npy",
                              "--save-prob", "--overlay"]]))
@HYPOTHESIS
def test_generated_manifests(capsys, rows, flags):
    """Any manifest: exit 0/1/2 with one error line when not 0, no temp files, nothing outside out/."""
    from unilseg.__main__ import main

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a.png").write_bytes(image_bytes(h=24, w=24))
        (root / "out").mkdir()
        manifest = root / "m.csv"
        with open(manifest, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "expression", "output"])
            writer.writerows([(i, e, o or "") for i, e, o in rows])
        before = files_outside(root, root / "out")
        code = main(["--manifest", str(manifest), "--sp", str(root / "out"), *flags, *MODEL])
        err = capsys.readouterr().err
        assert "Traceback" not in err and code in (0, 1, 2), err
        assert len(error_lines(err)) == (code != 0), err
        assert not temp_files(root) and files_outside(root, root / "out") == before
        assert not Path("/tmp/x.png").exists() and not Path("~/x.png").expanduser().exists()


# ---------------------------------------------------------------- 100k rows

def test_a_huge_manifest_is_streamed(tmp_path):
    """Reading yields the first row long before the file is read (the reader streams line by line)."""
    from unilseg.data.manifest import iter_records

    manifest = tmp_path / "m.csv"
    manifest.write_text("image,expression\n" + "a.png,the red circle\n" * 100_000)
    rows = iter_records(manifest)
    next(rows)
    position = os.lseek(rows.gi_frame.f_locals["f"].fileno(), 0, os.SEEK_CUR)
    assert position < manifest.stat().st_size // 10
    rows.close()


@pytest.mark.slow  # plans and logs 100k rows
def test_100k_rows_of_one_image(sandbox):
    """100k rows planned (unique names, linear time) and logged; each row's blank text fails it, so no
    model runs and the job takes seconds."""
    good_image(sandbox)
    manifest = sandbox.inp / "m.csv"
    manifest.write_text("image,expression\n" + "a.png, \n" * 100_000)
    t0 = time.perf_counter()
    sandbox.run(["--manifest", str(manifest), "--sp", ".", "--model", "no-such-model"], 1)
    assert time.perf_counter() - t0 < 120
    assert len(results(sandbox)) == 100_000
    requests = read_batch_manifest(manifest)
    assert len(requests) == 100_000
