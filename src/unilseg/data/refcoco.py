"""RefCOCO, RefCOCO+ and RefCOCOg in the standard `refer` layout -> Samples.

    DATA/refcoco/refs(unc).p   DATA/refcoco/instances.json
    DATA/refcoco+/refs(unc).p  DATA/refcoco+/instances.json
    DATA/refcocog/refs(umd).p  DATA/refcocog/instances.json   (also refs(google).p)
    DATA/images/mscoco/images/train2014/COCO_train2014_*.jpg

One Sample per referred object, with all its sentences as expressions (evaluation
scores each sentence); the mask is the COCO annotation rasterised to RLE.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

from unilseg.data.manifest import Sample
from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path

DATASETS = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
SPLITS = {"unc": ("train", "val", "testA", "testB"), "umd": ("train", "val", "test"), "google": ("train", "val")}
DEFAULT_IMAGES = Path("images/mscoco/images/train2014")


class _DataOnlyUnpickler(pickle.Unpickler):
    """The refs files are plain lists and dicts; anything that names a class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: refs files hold only plain data")


def read_refs(path: str | Path) -> list[dict]:
    """Read a `refs(*).p` pickle (Python 2 or 3) without executing anything."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            refs = _DataOnlyUnpickler(f, encoding="utf-8", errors="replace").load()
    except OSError as e:
        raise UnilsegError(f"cannot read {path}: {e.strerror}; is this the refer data folder?") from e
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UnilsegError(f"cannot read {path} as a refer refs file ({e})") from e
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise UnilsegError(f"{path} is not a refer refs file: expected a list of dicts")
    return refs


def annotation_rle(segmentation: list | dict, height: int, width: int) -> dict:
    """A COCO `segmentation` (polygons, uncompressed or compressed RLE) -> compressed RLE, str counts."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons of one object: rasterise each, then merge
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = dict(segmentation)
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(height), int(width)], "counts": counts}


def read_instances(path: Path) -> tuple[dict[int, dict], dict[int, dict]]:
    """A COCO instances file -> (annotations by id, images by id)."""
    try:
        instances = json.loads(path.read_text(encoding="utf-8"))
        anns = {a["id"]: a for a in instances["annotations"]}
        imgs = {i["id"]: i for i in instances["images"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnilsegError(f"{path} is not a COCO instances file ({e.__class__.__name__}: {e})") from e
    return anns, imgs


def coco_image(image_dir: Path, img: dict, where: str, check_files: bool = True) -> Path:
    """The file of an instances file's image entry under `image_dir` (checked to exist if `check_files`)."""
    path = image_dir / img["file_name"]
    if check_files and not path.is_file():
        raise UnilsegError(f"{where}: image {path} not found; pass COCO's train2014 folder as --coco-images")
    return path


def load_refcoco(
    data_root: str | Path, dataset: str = "refcoco", split: str = "val", split_by: str | None = None,
    images: str | Path | None = None, check_files: bool = True,
) -> list[Sample]:
    """Samples of one split. `split_by` defaults to unc (umd for refcocog); `images` to
    DATA/images/mscoco/images/train2014."""
    if dataset not in DATASETS:
        raise UnilsegError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    split_by = split_by or DATASETS[dataset]
    if split_by not in SPLITS:
        raise UnilsegError(f"unknown split_by {split_by!r}; use one of {', '.join(SPLITS)}")
    if split not in SPLITS[split_by]:
        raise UnilsegError(f"{dataset} ({split_by}) has no split {split!r}; use one of {', '.join(SPLITS[split_by])}")
    root = user_path(data_root)
    folder = root / dataset
    refs_path, inst_path = folder / f"refs({split_by}).p", folder / "instances.json"
    for p in (refs_path, inst_path):
        if not p.is_file():
            raise UnilsegError(f"{p} not found; --refer-root must be the refer data folder (holding {dataset}/)")
    image_dir = user_path(images) if images is not None else root / DEFAULT_IMAGES
    refs = [r for r in read_refs(refs_path) if r.get("split") == split]
    anns, imgs = read_instances(inst_path)
    samples = []
    for r in refs:
        where = f"{refs_path} ref_id {r.get('ref_id')}"
        try:
            ann, img = anns[r["ann_id"]], imgs[r["image_id"]]
            sentences = [s["sent"] for s in r["sentences"]]
            rle = annotation_rle(ann["segmentation"], img["height"], img["width"])
        except KeyError as e:
            raise UnilsegError(f"{where}: {e} not found in the ref or in {inst_path}") from e
        image_path = coco_image(image_dir, img, where, check_files)
        samples.append(Sample(
            image=image_path, mask=rle, expressions=sentences, granularity="object", source=dataset,
            id=str(r["ref_id"]), origin=where,
            meta={"split": split, "ann_id": r["ann_id"], "image_id": r["image_id"],
                  "sent_ids": [s.get("sent_id") for s in r["sentences"]]},
        ))
    if not samples:
        raise UnilsegError(f"{refs_path} has no refs in split {split!r}")
    return samples
