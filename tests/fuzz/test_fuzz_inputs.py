"""Hostile input values on the command line and in files: non-finite numbers, text that is not UTF-8,
special files (FIFOs, devices, huge files), devices torch names but cannot infer on, and --opts whose limits
used to be found only once the model ran. Each is refused in one line before any work (exit 2), or, where the
input is odd but valid (a file name that is not UTF-8), just works."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fuzz.harness import MODEL, Sandbox
from fuzz.hostile import animated_gif, image_bytes
from fuzz.special import fifo_guard, memory_cap

IMAGE = "a.png"
SCENE = Path(__file__).resolve().parents[2] / "imgs" / "demo_scene.png"  # the demo model knows its sky


def _image(sandbox: Sandbox, name: str | bytes = IMAGE) -> Path:
    """A small valid image in in/ (`name` may be bytes: a file name that is not UTF-8)."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(sandbox.inp), os.fsencode(name))))
    path.write_bytes(image_bytes())
    return path


def _mask(path: Path) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


# ---------------------------------------------------------------- non-finite numbers

@pytest.mark.parametrize("flags", [
    ["--start", "nan"], ["--end", "inf"], ["--fps", "inf"], ["--fps", "nan"], ["--start=-inf"],
    ["--end", "NaN"], ["--start", "1e999"],
], ids=lambda f: " ".join(f))
def test_non_finite_video_flags_are_refused(sandbox: Sandbox, flags: list[str]) -> None:
    video = sandbox.inp / "frames"
    video.mkdir()
    for i in range(2):
        (video / f"{i:03d}.png").write_bytes(image_bytes())
    result = sandbox.run(["--video", str(video), "--exp", "x", "--sp", ".", *MODEL, *flags], 2)
    assert "finite" in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("flags", [["--threshold", "nan"], ["--threshold", "inf"], ["--smooth", "nan"]],
                         ids=lambda f: " ".join(f))
def test_non_finite_flags_are_refused_at_parsing(sandbox: Sandbox, flags: list[str]) -> None:
    image = _image(sandbox)
    video = ["--video", str(animated_gif(sandbox.inp / "v.gif", 2))] if "--smooth" in flags else ["--img", str(image)]
    sandbox.run([*video, "--exp", "x", "--sp", "m.png" if "--img" in video else ".", *MODEL, *flags], 2)
    assert not sandbox.outputs()


@pytest.mark.parametrize("opts", [
    ["input.mean", "[.nan, 0.5, 0.5]"], ["input.std", "[0.3, .inf, 0.3]"], ["input.mean", "[-.inf, 0, 0]"],
    ["input.std", "[.nan, .nan, .nan]"], ["test.threshold", ".nan"],
], ids=lambda o: " ".join(o))
def test_non_finite_opts_are_refused(sandbox: Sandbox, opts: list[str]) -> None:
    """NaN in mean/std used to give an empty mask with exit 0."""
    image = _image(sandbox)
    result = sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *MODEL, "--opts", *opts], 2)
    assert opts[0] in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("value", [".nan", ".inf", "-.Inf"])
def test_non_finite_number_in_a_config_file_is_refused(sandbox: Sandbox, value: str) -> None:
    import yaml

    from unilseg.model.config import load_config

    cfg = load_config("unilseg-demo")
    text = yaml.safe_dump(cfg).replace("0.4578275", value)  # the mean's green
    assert value in text
    config = sandbox.inp / "c.yaml"
    config.write_text(text)
    image = _image(sandbox)
    sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *MODEL, "--config", str(config)], 2)
    assert not sandbox.outputs()


# ---------------------------------------------------------------- text that is not UTF-8, NUL

@pytest.mark.parametrize("flag,value", [
    ("--exp", "the sky \udcff"),  # what Python makes of argv byte 0xFF (surrogateescape)
    ("--exp", "the \ud800 sky"),  # a lone surrogate (in-process callers)
    ("--exp", "\udce9t\udce9"),
    ("--classes", "a\udcff,b"),
    ("--classes", "sky,\udc80road"),
], ids=["exp-byte-ff", "exp-lone-surrogate", "exp-latin1", "classes-byte-ff", "classes-byte-80"])
def test_text_that_is_not_utf8_is_refused(sandbox: Sandbox, flag: str, value: str) -> None:
    image = _image(sandbox)
    result = sandbox.run(["--img", str(image), flag, value, "--sp", "m.png", *MODEL], 2)
    assert flag in result.err and "UTF-8" in result.err
    assert not sandbox.outputs()


