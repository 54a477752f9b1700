"""Hostile exports and export commands: damaged or foreign export directories under `--runtime onnx`,
and `unilseg export` into places it cannot or must not write."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from fuzz.harness import MODEL, Sandbox
from fuzz.hostile import VALID, make
from fuzz.special import fifo_guard, memory_cap
from unilseg.inference.backends.info import CPU_ROLES

pytestmark = pytest.mark.slow  # exports the demo model to ONNX, and again in several cases

JSON = "unilseg-export.json"
SCENE = Path(__file__).resolve().parents[2] / "imgs" / "demo_scene.png"  # the demo model knows its sky


@pytest.fixture(scope="module")
def demo_export(module_tmp) -> Path:
    from unilseg.__main__ import main

    out = module_tmp / "demo-onnx"
    assert main(["export", *MODEL, "--format", "onnx", "--out", str(out)]) == 0
    return out


def _edit_json(d: Path, change: Callable[[dict], object]) -> None:
    info = json.loads((d / JSON).read_text())
    change(info)
    (d / JSON).write_text(json.dumps(info))


def _graphs(d: Path, role: str) -> list[Path]:
    """The files of `role`: the portable graph and ONNX Runtime's CPU copy of it (the one a CPU run loads)."""
    files = json.loads((d / JSON).read_text())["files"]
    return [d / files[r] for r in (role, CPU_ROLES[role]) if r in files]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _swap_graphs(info: dict) -> None:
    files = info["files"]
    for enc, dec in (("image_encoder", "prompt_decoder"), tuple(CPU_ROLES.values())):
        files[enc], files[dec] = files[dec], files[enc]


