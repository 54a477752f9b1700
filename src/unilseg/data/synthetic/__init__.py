"""Procedural scenes with instructions at every granularity and exact masks.

    >>> from unilseg.data.synthetic import make_sample
    >>> s = make_sample(seed=0, index=4)           # deterministic in (seed, index, draw)
    >>> s.image.shape, s.text, s.granularity, s.mask.shape
    ((192, 192, 3), 'the windows of the white house', 'part', (192, 192))

Scenes: a textured sky and ground, then houses (roof, wall, door, windows), trees
(trunk, crown), cars (body, windows, wheels), balls and a sun, in named colours and
sizes, with same-kind distractors. Instructions: object ("the small red house", "the
car below the tree"), part ("the wheels of the blue car"), group ("all trees", "every
green thing", "all the wheels") and stuff ("the sky", "the ground", "the background"). No-target
instructions ("the purple car" among red ones, "the boat", "the sea") name nothing in the scene: an
empty mask (`absent_instructions`; `make_sample(..., absent=0.15)` draws them that often).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unilseg.data.synthetic.instructions import (
    GRANULARITIES,
    NO_TARGET,
    Instruction,
    Target,
    absent_instructions,
    instructions,
    object_phrases,
    sample_instruction,
    target_instances,
    target_mask,
)
from unilseg.data.synthetic.scene import (
    OBJECT_COLORS,
    Scene,
    SceneConfig,
    SceneObject,
    generate_scene,
    label_table,
    render,
)
from unilseg.data.synthetic.semantic import SEMANTIC_CLASSES, SEMANTIC_INSTRUCTIONS, SyntheticLabelMaps, semantic_labels


@dataclass
class SyntheticSample:
    image: np.ndarray  # RGB uint8 (S, S, 3)
    mask: np.ndarray  # bool (S, S)
    text: str
    granularity: str
    scene: Scene
    labels: np.ndarray  # uint16 (S, S), see `render`


def make_sample(
    seed: int, index: int, draw: int = 0, granularity: str | None = None, config: SceneConfig | None = None,
    weights: dict[str, float] | None = None, absent: float = 0.0,
) -> SyntheticSample:
    """Scene `index` of stream `seed` with its `draw`-th randomly chosen instruction.

    `weights` ({"object": 3, ...}) makes some granularities likelier; by default each present one is equally likely.
    `absent`: the chance that the instruction names nothing in the scene (`absent_instructions`; empty mask).
    With absent 0 the samples are those of earlier versions, draw for draw.
    """
    config = config or SceneConfig()
    scene = generate_scene(seed, index, config)
    image, labels = render(scene)
    rng = np.random.default_rng([seed, index, draw, 1])
    if absent > 0:
        pick = np.random.default_rng([seed, index, draw, 3])  # its own stream: absent 0 leaves `rng` as it was
        if pick.random() < absent:
            rng, options = pick, absent_instructions(scene)
            inst = sample_instruction(options, rng, granularity if options.get(granularity or "") else None, weights)
            return SyntheticSample(image, target_mask(scene, labels, inst.target), inst.text, NO_TARGET, scene, labels)
    inst = sample_instruction(instructions(scene, labels), rng, granularity, weights)
    return SyntheticSample(image, target_mask(scene, labels, inst.target), inst.text, inst.granularity, scene, labels)


__all__ = [
    "GRANULARITIES", "NO_TARGET", "OBJECT_COLORS", "SEMANTIC_CLASSES", "SEMANTIC_INSTRUCTIONS", "Instruction", "Scene",
    "SceneConfig", "SceneObject", "SyntheticLabelMaps", "SyntheticSample", "Target", "generate_scene", "instructions",
    "absent_instructions", "label_table", "make_sample", "object_phrases", "render", "sample_instruction",
    "semantic_labels", "target_instances", "target_mask",
]