ROWS = {  # name -> (a JSONL manifest row, or a CSV body), the words the error must hold
    "expression-lone-surrogate": ('{"image": "a.png", "expression": "the \\ud800 sky"}', "UTF-8"),
    "expression-list-surrogate": ('{"image": "a.png", "expression": ["sky", "x\\udfff"]}', "UTF-8"),
    "output-lone-surrogate": ('{"image": "a.png", "expression": "sky", "output": "m\\ud800.png"}', "surrogate"),
    "output-nul": ('{"image": "a.png", "expression": "sky", "output": "m\\u0000.png"}', "NUL"),
    "image-nul": ('{"image": "a\\u0000.png", "expression": "sky"}', "NUL"),
    "image-lone-surrogate": ('{"image": "\\ud834.png", "expression": "sky"}', "surrogate"),
    "csv-output-nul": ("image,expression,output\na.png,sky,m\0.png\n", "NUL"),
}


@pytest.mark.parametrize("name", ROWS)
def test_manifest_text_that_no_file_or_instruction_can_hold(sandbox: Sandbox, name: str) -> None:
    """Refused before any work, naming the row (a NUL used to crash the run with 'embedded null byte')."""
    _image(sandbox)
    body, words = ROWS[name]
    manifest = sandbox.inp / ("m.csv" if name.startswith("csv") else "m.jsonl")
    manifest.write_text(body if name.startswith("csv") else body + "\n", encoding="utf-8")
    result = sandbox.run(["--manifest", str(manifest), "--sp", ".", *MODEL], 2)
    assert "line" in result.err and words in result.err
    assert not sandbox.outputs()


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_image_named_in_latin1_in_a_batch(sandbox: Sandbox) -> None:
    """A file name holding byte 0xE9 (not UTF-8) is an image like any other: its masks are written and its
    results row gives back the exact name (as a \\udce9 escape), in a results.jsonl that is valid UTF-8."""
    odd = _image(sandbox, b"caf\xe9.png")
    plain = _image(sandbox)
    sandbox.run(["--img", str(odd), str(plain), "--exp", "the sky", "--sp", ".", *MODEL], 0)
    rows = _rows(sandbox.out / "results.jsonl")
    assert [r["image"] for r in rows] == [str(odd), str(plain)] and not any(r["error"] for r in rows)
    assert os.fsencode(rows[0]["image"]).endswith(b"caf\xe9.png")
    assert (_mask(Path(rows[0]["output"])) == _mask(Path(rows[1]["output"]))).all()


def test_image_named_in_latin1_by_a_manifest(sandbox: Sandbox) -> None:
    """A JSONL manifest can name such a file by the escape our results log writes (lossless round trip)."""
    odd = _image(sandbox, b"\xe9t\xe9.png")
    manifest = sandbox.inp / "m.jsonl"
    manifest.write_text(json.dumps({"image": odd.name, "expression": "sky", "output": "o.png"}) + "\n")
    sandbox.run(["--manifest", str(manifest), "--sp", ".", *MODEL], 0)
    assert [p.name for p in sandbox.outputs()] == ["o.png"]
    assert _rows(sandbox.out / "results.jsonl")[0]["image"] == str(odd)


def test_label_maps_of_an_image_named_in_latin1(sandbox: Sandbox) -> None:
    """Label maps too: the legend and results.jsonl (valid UTF-8) name the image losslessly."""
    odd = _image(sandbox, b"r\xe9gion.png")
    sandbox.run(["--img", str(odd), str(_image(sandbox)), "--classes", "sky,ground", "--sp", ".", *MODEL], 0)
    legend = json.loads(next(sandbox.out.glob("r*gion__labels.legend.json")).read_text(encoding="utf-8"))
    assert legend["image"] == str(odd)
    assert [r["image"] for r in _rows(sandbox.out / "results.jsonl")] == [str(odd), str(sandbox.inp / IMAGE)]