# name -> what to do to a copy of a good export; each must be refused in one line, exit 2, before any work
DAMAGE: dict[str, Callable[[Path], object]] = {
    "no-settings": lambda d: (d / JSON).unlink(),
    "settings-not-json": lambda d: (d / JSON).write_text("{not json"),
    "settings-a-list": lambda d: (d / JSON).write_text("[1, 2]"),
    "settings-empty": lambda d: (d / JSON).write_bytes(b""),
    "settings-binary": lambda d: (d / JSON).write_bytes(b"\xff\xfe\x00garbage"),
    "no-files-key": lambda d: _edit_json(d, lambda i: i.pop("files")),
    "file-escapes": lambda d: _edit_json(d, lambda i: i["files"].update(image_encoder="../../escape.onnx")),
    "file-absolute": lambda d: _edit_json(d, lambda i: i["files"].update(image_encoder="/etc/passwd")),
    "file-missing": lambda d: _graphs(d, "prompt_decoder")[0].unlink(),
    "cpu-copy-missing": lambda d: _graphs(d, "prompt_decoder")[1].unlink(),
    "graph-truncated": lambda d: [_truncate(p) for p in _graphs(d, "image_encoder")],
    "cpu-copy-truncated": lambda d: _truncate(_graphs(d, "image_encoder")[1]),
    "graph-html": lambda d: [p.write_text("<html><body>404</body></html>") for p in _graphs(d, "prompt_decoder")],
    "graph-empty": lambda d: [p.write_bytes(b"") for p in _graphs(d, "image_encoder")],
    "graphs-swapped": lambda d: _edit_json(d, _swap_graphs),
    "size-negative": lambda d: _edit_json(d, lambda i: i["spec"].update(size=-5)),
    "size-text": lambda d: _edit_json(d, lambda i: i["spec"].update(size="big")),
    "size-mismatch": lambda d: _edit_json(d, lambda i: i["spec"].update(size=200)),
    "context-mismatch": lambda d: _edit_json(d, lambda i: i["spec"].update(context_length=9)),
    "threshold-out-of-range": lambda d: _edit_json(d, lambda i: i["spec"].update(threshold=1.5)),
    "std-zero": lambda d: _edit_json(d, lambda i: i["spec"].update(std=[0, 0, 0])),
    "mean-two-values": lambda d: _edit_json(d, lambda i: i["spec"].update(mean=[0.5, 0.5])),
    "another-format": lambda d: _edit_json(d, lambda i: i.update(format="aoti")),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_export_is_refused(sandbox: Sandbox, demo_export: Path, damage: str) -> None:
    d = sandbox.inp / "export"
    shutil.copytree(demo_export, d)
    DAMAGE[damage](d)
    image = make(VALID, "rgb-png", sandbox.inp)
    sandbox.run(["--runtime", "onnx", "--weights", str(d), "--img", str(image), "--exp", "the sky",
                 "--sp", str(sandbox.out / "m.png")], 2)
    assert not sandbox.outputs()


# Settings with the right JSON types swapped or values out of range: refused in one line by the schema
TYPED_DAMAGE: dict[str, Callable[[dict], object]] = {
    "size-float": lambda i: i["spec"].update(size=192.0),
    "size-true": lambda i: i["spec"].update(size=True),
    "context-float": lambda i: i["spec"].update(context_length=17.0),
    "mean-strings": lambda i: i["spec"].update(mean=["0.48", "0.45", "0.40"]),
    "threshold-string": lambda i: i["spec"].update(threshold="0.35"),
    "threshold-true": lambda i: i["spec"].update(threshold=True),
    "files-empty": lambda i: i.update(files={}),
    "files-a-list": lambda i: i.update(files=["image_encoder.onnx"]),
    "files-lacks-a-role": lambda i: i["files"].pop("prompt_decoder"),
    "std-nan": lambda i: i["spec"].update(std=[float("nan")] * 3),
    "mean-infinity": lambda i: i["spec"].update(mean=[float("inf"), 0.5, 0.5]),
    "spec-a-list": lambda i: i.update(spec=[192, 17]),
    "spec-unknown-key": lambda i: i["spec"].update(sizes=192),
    "format-a-number": lambda i: i.update(format=5),
    "schema-of-the-future": lambda i: i.update(schema=99),
}


@pytest.mark.parametrize("damage", TYPED_DAMAGE, ids=list(TYPED_DAMAGE))
def test_settings_of_the_wrong_type_are_refused(sandbox: Sandbox, demo_export: Path, damage: str) -> None:
    """NaN/Infinity used to give empty masks (exit 0), swapped types tracebacks: one line now, exit 2."""
    d = sandbox.inp / "export"
    shutil.copytree(demo_export, d)
    _edit_json(d, TYPED_DAMAGE[damage])
    image = make(VALID, "rgb-png", sandbox.inp)
    result = sandbox.run(["--runtime", "onnx", "--weights", str(d), "--img", str(image), "--exp", "the sky",
                          "--sp", str(sandbox.out / "m.png")], 2)
    assert "damaged" in result.err and "error: error:" not in result.err
    assert not sandbox.outputs()


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_settings_that_are_no_regular_file(sandbox: Sandbox, demo_export: Path, kind: str) -> None:
    """A FIFO as unilseg-export.json used to hang the job; a device would be read without end."""
    d = sandbox.inp / "export"
    shutil.copytree(demo_export, d)
    (d / JSON).unlink()
    image = make(VALID, "rgb-png", sandbox.inp)
    argv = ["--runtime", "onnx", "--weights", str(d), "--img", str(image), "--exp", "sky", "--sp",
            str(sandbox.out / "m.png")]
    if kind == "fifo":
        with fifo_guard(d / JSON) as woken:
            sandbox.run(argv, 2)
        assert not woken, "the job waited on the FIFO"
    else:
        if kind == "dev-zero":
            (d / JSON).symlink_to("/dev/zero")
        else:
            (d / JSON).mkdir()
        with memory_cap():
            sandbox.run(argv, 2)
    assert not sandbox.outputs()


def _onnx_mask(sandbox: Sandbox, export: Path, name: str, *flags: str) -> np.ndarray:
    image = SCENE if SCENE.is_file() else make(VALID, "rgb-png", sandbox.inp)
    sandbox.run(["--runtime", "onnx", "--weights", str(export), "--img", str(image), "--exp", "the sky",
                 "--sp", str(sandbox.out / name), *flags], 0)
    return cv2.imread(str(sandbox.out / name), cv2.IMREAD_GRAYSCALE) > 0


def test_opts_threshold_applies_to_an_export(sandbox: Sandbox, demo_export: Path) -> None:
    """--opts test.threshold used to be silently ignored by --runtime onnx; it is the threshold there too."""
    opts = _onnx_mask(sandbox, demo_export, "opts.png", "--opts", "test.threshold", "0.9")
    flag = _onnx_mask(sandbox, demo_export, "flag.png", "--threshold", "0.9")
    default = _onnx_mask(sandbox, demo_export, "default.png")
    assert (opts == flag).all() and 0 < opts.sum() < default.sum()


@pytest.mark.parametrize("flags", [
    ["--opts", "input.size", "96"], ["--opts", "model.fusion_heads", "2"], ["--config", "unilseg-demo"],
    ["--opts", "test.threshold", "1.5"], ["--opts", "test.threshold", ".nan"],
], ids=lambda f: " ".join(f))
def test_settings_an_export_cannot_take_are_refused(sandbox: Sandbox, demo_export: Path, flags: list[str]) -> None:
    """An export's network and input settings are fixed when it is made: such flags were silently ignored."""
    image = make(VALID, "rgb-png", sandbox.inp)
    sandbox.run(["--runtime", "onnx", "--weights", str(demo_export), "--img", str(image), "--exp", "sky",
                 "--sp", str(sandbox.out / "m.png"), *flags], 2)
    assert not sandbox.outputs()


@pytest.mark.parametrize("where", ["missing", "a-file", "an-image-folder", "empty-folder", "unknown-user"])
def test_weights_that_are_no_export_directory(sandbox: Sandbox, where: str) -> None:
    image = make(VALID, "rgb-png", sandbox.inp)
    target = {"missing": sandbox.inp / "nope", "a-file": image, "an-image-folder": sandbox.inp,
              "empty-folder": sandbox.inp / "empty", "unknown-user": "~nosuchuser-unilseg/export"}[where]
    if where == "empty-folder":
        target.mkdir()
    sandbox.run(["--runtime", "onnx", "--weights", str(target), "--img", str(image), "--exp", "sky",
                 "--sp", str(sandbox.out / "m.png")], 2)


@pytest.mark.parametrize("name", ["linked", "name with spaces é"])
def test_odd_but_valid_export_paths(sandbox: Sandbox, demo_export: Path, name: str) -> None:
    d = sandbox.inp / name
    if name == "linked":
        d.symlink_to(demo_export, target_is_directory=True)
    else:
        shutil.copytree(demo_export, d)
    image = make(VALID, "rgb-png", sandbox.inp)
    sandbox.run(["--runtime", "onnx", "--weights", str(d), "--img", str(image), "--exp", "the sky",
                 "--sp", str(sandbox.out / "m.png")], 0)
    assert [p.name for p in sandbox.outputs()] == ["m.png"]


@pytest.mark.parametrize("runtime_flags", [
    ["--runtime", "onnx", "--precision", "int8"],  # an fp32 export asked for as int8
    ["--runtime", "onnx", "--precision", "bf16"],
    ["--runtime", "onnx", "--model", "unilseg-demo"],  # --model: the cache holds no export
    ["--runtime", "tensorrt"],
], ids=["int8-of-fp32", "bf16-of-fp32", "model-not-exported", "unknown-runtime"])
def test_runtime_flags_that_cannot_apply(sandbox: Sandbox, demo_export: Path, runtime_flags: list[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNILSEG_HOME", str(sandbox.inp / "home"))
    weights = [] if "--model" in runtime_flags else ["--weights", str(demo_export)]
    image = make(VALID, "rgb-png", sandbox.inp)
    sandbox.run([*runtime_flags, *weights, "--img", str(image), "--exp", "sky", "--sp", str(sandbox.out / "m.png")],
                2)


def _export_args(out: str, *extra: str) -> list[str]:
    return ["export", *MODEL, "--format", "onnx", "--out", out, *extra]


@pytest.mark.parametrize("case", ["under-a-file", "proc", "sys", "non-export-folder", "opset-5", "opset-text",
                                  "quantize-aoti", "bf16-onnx", "int8-precision", "html-weights", "missing-weights",
                                  "unknown-model", "unknown-format", "mismatched-config"])
def test_export_refused_in_one_line_and_nothing_left(sandbox: Sandbox, case: str) -> None:
    out = str(sandbox.out / "exp")
    html = sandbox.inp / "model.pth"
    html.write_text("<!DOCTYPE html><html>sign in</html>")
    argv = {
        "under-a-file": _export_args(str(make(VALID, "rgb-png", sandbox.out) / "exp")),
        "proc": _export_args("/proc/unilseg-export"),
        "sys": _export_args("/sys/unilseg-export"),
        "non-export-folder": _export_args(str(sandbox.out)),
        "opset-5": _export_args(out, "--opset", "5"),
        "opset-text": _export_args(out, "--opset", "latest"),
        "quantize-aoti": ["export", *MODEL, "--format", "aoti", "--quantize", "int8", "--out", out],
        "bf16-onnx": _export_args(out, "--precision", "bf16"),
        "int8-precision": _export_args(out, "--precision", "int8"),
        "html-weights": ["export", "--weights", str(html), "--config", "unilseg-demo", "--format", "onnx",
                         "--out", out],
        "missing-weights": ["export", "--weights", str(sandbox.inp / "nope.pth"), "--format", "onnx", "--out", out],
        "unknown-model": ["export", "--model", "unilseg-99", "--format", "onnx", "--out", out],
        "unknown-format": ["export", *MODEL, "--format", "tflite", "--out", out],
        "mismatched-config": ["export", *MODEL, "--config", "unilseg-tiny", "--format", "onnx", "--out", out],
    }[case]
    before = sorted(p.name for p in sandbox.out.iterdir())
    sandbox.run(argv, 2)
    assert sorted(p.name for p in sandbox.out.iterdir()) == before


def test_export_replaces_an_earlier_export(sandbox: Sandbox, demo_export: Path) -> None:
    out = sandbox.out / "exp"
    shutil.copytree(demo_export, out)
    (out / JSON).write_text((out / JSON).read_text().replace('"threshold": 0.35', '"threshold": 0.4'))
    sandbox.run(_export_args(str(out)), 0)
    assert json.loads((out / JSON).read_text())["spec"]["threshold"] == 0.35


@pytest.mark.parametrize("step", ["graph", "settings"])
def test_disk_full_mid_export_is_one_line_and_leaves_nothing(sandbox: Sandbox, step: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import unilseg.cli.export as export_cli
    import unilseg.export.onnx as export_onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(sandbox.out / "exp"))

    if step == "graph":
        monkeypatch.setattr(export_onnx.torch.onnx, "export", full)
    else:
        monkeypatch.setattr(export_cli, "write_info", full)
    outcome = sandbox.run(_export_args(str(sandbox.out / "exp")), 1)
    assert "No space left on device" in outcome.err
    assert list(sandbox.out.iterdir()) == []
