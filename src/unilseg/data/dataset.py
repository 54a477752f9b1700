"""PyTorch datasets: Samples or generated scenes -> letterboxed tensors, tokens and masks.

Every random choice (which text of a sample, which instruction of a scene) is drawn
from a generator seeded by (seed, index, draw), never from global state, so a batch is
a pure function of its keys: training resumes bit-exactly and workers need no seeding.
A key is an index, or an (index, draw) pair where `draw` counts the passes over the data.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from unilseg.data.manifest import Sample, load_image, load_mask
from unilseg.data.synthetic import (
    GRANULARITIES,
    NO_TARGET,
    Instruction,
    Scene,
    SceneConfig,
    absent_instructions,
    generate_scene,
    instructions,
    make_sample,
    render,
    sample_instruction,
)
from unilseg.data.synthetic import target_mask as synthetic_mask
from unilseg.inference.transforms import letterbox_affine, preprocess
from unilseg.model.spec import InferenceSpec
from unilseg.model.tokenizer import tokenize

Key = int | tuple[int, int]


def _split_key(key: Key) -> tuple[int, int]:
    return (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)


def encode_example(image_bgr: np.ndarray, mask: np.ndarray, text: str, spec: InferenceSpec) -> dict[str, torch.Tensor]:
    """-> image (3, S, S) normalised RGB, tokens (L,) int64, mask (1, S, S) float32 in [0, 1] (letterboxed)."""
    x, _ = preprocess(image_bgr, spec.size, spec.mean, spec.std)
    forward, _ = letterbox_affine(*mask.shape[:2], spec.size)
    target = cv2.warpAffine(mask.astype(np.float32), forward, (spec.size, spec.size), flags=cv2.INTER_LINEAR)
    tokens = tokenize([text], spec.context_length, warn=False)[0]
    return {"image": x[0], "tokens": tokens, "mask": torch.from_numpy(target)[None]}


class SampleDataset(Dataset):
    """Training items from Samples: one of each sample's texts, chosen per (index, draw)."""

    def __init__(self, samples: Sequence[Sample], spec: InferenceSpec, seed: int = 0) -> None:
        self.samples, self.spec, self.seed = samples, spec, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        index, draw = _split_key(key)
        sample = self.samples[index]
        pick = np.random.default_rng([self.seed, index, draw]).integers(len(sample.expressions))
        text = sample.expressions[int(pick)]
        image = load_image(sample)
        return encode_example(image, load_mask(sample, image.shape), text, self.spec)


class SyntheticDataset(Dataset):
    """Training items from generated scenes: scene `index` of stream `seed`, instruction number `draw`."""

    def __init__(
        self, num_scenes: int, seed: int, spec: InferenceSpec, scene: SceneConfig | None = None,
        weights: dict[str, float] | None = None, absent: float = 0.0,
    ) -> None:
        self.num_scenes, self.seed, self.spec = num_scenes, seed, spec
        self.scene = scene or SceneConfig()
        self.weights = weights  # granularity sampling weights (None: uniform)
        self.absent = absent  # the chance that a draw names nothing in its scene (an empty target)

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        index, draw = _split_key(key)
        s = make_sample(self.seed, index, draw, config=self.scene, weights=self.weights, absent=self.absent)
        return encode_example(np.ascontiguousarray(s.image[:, :, ::-1]), s.mask, s.text, self.spec)


class SyntheticSamples(Sequence):
    """A fixed evaluation set: for each of `num_scenes` scenes, `per_scene` instructions (granularities in
    turn) and then `absent` that name nothing in it (granularity NO_TARGET, an empty mask; their phrasing's
    granularity in `meta`). The present ones are the same whatever `absent` is."""

    def __init__(self, num_scenes: int, seed: int, per_scene: int = 4, scene: SceneConfig | None = None,
                 absent: int = 0) -> None:
        self.num_scenes, self.seed, self.per_scene, self.absent = num_scenes, seed, per_scene, absent
        self.scene = scene or SceneConfig()
        self._cache: tuple[int, Any] | None = None
        self._absent: tuple[int, Any] | None = None  # (scene index, its absent_instructions), made on first need

    def __len__(self) -> int:
        return self.num_scenes * (self.per_scene + self.absent)

    def __getitem__(self, k: int) -> Sample:  # type: ignore[override]
        scene, image, labels, inst = self.instruction(k)
        index, slot = divmod(k, self.per_scene + self.absent)
        no_target = slot >= self.per_scene
        return Sample(
            image=image, mask=synthetic_mask(scene, labels, inst.target), expressions=[inst.text],
            granularity=NO_TARGET if no_target else inst.granularity, source="synthetic",
            id=f"{self.seed}/{index}/{slot}", origin=f"synthetic seed {self.seed} scene {index}",
            meta={"phrasing": inst.granularity} if no_target else {},
        )

    def instruction(self, k: int) -> tuple[Scene, np.ndarray, np.ndarray, Instruction]:
        """Sample k's scene, image RGB uint8 (S, S, 3), labels uint16 (S, S) and instruction (with its target)."""
        if not 0 <= k < len(self):
            raise IndexError(k)
        index, slot = divmod(k, self.per_scene + self.absent)
        if self._cache is None or self._cache[0] != index:
            scene = generate_scene(self.seed, index, self.scene)
            image, labels = render(scene)
            self._cache = (index, (scene, image, labels, instructions(scene, labels)))
        scene, image, labels, options = self._cache[1]
        if slot >= self.per_scene:  # a no-target instruction: granularities in turn over the scenes
            if self._absent is None or self._absent[0] != index:
                self._absent = (index, absent_instructions(scene))
            options = self._absent[1]
            granularity = GRANULARITIES[(index + slot - self.per_scene) % len(GRANULARITIES)]
            rng = np.random.default_rng([self.seed, index, slot, 4])
            return scene, image, labels, sample_instruction(options, rng, granularity)
        granularity = GRANULARITIES[slot % len(GRANULARITIES)]
        rng = np.random.default_rng([self.seed, index, slot, 2])
        return scene, image, labels, sample_instruction(options, rng, granularity if options.get(granularity) else None)


class EvalDataset(Dataset):
    """One item per (sample, expression): the letterboxed image, tokens, and the mask in the original frame."""

    def __init__(self, samples: Sequence[Sample], spec: InferenceSpec) -> None:
        self.samples, self.spec = samples, spec
        self.items = [(i, j) for i in range(len(samples)) for j in range(len(samples[i].expressions))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        i, j = self.items[k]
        sample = self.samples[i]
        image = load_image(sample)
        x, inverse = preprocess(image, self.spec.size, self.spec.mean, self.spec.std)
        text = sample.expressions[j]
        return {
            "image": x[0], "tokens": tokenize([text], self.spec.context_length, warn=False)[0],
            "inverse": inverse, "gt": load_mask(sample, image.shape), "text": text,
            "granularity": sample.granularity, "source": sample.source, "id": sample.id,
        }


def collate_eval(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors; keep per-item arrays and strings as lists."""
    out: dict[str, Any] = {k: torch.stack([it[k] for it in items]) for k in ("image", "tokens")}
    for k in items[0]:
        if k not in out:
            out[k] = [it[k] for it in items]
    return out
