"""Parity with the authors' code on seeded weights: tokens, logits, soft maps and CLI masks."""
import cv2
import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, golden_cases

from unilseg.cli.segment import main
from unilseg.inference.transforms import postprocess, preprocess, read_image
from unilseg.model.tokenizer import tokenize

pytestmark = pytest.mark.slow  # every test runs the seeded full-size UniLSeg-20

CASES = golden_cases()


@pytest.fixture(scope="module")
def outputs(seeded_model):
    """Logits and soft map per case, through the public preprocess/model/postprocess path."""
    out = {}
    for case in CASES:
        image = read_image(FIXTURES / case["img"])
        x, inverse = preprocess(image, 480)
        tokens = tokenize(case["exp"], warn=False)
        with torch.inference_mode():
            logits = seeded_model(x, tokens)
        mask, prob = postprocess(logits, inverse, image.shape[:2], 0.35)
        out[case["name"]] = (logits.numpy(), mask, prob)
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_logits_match_golden(outputs, case):
    logits = outputs[case["name"]][0]
    expected = np.load(FIXTURES / f"{case['name']}.logits.npy")
    assert logits.shape == expected.shape == (1, 1, 120, 120)
    assert np.abs(logits - expected).max() <= 1e-3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_soft_map_matches_golden(outputs, case):
    prob = outputs[case["name"]][2]
    expected = np.load(FIXTURES / f"{case['name']}.prob.npy")
    assert prob.shape == expected.shape and prob.dtype == np.float32
    assert np.abs(prob - expected).max() <= 1e-3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["name"])
def test_cli_mask_matches_golden(seeded_checkpoint, tmp_path, case):
    out, prob_out = tmp_path / "mask.png", tmp_path / "prob.npy"
    code = main([
        "--img", str(FIXTURES / case["img"]), "--exp", case["exp"], "--sp", str(out),
        "--weights", str(seeded_checkpoint), "--config", str(ROOT / "src/unilseg/configs/unilseg20.yaml"),
        "--device", "cpu", "--save-prob", str(prob_out),
    ])
    assert code == 0
    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    expected = cv2.imread(str(FIXTURES / f"{case['name']}.mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 255}
    assert mask.shape == expected.shape
    assert (mask != expected).mean() <= 1e-3
    assert np.abs(np.load(prob_out) - np.load(FIXTURES / f"{case['name']}.prob.npy")).max() <= 1e-3
