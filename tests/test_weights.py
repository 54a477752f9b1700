"""Model registry, download, conversion to safetensors, and refusal of bad weight files."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

from unilseg.errors import CheckpointError, UnilsegError
from unilseg.model.build import load_model, resolve_model
from unilseg.model.checkpoint import read_weights
from unilseg.model.convert import convert
from unilseg.model.download import download, verify_file
from unilseg.model.registry import MODELS, cached_weights, get_spec

CONFIG = ROOT / "src/unilseg/configs/unilseg20.yaml"


@pytest.fixture(scope="module")
def converted(seeded_checkpoint, module_tmp):
    return convert(seeded_checkpoint, module_tmp / "seed0.safetensors")


@pytest.mark.slow
def test_registry_resolves_name_to_cached_file_preferring_safetensors(monkeypatch, tmp_path, seeded_checkpoint):
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    spec = get_spec("unilseg-20")
    with pytest.raises(CheckpointError, match="python -m unilseg download unilseg-20"):
        resolve_model("unilseg-20")
    (tmp_path / spec.filename).symlink_to(seeded_checkpoint)
    path, cfg = resolve_model("unilseg-20")
    assert path == tmp_path / spec.filename and cfg["name"] == "unilseg-20"
    assert resolve_model(None)[0] == path  # the default config names unilseg-20
    (tmp_path / "UniLSeg20_no_finetune.safetensors").write_bytes(b"")
    assert cached_weights(spec) == tmp_path / "UniLSeg20_no_finetune.safetensors"


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(UnilsegError, match="unknown model 'unilseg-999'.*unilseg-20"):
        resolve_model("unilseg-999")
    with pytest.raises(UnilsegError, match="unknown model"):
        get_spec("nope")
    assert "unilseg-20" in MODELS


@pytest.mark.slow
def test_partial_download_is_never_taken_for_the_file(monkeypatch, tmp_path, seeded_checkpoint):
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    spec = get_spec("unilseg-20")
    data = seeded_checkpoint.read_bytes()[: 10_000_000]
    (tmp_path / (spec.filename + ".part")).write_bytes(data)
    assert cached_weights(spec) is None  # a .part file is invisible to resolution
    truncated = tmp_path / spec.filename
    truncated.write_bytes(data)
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        verify_file(truncated, spec)
    with pytest.raises(CheckpointError, match="incomplete or corrupt"):
        download("unilseg-20")  # an existing but truncated file is re-checked, not trusted


def _offline_prefix() -> tuple[list[str], dict]:
    """Run a command with no network: a fresh network namespace, else a refused proxy."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"], {}
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
    return [], {"HTTPS_PROXY": closed, "HTTP_PROXY": closed, "https_proxy": closed, "http_proxy": closed}


def test_download_without_network_fails_fast_with_one_line(tmp_path):
    prefix, extra_env = _offline_prefix()
    env = {**os.environ, **extra_env, "UNILSEG_HOME": str(tmp_path)}
    proc = subprocess.run(
        [*prefix, sys.executable, "-m", "unilseg", "download", "unilseg-20"],
        capture_output=True, text=True, env=env, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Google Drive"), proc.stderr
    assert "UniLSeg20_no_finetune.pth" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unwritable_cache_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("UNILSEG_HOME", str(blocker / "cache"))
    with pytest.raises(UnilsegError, match="cannot create cache directory"):
        download("unilseg-20")


def test_cli_without_weights_names_the_download_command(tmp_path, capsys):
    from unilseg.cli.segment import main

    env_home = os.environ.get("UNILSEG_HOME")
    os.environ["UNILSEG_HOME"] = str(tmp_path)
    try:
        code = main(["--img", str(ROOT / "tests/fixtures/images/chelsea.png"), "--exp", "cat",
                     "--sp", str(tmp_path / "m.png")])
    finally:
        if env_home is None:
            del os.environ["UNILSEG_HOME"]
        else:
            os.environ["UNILSEG_HOME"] = env_home
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "python -m unilseg download unilseg-20" in err[0]
    assert not (tmp_path / "m.png").exists()


@pytest.mark.slow
def test_convert_round_trip_identical_tensors(seeded_checkpoint, converted):
    pth, _ = read_weights(seeded_checkpoint)
    st, cfg = read_weights(converted)
    assert cfg == json.loads(json.dumps(__import__("yaml").safe_load(CONFIG.read_text())))
    used = {k.removeprefix("module."): v for k, v in pth.items() if not k.startswith("module.backbone.visual.")}
    assert set(st) == set(used) and len(st) == 779
    for k, v in used.items():
        assert st[k].dtype == v.dtype and torch.equal(st[k], v), k
    assert converted.stat().st_size < seeded_checkpoint.stat().st_size - 300e6  # CLIP image tower dropped


@pytest.mark.slow
def test_safetensors_and_pth_give_identical_logits(seeded_model, converted):
    model_st = load_model(converted)  # config comes from the file's metadata
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[49406, 2368, 49407] + [0] * 14])
    with torch.inference_mode():
        assert torch.equal(model_st(x, tokens), seeded_model(x, tokens))


