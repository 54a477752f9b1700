"""bf16 inference: heavy layers really stored in bf16, masks close to fp32 on the golden cases."""
import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, golden_cases
from tiny import TINY_CONFIG

from unilseg.errors import UnilsegError
from unilseg.inference.backends.precision import (
    LOW_PRECISION_ATTENTION,
    LOW_PRECISION_LAYERS,
    apply_precision,
    model_precision,
    native_cpu_bf16,
)
from unilseg.inference.predictor import Predictor
from unilseg.inference.transforms import read_image
from unilseg.model.build import build_model, load_model

CASES = golden_cases()


@pytest.fixture(scope="module")
def bf16_predictor(seeded_checkpoint):
    """A second copy of the seeded full-size model (the session's fp32 one stays untouched)."""
    model = load_model(seeded_checkpoint, ROOT / "src" / "unilseg" / "configs" / "unilseg20.yaml", device="cpu")
    return Predictor(model, precision="bf16")


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_bf16_masks_match_fp32_on_golden_cases(bf16_predictor, case):
    expected_prob = np.load(FIXTURES / f"{case['name']}.prob.npy")  # fp32, the authors' code on the same weights
    fp32 = expected_prob > 0.35
    assert np.array_equal(fp32, cv2.imread(str(FIXTURES / f"{case['name']}.mask.png"), cv2.IMREAD_UNCHANGED) > 0)
    bf16_predictor.set_image(read_image(FIXTURES / case["img"]))
    pred = bf16_predictor.predict(case["exp"])[0]
    assert pred.prob.dtype == np.float32 and pred.mask.shape == fp32.shape
    if fp32.mean() < 1e-3:  # near-empty mask (coffee_cup_handle): IoU is meaningless, require near-empty too
        assert pred.mask.mean() < 1e-3
    else:
        iou = (pred.mask & fp32).sum() / (pred.mask | fp32).sum()
        assert iou >= 0.95, f"IoU {iou:.4f}"
    assert np.abs(pred.prob - expected_prob).mean() < 0.01


def test_only_heavy_layers_are_cast():
    model = build_model(TINY_CONFIG).eval()
    x, tokens = torch.randn(1, 3, 96, 96), torch.randint(1, 49000, (2, 17))
    with torch.inference_mode():
        ref = model(x.expand(2, -1, -1, -1), tokens)
    apply_precision(model, "bf16", torch.device("cpu"))
    assert model_precision(model) == "bf16"
    for name, p in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        # convolutions go bf16 only where the CPU has bf16 instructions (else they are ~400x slower)
        kinds = (torch.nn.Linear, torch.nn.Conv2d) if native_cpu_bf16() else (torch.nn.Linear,)
        layer = name.startswith(LOW_PRECISION_LAYERS) and type(module) in kinds
        attention = name.startswith(LOW_PRECISION_ATTENTION) and (".multihead_attn." in name or ".self_attn." in name)
        assert p.dtype == (torch.bfloat16 if layer or attention else torch.float32), name
    assert model.backbone.token_embedding.weight.dtype == torch.float32  # the text encoder stays fp32
    assert model.query_decoder.query_transformer.decoder.layers[0].linear1.weight.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters() if p.dtype == torch.bfloat16) > 0
    with torch.inference_mode():
        out = model(x.expand(2, -1, -1, -1), tokens)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 0 < (out - ref).abs().max() < 0.1 * ref.abs().max()  # rounded, not broken
    apply_precision(model, "bf16", torch.device("cpu"))  # idempotent
    with pytest.raises(UnilsegError, match="already cast to bf16"):
        Predictor(model, precision="fp32")
    assert Predictor(model).precision == "bf16"


def test_fp16_refused_on_cpu():
    with pytest.raises(UnilsegError, match="fp16 needs a GPU"):
        apply_precision(build_model(TINY_CONFIG), "fp16", torch.device("cpu"))
    with pytest.raises(UnilsegError, match="unknown precision"):
        apply_precision(build_model(TINY_CONFIG), "int8", torch.device("cpu"))
