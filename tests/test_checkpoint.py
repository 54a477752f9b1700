"""Strict, safe loading: the key layout, and refusal of wrong, truncated or unsafe files."""
import os
import pickle

import pytest
import torch
from conftest import FIXTURES, ROOT

from unilseg.errors import CheckpointError
from unilseg.model.build import build_model, load_model
from unilseg.model.checkpoint import read_checkpoint, remap_official_keys

CONFIG = ROOT / "src/unilseg/configs/unilseg20.yaml"


def official_keys() -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (FIXTURES / "keys.tsv").read_text().splitlines():
        key, shape, _ = line.split("\t")
        out[key] = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return out


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return build_model(CONFIG)


def test_model_keys_equal_official_minus_clip_image_tower(meta_model):
    official = official_keys()
    assert len(official) == 931
    wanted = {k.removeprefix("module."): s for k, s in official.items() if not k.startswith("module.backbone.visual.")}
    assert len(wanted) == 779
    assert sum(k.startswith("backbone_visual.") for k in wanted) == 357
    got = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    assert got == wanted


def test_remap_strips_prefix_and_drops_unused():
    sd = {"module.backbone.visual.proj": 1, "module.backbone_visual.norm0.weight": 2, "fusion_proj.bias": 3}
    assert remap_official_keys(sd) == {"backbone_visual.norm0.weight": 2, "fusion_proj.bias": 3}


def _small_official(meta_model) -> dict:
    return {"module." + k: torch.zeros(v.shape, dtype=v.dtype) for k, v in meta_model.state_dict().items()}


@pytest.mark.slow  # each writes a full-size checkpoint of zeros
@pytest.mark.parametrize("defect", ["missing", "extra", "shape"])
def test_mismatched_checkpoint_is_refused(meta_model, tmp_path, defect):
    sd = _small_official(meta_model)
    if defect == "missing":
        del sd["module.pixel_decoder.layer_1.0.weight"]
        match = "missing: pixel_decoder.layer_1.0.weight"
    elif defect == "extra":
        sd["module.pixel_decoder.extra.weight"] = torch.zeros(3)
        match = "unexpected: pixel_decoder.extra.weight"
    else:
        sd["module.fusion_proj.bias"] = torch.zeros(7)
        match = r"wrong shape: fusion_proj.bias \(7,\) != \(1024,\)"
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=match):
        load_model(path, CONFIG)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_code_carrying_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _RunsCode()}, path)
    refusal = (r"^refusing to load .*: it holds Python objects other than tensors, which could run code "
               r"\(weights_only=True\); use a plain state-dict checkpoint$")
    with pytest.raises(CheckpointError, match=refusal):
        read_checkpoint(path)
    legacy = tmp_path / "evil_legacy.pth"
    with open(legacy, "wb") as f:
        pickle.dump(_RunsCode(), f)
    with pytest.raises(CheckpointError, match=refusal):
        read_checkpoint(legacy)


HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"
RANDOM = bytes.fromhex("cd072cd8be6f9f62ac4c09c28206e7e3") * 4  # neither zip, pickle nor safetensors


@pytest.mark.parametrize(
    "data, message",
    [
        (HTML, "not a PyTorch checkpoint: it starts with '<!DOCTYPE html><' (an HTML page, perhaps a failed "
               "download); download the file again"),
        (b"\n  <html lang='en'>\n" + b"x" * 600, 'not a PyTorch checkpoint: it starts with "\\n  <html lang=\'" '
                                                "(an HTML page, perhaps a failed download); download the file again"),
        (RANDOM, "not a PyTorch checkpoint: it starts with '\\xcd\\x07,\\xd8' (unknown data; a PyTorch checkpoint "
                 "starts with 'PK' or '\\x80'); download the file again"),
        (b"Quota exceeded\n", "not a PyTorch checkpoint: it starts with 'Quota exceeded\\n' (text, perhaps an error "
                              "page from a failed download); download the file again"),
        (b"", "not a PyTorch checkpoint: the file is empty (perhaps a failed download); download it again"),
        (b"PK", "the file is truncated (2 bytes); download it again"),
    ],
    ids=["html", "html-indented", "random-bytes", "text", "empty", "zip-signature-cut"],
)
def test_file_that_is_not_a_checkpoint_says_so(tmp_path, data, message):
    path = tmp_path / "UniLSeg20_no_finetune.pth"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert text.endswith(message) and text.startswith((f"{path} is ", f"cannot read {path}: ")), text
    assert "\n" not in text and "refusing" not in text


def test_truncated_checkpoint_is_refused(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"a": torch.randn(1000, 100)}}, good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(bad)


def test_missing_checkpoint_names_the_fix(tmp_path):
    with pytest.raises(CheckpointError, match="weights file not found"):
        read_checkpoint(tmp_path / "nope.pth")


@pytest.mark.slow
def test_loaded_model_is_on_cpu_in_eval_mode_without_meta_tensors(seeded_model):
    assert not seeded_model.training
    assert all(t.device.type == "cpu" for t in seeded_model.state_dict().values())
