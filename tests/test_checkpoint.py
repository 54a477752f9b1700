"""Strict, safe loading: the key layout, and refusal of wrong, truncated or unsafe files."""
import os
import pickle

import pytest
import torch
from conftest import FIXTURES, ROOT

from unilseg.build import build_model, load_model
from unilseg.checkpoint import read_checkpoint, remap_official_keys
from unilseg.errors import CheckpointError

CONFIG = ROOT / "unilseg/configs/unilseg20.yaml"


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
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(path)
    legacy = tmp_path / "evil_legacy.pth"
    with open(legacy, "wb") as f:
        pickle.dump(_RunsCode(), f)
    with pytest.raises(CheckpointError):
        read_checkpoint(legacy)


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


def test_loaded_model_is_on_cpu_in_eval_mode_without_meta_tensors(seeded_model):
    assert not seeded_model.training
    assert all(t.device.type == "cpu" for t in seeded_model.state_dict().values())