def test_output_folder_named_in_latin1(sandbox: Sandbox) -> None:
    image = _image(sandbox)
    out = Path(os.fsdecode(os.fsencode(sandbox.out) + b"/r\xe9sultats"))
    sandbox.run(["--img", str(image), "--exp", "sky", "--exp", "ground", "--sp", str(out), *MODEL], 0)
    rows = _rows(out / "results.jsonl")
    assert len(rows) == 2 and all(Path(r["output"]).is_file() and r["output"].startswith(str(out)) for r in rows)


def test_frames_folder_named_in_latin1(sandbox: Sandbox) -> None:
    frames = Path(os.fsdecode(os.fsencode(sandbox.inp) + b"/vid\xe9o"))
    frames.mkdir()
    for i in range(2):
        (frames / f"{i:03d}.png").write_bytes(image_bytes())
    sandbox.run(["--video", str(frames), "--exp", "sky", "--sp", ".", *MODEL], 0)
    rows = _rows(sandbox.out / "results.jsonl")
    assert [r["frame"] for r in rows] == [0, 1] and {r["video"] for r in rows} == {str(frames)}
    assert len(sandbox.outputs()) == 2


def test_video_file_named_in_latin1_is_refused_in_one_line(sandbox: Sandbox) -> None:
    """OpenCV's video reader takes UTF-8 names only: refused before any work, not a traceback."""
    video = animated_gif(Path(os.fsdecode(os.fsencode(sandbox.inp) + b"/clip\xe9.gif")), 2)
    result = sandbox.run(["--video", str(video), "--exp", "sky", "--sp", ".", *MODEL], 2)
    assert "UTF-8" in result.err and "\\xe9" in result.err
    assert not sandbox.outputs()


# ---------------------------------------------------------------- FIFOs, devices, huge files

def _job(sandbox: Sandbox, flag: str, path: Path) -> list[str]:
    """A command that reads `path` as `flag`'s file (the other inputs valid)."""
    image = _image(sandbox)
    if flag == "--manifest":
        return ["--manifest", str(path), "--sp", ".", *MODEL]
    if flag == "--classes-file":
        return ["--img", str(image), "--classes-file", str(path), "--sp", "labels.png", *MODEL]
    if flag == "--config":
        return ["--img", str(image), "--exp", "x", "--sp", "m.png", *MODEL, "--config", str(path)]
    return ["--img", str(image), "--exp-file", str(path), "--sp", ".", *MODEL]


@pytest.mark.parametrize("flag", ["--manifest", "--exp-file", "--config", "--classes-file"])
def test_fifo_input_is_refused_without_waiting(sandbox: Sandbox, flag: str) -> None:
    """A FIFO would block the job until something writes to it: refused in one line, never opened."""
    fifo = sandbox.inp / "pipe.jsonl"
    with fifo_guard(fifo) as woken:
        result = sandbox.run(_job(sandbox, flag, fifo), 2)
    assert not woken, "the job waited on the FIFO"
    assert "FIFO" in result.err
    assert not sandbox.outputs()


def test_fifo_results_log_on_resume_is_refused(sandbox: Sandbox) -> None:
    """--skip-existing reads results.jsonl back: a FIFO planted there is refused, not waited on."""
    image = _image(sandbox)
    with fifo_guard(sandbox.out / "results.jsonl") as woken:
        result = sandbox.run(["--img", str(image), "--exp", "sky", "--exp", "ground", "--sp", ".", *MODEL,
                              "--skip-existing"], 2)
    assert not woken, "the job waited on the FIFO"
    assert "FIFO" in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("flag,device", [
    ("--manifest", "/dev/zero"), ("--exp-file", "/dev/zero"), ("--classes-file", "/dev/urandom"),
    ("--config", "/dev/zero"), ("--manifest", "/dev/null"),
])
def test_device_as_input_file_is_refused(sandbox: Sandbox, flag: str, device: str) -> None:
    """An endless device used to be read without bound (MemoryError under a cap)."""
    with memory_cap():
        result = sandbox.run(_job(sandbox, flag, Path(device)), 2)
    assert "character device" in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("flag,size", [("--exp-file", 17 << 20), ("--config", 2 << 20), ("--classes-file", 17 << 20),
                                       ("--manifest", (256 << 20) + 1)])