@pytest.mark.slow
def test_safetensors_without_metadata_needs_a_config(converted, tmp_path):
    from safetensors.torch import load_file, save_file

    bare = tmp_path / "bare.safetensors"
    save_file(load_file(converted), str(bare))
    with pytest.raises(CheckpointError, match="no unilseg config in its metadata"):
        load_model(bare)
    assert not load_model(bare, CONFIG).training


@pytest.mark.slow
def test_truncated_safetensors_is_refused(converted, tmp_path):
    bad = tmp_path / "cut.safetensors"
    with open(converted, "rb") as f:
        bad.write_bytes(f.read(5_000_000))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(bad)


def test_convert_refuses_another_models_checkpoint(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, other)
    with pytest.raises(CheckpointError, match="does not match this model"):
        convert(other, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.slow
def test_subcommands_convert_and_models(seeded_checkpoint, tmp_path, capsys, monkeypatch):
    from unilseg.__main__ import main

    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "unilseg-20" in out
    from unilseg.inference.backends.cpu import cpu_features

    assert out.splitlines()[0] == f"cpu: {cpu_features().summary()}" and "VNNI " in out.splitlines()[0]
    assert main(["convert", str(tmp_path / "missing.pth"), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: weights file not found")
    assert not (tmp_path / "x.safetensors").exists()


def test_failed_download_page_is_named_in_one_line(tmp_path, capsys):
    from unilseg.__main__ import main

    page = tmp_path / "UniLSeg20_no_finetune.pth"
    page.write_bytes(b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>" + b" " * 4000)
    assert main(["convert", str(page), str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {page} is not a PyTorch checkpoint: it starts with '<!DOCTYPE html><' (an HTML page, "
                   "perhaps a failed download); download the file again"]
    assert not (tmp_path / "x.safetensors").exists()


def test_half_precision_file_loads_as_float32(tmp_path):
    from unilseg.model.build import build_model

    cfg = ROOT / "src/unilseg/configs/unilseg-tiny.yaml"
    model = build_model(cfg)
    with torch.no_grad():  # trained BatchNorm variances can exceed float16's range
        model.query_decoder.visual_proj[1].running_var.fill_(4e5)
    src = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, src)
    dst = convert(src, tmp_path / "tiny.safetensors", cfg, half=True)
    stored, _ = read_weights(dst)
    kept = {k for k in stored if k.endswith(("running_mean", "running_var"))}
    for key, value in stored.items():
        if model.state_dict()[key].is_floating_point():
            assert value.dtype == (torch.float32 if key in kept else torch.float16), key
    loaded = load_model(dst)
    for key, value in model.state_dict().items():
        got = loaded.state_dict()[key]
        assert got.dtype == value.dtype and torch.isfinite(got.float()).all()
        expected = value.half().float() if value.is_floating_point() and key not in kept else value
        assert torch.equal(got, expected), key
