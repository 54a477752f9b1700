"""A tiny UniLSeg (96 px input, ~2M parameters) with seeded random weights, for fast batch tests.

Same network code as the full model, so batching, naming, writing and resuming are
tested on real forwards; parity with the authors' model is the golden tests' job.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

TINY_CONFIG = {
    "name": "test-tiny",
    "weights": None,
    "model": {
        "swin": {"embed_dim": 16, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 2, 4], "window_size": 3,
                 "patch_size": 4, "mlp_ratio": 2.0},
        "text": {"vocab_size": 49408, "width": 32, "layers": 2, "heads": 2, "max_positions": 17, "embed_dim": 32},
        "fusion_heads": 2,
        "pixel_decoder": {"conv_dim": 32, "mask_dim": 32, "heads": 2, "ffn_dim": 64, "sr_ratios": [8, 4, 2, 1]},
        "query_decoder": {"d_model": 32, "heads": 2, "ffn_dim": 64, "num_layers": 1},
    },
    "input": {"size": 96, "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711], "context_length": 17},
    "test": {"threshold": 0.5},
}


def write_tiny_model(directory: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write tiny.yaml and tiny.pth ({'state_dict': ...}, as a trained checkpoint is) -> (config, weights)."""
    from unilseg.model.build import build_model

    directory.mkdir(parents=True, exist_ok=True)
    config, weights = directory / "tiny.yaml", directory / "tiny.pth"
    config.write_text(yaml.safe_dump(TINY_CONFIG))
    torch.manual_seed(seed)
    torch.save({"state_dict": build_model(TINY_CONFIG).state_dict()}, weights)
    return config, weights


def write_images(directory: Path, count: int, seed: int = 0, start: int = 0) -> list[Path]:
    """`count` small PNGs of random sizes (40-90 px) with a few coloured shapes each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(start, start + count):
        h, w = (int(v) for v in rng.integers(40, 90, size=2))
        image = np.full((h, w, 3), rng.integers(0, 256, size=3), np.uint8)
        for _ in range(3):
            center = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(image, center, int(rng.integers(5, 25)), [int(c) for c in rng.integers(0, 256, 3)], -1)
        path = directory / f"img{i:03d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths
