"""ONNX export and the ONNX Runtime backend: parity with torch, dynamic axes, clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, golden_cases
from tiny import write_images, write_tiny_model

from unilseg.__main__ import main
from unilseg.build import load_model
from unilseg.errors import UnilsegError
from unilseg.export import EXPORT_FILE
from unilseg.predictor import Predictor, to_prediction
from unilseg.runtime import load_backend

CASES = golden_cases()
FULL_CONFIG = str(ROOT / "unilseg/configs/unilseg20.yaml")
TEXTS = ["the left cat", "sky", "a person in a red coat"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny seeded model and its fp32 ONNX export -> (config, weights, export dir)."""
    root = tmp_path_factory.mktemp("onnx-tiny")
    config, weights = write_tiny_model(root)
    out = root / "export"
    assert main(["export", "--config", str(config), "--weights", str(weights), "--format", "onnx",
                 "--out", str(out)]) == 0
    return config, weights, out


@pytest.fixture(scope="module")
def full_export(seeded_checkpoint, tmp_path_factory):
    """The seeded full-size UniLSeg-20 exported to ONNX (fp32)."""
    out = tmp_path_factory.mktemp("onnx-full") / "unilseg20"
    assert main(["export", "--weights", str(seeded_checkpoint), "--config", FULL_CONFIG, "--format", "onnx",
                 "--out", str(out)]) == 0
    return out