def test_input_file_over_its_bound_is_refused_unread(sandbox: Sandbox, flag: str, size: int) -> None:
    """Each input read whole has a size bound (docs/bad-input.md); a sparse file past it is refused before reading."""
    path = sandbox.inp / ("big.jsonl" if flag == "--manifest" else "big.txt")
    with open(path, "wb") as f:
        f.truncate(size)
    result = sandbox.run(_job(sandbox, flag, path), 2)
    assert "larger than" in result.err
    assert not sandbox.outputs()


def test_directory_as_expression_file_is_refused(sandbox: Sandbox) -> None:
    result = sandbox.run(_job(sandbox, "--exp-file", sandbox.inp), 2)
    assert "directory" in result.err


# ---------------------------------------------------------------- devices

@pytest.mark.parametrize("device", ["meta", "xpu", "ipu", "mkldnn", "lazy", "hpu", "vulkan", "cuda:x", "", "cpu:1",
                                    "privateuseone"])
def test_devices_that_do_not_run_inference_are_refused(sandbox: Sandbox, device: str) -> None:
    image = _image(sandbox)
    result = sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", "--model", "unilseg-demo",
                          "--device", device], 2)
    assert "--device" in result.err and "cuda:N" in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("device", ["meta", "xpu", "lazy", "cpu:3"])
def test_resolve_device_refuses_them_too(device: str) -> None:
    from unilseg.errors import UnilsegError
    from unilseg.inference.predictor import resolve_device

    with pytest.raises(UnilsegError, match="does not run inference"):
        resolve_device(device)


def test_train_refuses_such_a_device(sandbox: Sandbox) -> None:
    result = sandbox.run(["train", "unilseg-tiny", "--device", "xpu", "--steps", "1", "--out", "run"], 2)
    assert "--device" in result.err
    assert not (sandbox.out / "run").exists()


# ---------------------------------------------------------------- --opts limits, checked before any work

@pytest.mark.parametrize("opts,words", [
    (["input.context_length", "1000"], "from 2 to 17"),  # the demo's text encoder has 17 positions
    (["input.context_length", "18"], "from 2 to 17"),
    (["input.context_length", "17.0"], "integer"),
    (["input.size", "192.0"], "integer"),
    (["input.size", "16"], "from 32"),
    (["input.size", "true"], "integer"),
    (["input.std", "[0.2, 0.2]"], "3 finite numbers"),
    (["input.mean", "['a', 'b', 'c']"], "3 finite numbers"),
    (["test.threshold", "'0.5'"], "number"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_opts_out_of_the_models_limits(sandbox: Sandbox, opts: list[str], words: str) -> None:
    """Used to fail after the model loaded (exit 1), or to run with a silently cast value (exit 0)."""
    image = _image(sandbox)
    result = sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *MODEL, "--opts", *opts], 2)
    assert opts[0] in result.err and words in result.err
    assert not sandbox.outputs()


def test_opts_limits_are_checked_before_the_model_loads(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    import unilseg.model.build

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(unilseg.model.build, "load_model", no_load)
    image = _image(sandbox)
    sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *MODEL, "--opts", "input.context_length",
                 "1000"], 2)


def test_opts_threshold_is_the_threshold(sandbox: Sandbox) -> None:
    """--opts test.threshold T gives the masks --threshold T gives (and not the default's)."""
    image = sandbox.inp / "scene.png"
    shutil.copy(SCENE, image)
    run = ["--img", str(image), "--exp", "the sky", *MODEL]
    sandbox.run([*run, "--sp", "opts.png", "--opts", "test.threshold", "0.9"], 0)
    sandbox.run([*run, "--sp", "flag.png", "--threshold", "0.9"], 0)
    sandbox.run([*run, "--sp", "default.png"], 0)
    opts, flag, default = (_mask(sandbox.out / n) > 0 for n in ("opts.png", "flag.png", "default.png"))
    assert (opts == flag).all() and 0 < opts.sum() < default.sum()
