"""Data specs, the one place that turns a `--data` string into samples or a training dataset.

    path/to/manifest.jsonl           the unified format (manifest.py)
    path/to/folder  or  texts.csv    images + masks + a CSV of texts (folder.py)
    refcoco:val  refcoco+:testA  refcocog:test  refcocog:google:val
                                     the refer layout under --refer-root (refcoco.py)
    grefcoco:val  grefcoco:testA     gRefCOCO (train, val, testA, testB) under --refer-root:
                                     grefcoco/grefs(unc).json + instances.json (grefcoco.py);
                                     texts naming several objects (the union) or none
                                     (granularity "no-target", empty masks)
    synthetic:SCENES[:SEED[:SIZE]][:absent=K]
                                     generated scenes (synthetic/), SIZE pixels square
                                     (default 192); training draws a fresh instruction
                                     per pass (train.absent_share of them name nothing),
                                     evaluation takes 4 per scene, one per granularity,
                                     and K more per scene that name nothing in it
                                     (granularity "no-target", empty masks)
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch.utils.data import Dataset

from unilseg.data.dataset import SampleDataset, SyntheticDataset, SyntheticSamples
from unilseg.data.manifest import Sample
from unilseg.data.synthetic import GRANULARITIES, SceneConfig
from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path
from unilseg.model.spec import InferenceSpec

REFCOCO_PREFIXES = ("refcoco:", "refcoco+:", "refcocog:")
GREFCOCO_PREFIX = "grefcoco:"


def _synthetic_args(spec: str, absent_allowed: bool = False) -> tuple[int, int, SceneConfig, int]:
    """'synthetic:SCENES[:SEED[:SIZE]][:absent=K]' -> (scenes, seed, scene config, K no-target texts per scene)."""
    parts = spec.split(":")[1:]
    absent = 0
    if absent_allowed and parts and parts[-1].startswith("absent="):
        absent_text = parts.pop()[len("absent="):]
        absent = int(absent_text) if absent_text.isdigit() else -1
    usage = (f"bad data spec {spec!r}; use synthetic:SCENES[:SEED[:SIZE]]" + ("[:absent=K]" if absent_allowed else "")
             + ", e.g. synthetic:250:1" + (":absent=1" if absent_allowed else ""))
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UnilsegError(usage) from None
    scenes, seed, size = values + [1000, 0, SceneConfig.size][len(values):]
    if len(values) > 3 or scenes <= 0 or size < 32 or not 0 <= absent <= 16:
        raise UnilsegError(usage + " (SCENES > 0, SIZE >= 32, 0 <= K <= 16)")
    return scenes, seed, SceneConfig(size=size), absent


def open_samples(
    spec: str, refer_root: str | Path | None = None, coco_images: str | Path | None = None
) -> Sequence[Sample]:
    """The Samples a data spec names (see the module docstring)."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        scenes, seed, scene, absent = _synthetic_args(spec, absent_allowed=True)
        return SyntheticSamples(scenes, seed, scene=scene, absent=absent)
    if spec.startswith(REFCOCO_PREFIXES):
        from unilseg.data.refcoco import load_refcoco

        dataset, *rest = spec.split(":")
        if len(rest) not in (1, 2) or not rest[-1]:
            raise UnilsegError(f"bad data spec {spec!r}; use DATASET:SPLIT or DATASET:SPLIT_BY:SPLIT, e.g. refcoco:val")
        if refer_root is None:
            raise UnilsegError(f"--data {spec} needs --refer-root (the refer data folder holding {dataset}/)")
        split_by = rest[0] if len(rest) == 2 else None
        return load_refcoco(refer_root, dataset, rest[-1], split_by, images=coco_images)
    if spec.startswith(GREFCOCO_PREFIX):
        from unilseg.data.grefcoco import SPLITS, load_grefcoco

        split = spec[len(GREFCOCO_PREFIX):]
        if not split or ":" in split:
            raise UnilsegError(f"bad data spec {spec!r}; use grefcoco:SPLIT ({', '.join(SPLITS)}), e.g. grefcoco:val")
        if refer_root is None:
            raise UnilsegError(f"--data {spec} needs --refer-root (the refer data folder holding grefcoco/)")
        return load_grefcoco(refer_root, split, images=coco_images)
    path = user_path(spec)
    if path.suffix == ".jsonl":
        from unilseg.data.manifest import read_manifest

        return read_manifest(path)
    if path.is_dir() or path.suffix == ".csv":
        from unilseg.data.folder import load_folder

        return load_folder(path)
    raise UnilsegError(
        f"cannot tell what data {spec!r} is; give a .jsonl manifest, a folder with texts.csv, "
        "refcoco:SPLIT / refcoco+:SPLIT / refcocog:SPLIT, grefcoco:SPLIT, or synthetic:SCENES[:SEED]"
    )


def open_label_maps(spec: str, classes: Sequence[str] | None = None) -> tuple[Sequence, list[tuple[str, str]]]:
    """Label-map ground truth a data spec names -> (items (image RGB uint8, class indices (H, W), id),
    the default (name, instruction) classes). Only generated scenes have it so far."""
    if spec == "synthetic" or spec.startswith("synthetic:"):
        from unilseg.data.synthetic import SEMANTIC_CLASSES, SEMANTIC_INSTRUCTIONS, SyntheticLabelMaps

        scenes, seed, scene, _ = _synthetic_args(spec)
        names = tuple(classes) if classes is not None else SEMANTIC_CLASSES
        try:
            items = SyntheticLabelMaps(scenes, seed, names, scene)
        except ValueError as e:
            raise UnilsegError(f"--data {spec}: {e}") from None
        return items, [(name, SEMANTIC_INSTRUCTIONS[name]) for name in SEMANTIC_CLASSES]
    raise UnilsegError(f"--task semantic needs label-map ground truth; so far only generated scenes give it "
                       f"(synthetic:SCENES[:SEED]), not {spec!r}")


def train_dataset(
    spec: str, input_spec: InferenceSpec, seed: int = 0, refer_root: str | Path | None = None,
    coco_images: str | Path | None = None, granularity_weights: dict[str, float] | None = None,
    absent_share: float = 0.0,
) -> Dataset:
    """A training dataset: generated scenes draw a fresh instruction on each pass; others pick one of their texts.

    `granularity_weights` ({"object": 3, "part": 3, "group": 2, "stuff": 1}) and `absent_share` (the chance that
    a draw names nothing in its scene) apply to generated scenes only.
    """
    if not 0.0 <= float(absent_share) < 1.0:
        raise UnilsegError(f"train.absent_share must be a number from 0 to below 1, not {absent_share!r}")
    if spec == "synthetic" or spec.startswith("synthetic:"):
        scenes, stream, scene, _ = _synthetic_args(spec)
        if granularity_weights is not None:
            unknown = set(granularity_weights) - set(GRANULARITIES)
            if unknown or any(float(w) < 0 for w in granularity_weights.values()):
                raise UnilsegError(
                    f"train.granularity_weights must map {', '.join(GRANULARITIES)} to weights >= 0; "
                    f"got {granularity_weights}"
                )
        return SyntheticDataset(scenes, stream, input_spec, scene, granularity_weights, float(absent_share))
    if absent_share:
        raise UnilsegError(f"train.absent_share applies to generated scenes (synthetic:...) only, not to {spec!r}; "
                           "add samples with empty masks to the data instead")
    return SampleDataset(open_samples(spec, refer_root, coco_images), input_spec, seed)