def test_export_writes_two_checked_graphs_and_settings(tiny):
    import onnx

    config, _, out = tiny
    info = json.loads((out / EXPORT_FILE).read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([EXPORT_FILE, *info["files"].values()])
    assert info["format"] == "onnx" and info["variant"] == "fp32" and info["extra"]["opset"] == 18
    assert info["spec"]["size"] == 96 and info["spec"]["threshold"] == 0.5 and info["spec"]["context_length"] == 17
    assert info["spec"]["tokenizer"]["sot"] == 49406
    for name in info["files"].values():
        model = onnx.load(str(out / name))
        onnx.checker.check_model(model)
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
        assert all(isinstance(d[0], str) and d[0] for d in dims)  # batch / pairs axis is dynamic


def test_tiny_logits_match_torch_and_dynamic_axes_match_one_at_a_time(tiny):
    config, weights, out = tiny
    torch_pred = Predictor(load_model(weights, config, device="cpu"))
    onnx_pred = Predictor(load_backend("onnx", weights=str(out), device="cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70 + 30 * i, 90, 3), dtype=np.uint8) for i in range(2)]
    for pred in (torch_pred, onnx_pred):
        pred.max_batch = 3
    emb_t, emb_o = torch_pred.embed(images), onnx_pred.embed(images)  # a batch of 2 images
    pairs = [0, 1, 0]
    ref = torch_pred.pair_logits([emb_t[i] for i in pairs], TEXTS)
    got = onnx_pred.pair_logits([emb_o[i] for i in pairs], TEXTS)  # 3 instructions in one decoder run
    assert (got - ref).abs().max() <= 1e-3
    one_by_one = torch.cat([onnx_pred.pair_logits(onnx_pred.embed([images[i]]), [t]) for i, t in zip(pairs, TEXTS)])
    assert (got - one_by_one).abs().max() <= 1e-5


def test_wrong_input_shape_or_dtype_is_one_clear_line(tiny):
    backend = load_backend("onnx", weights=str(tiny[2]), device="cpu")
    with pytest.raises(UnilsegError, match=r"image_encoder.onnx: input 'image' must have shape batchx3x96x96, got "
                                           r"1x3x95x96"):
        backend.encoder({"image": np.zeros((1, 3, 95, 96), np.float32)})
    with pytest.raises(UnilsegError, match="input 'image' must be float32, got float64"):
        backend.encoder({"image": np.zeros((1, 3, 96, 96), np.float64)})
    feats = backend.encode_image(torch.zeros(1, 3, 96, 96))
    with pytest.raises(UnilsegError, match="input 'tokens' must be int64, got int32"):
        backend.decode(feats, (torch.zeros(1, 17, dtype=torch.int32),))
    with pytest.raises(UnilsegError, match="input 'tokens' must have shape pairsx17, got 1x16"):
        backend.decode(feats, (torch.zeros(1, 16, dtype=torch.long),))


def test_cli_runtime_onnx_writes_the_same_masks_as_torch(tiny, tmp_path):
    config, weights, out = tiny
    images = write_images(tmp_path / "in", 2)
    common = ["--img", *map(str, images), "--exp", "the left cat", "--exp", "sky", "--device", "cpu"]
    assert main([*common, "--config", str(config), "--weights", str(weights), "--sp", str(tmp_path / "torch/")]) == 0
    assert main([*common, "--runtime", "onnx", "--weights", str(out), "--sp", str(tmp_path / "onnx/")]) == 0
    names = sorted(p.name for p in (tmp_path / "torch").glob("*.png"))
    assert len(names) == 4 and names == sorted(p.name for p in (tmp_path / "onnx").glob("*.png"))
    for name in names:
        a = cv2.imread(str(tmp_path / "torch" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "onnx" / name), cv2.IMREAD_UNCHANGED)
        assert (a != b).mean() <= 1e-3


def test_int8_export_runs_and_stays_close(tiny, tmp_path):
    config, weights, out = tiny
    q = tmp_path / "int8"
    assert main(["export", "--config", str(config), "--weights", str(weights), "--format", "onnx",
                 "--quantize", "int8", "--out", str(q)]) == 0
    info = json.loads((q / EXPORT_FILE).read_text())
    assert info["variant"] == "int8" and all(n.endswith(".int8.onnx") for n in info["files"].values())
    assert sum(p.stat().st_size for p in q.glob("*.onnx")) < sum(p.stat().st_size for p in out.glob("*.onnx"))
    image = np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    fp32, int8 = (Predictor(load_backend("onnx", weights=str(d), device="cpu")) for d in (out, q))
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    for pred in (fp32, int8):
        pred.set_image(image)
    a, b = fp32.predict_logits(TEXTS), int8.predict_logits(TEXTS)
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99


@pytest.fixture(scope="module")
def full_predictor(full_export):
    return Predictor(load_backend("onnx", weights=str(full_export), device="cpu"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_full_size_onnx_matches_golden(full_predictor, case):
    full_predictor.set_image(str(FIXTURES / case["img"]))
    logits = full_predictor.predict_logits(case["exp"])
    assert np.abs(logits.numpy() - np.load(FIXTURES / f"{case['name']}.logits.npy")).max() <= 1e-3
    mask = to_prediction(case["exp"], logits[0], full_predictor.embedding, full_predictor.threshold).mask
    expected = cv2.imread(str(FIXTURES / f"{case['name']}.mask.png"), cv2.IMREAD_UNCHANGED) > 0
    assert mask.shape == expected.shape and (mask != expected).mean() <= 1e-3


def test_full_size_cli_runtime_onnx_writes_the_golden_mask(full_export, tmp_path):
    case = CASES[0]
    out = tmp_path / "mask.png"
    assert main(["--runtime", "onnx", "--weights", str(full_export), "--img", str(FIXTURES / case["img"]),
                 "--exp", case["exp"], "--sp", str(out)]) == 0
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    expected = cv2.imread(str(FIXTURES / f"{case['name']}.mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == expected.shape and (mask != expected).mean() <= 1e-3


def _no_partial(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("problem", ["missing", "mismatched", "unwritable", "not-a-checkpoint"])
def test_export_refuses_bad_input_in_one_line(problem, tiny, tmp_path, capsys):
    config, weights, _ = tiny
    args = ["export", "--format", "onnx", "--config", str(config), "--weights", str(weights),
            "--out", str(tmp_path / "out")]
    if problem == "missing":
        args[args.index("--weights") + 1] = str(tmp_path / "nope.pth")
    elif problem == "mismatched":
        args[args.index("--config") + 1] = FULL_CONFIG
    elif problem == "not-a-checkpoint":
        bad = tmp_path / "page.pth"
        bad.write_text("<html>not found</html>")
        args[args.index("--weights") + 1] = str(bad)
    else:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        args[args.index("--out") + 1] = str(blocker / "out")
    before = _no_partial(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert _no_partial(tmp_path) == before  # nothing left behind, not even a temporary directory


def test_runtime_errors_are_one_line(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path / "home"))
    image = write_images(tmp_path, 1)[0]
    base = ["--img", str(image), "--exp", "sky", "--sp", str(tmp_path / "m.png")]
    for extra, message in [
        (["--runtime", "onnx", "--model", "unilseg-demo"], "no onnx export of unilseg-demo (fp32)"),
        (["--runtime", "onnx", "--weights", str(tmp_path)], "holds no unilseg-export.json"),
        (["--runtime", "onnx", "--weights", str(tiny[2]), "--precision", "int8"], "is a fp32 export, not int8"),
        (["--precision", "int8", "--model", "unilseg-demo"], "--precision int8 runs on ONNX Runtime"),
        (["export", "--format", "onnx", "--model", "unilseg-demo", "--precision", "bf16"], "add --quantize int8"),
    ]:
        argv = [*extra, "--out", str(tmp_path / "x")] if extra[0] == "export" else [*base, *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.png").exists()


def test_model_name_finds_the_cached_export(tmp_path, monkeypatch):
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    assert main(["export", "--model", "unilseg-demo", "--format", "onnx"]) == 0
    assert (tmp_path / "exports" / "unilseg-demo-onnx-fp32" / EXPORT_FILE).is_file()
    image = write_images(tmp_path, 1)[0]
    assert main(["--runtime", "onnx", "--model", "unilseg-demo", "--img", str(image), "--exp", "the sky",
                 "--sp", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").is_file()


def test_without_onnxruntime_one_line_says_what_to_install(tiny, tmp_path):
    image = write_images(tmp_path, 1)[0]
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from unilseg.__main__ import main\n"
            f"sys.exit(main(['--runtime', 'onnx', '--weights', {str(tiny[2])!r}, '--img', {str(image)!r}, '--exp', 'a',"
            f" '--sp', {str(tmp_path / 'm.png')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stderr.strip() == ("error: --runtime onnx needs ONNX Runtime: pip install "
                                                      "'unilseg[onnx]'")
