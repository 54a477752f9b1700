"""gRefCOCO (GRES, Liu et al., CVPR 2023) in its released layout -> Samples.

    DATA/grefcoco/grefs(unc).json   DATA/grefcoco/instances.json   (grefs(unc).p also read)
    DATA/images/mscoco/images/train2014/COCO_train2014_*.jpg        (as RefCOCO's; --coco-images)

A ref names one object, several, or none: `ann_id` is a list of annotation ids, [-1] when
the text names nothing in the image (`no_target` true). One Sample per ref, with all its
sentences as expressions (evaluation scores each sentence), as `refcoco.py` does; the mask
is the union of the ref's annotations, empty for a no-target ref (granularity "no-target",
else "object"). Crowd annotations are left out of a union as gRefCOCO's own API
(`G_REFER.getMaskByRef`) leaves them out, unless the ref has nothing else: then, as in
RefCOCO, the crowd region is the target.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unilseg.data.manifest import Sample
from unilseg.data.refcoco import DEFAULT_IMAGES, annotation_rle, coco_image, read_instances, read_refs
from unilseg.data.synthetic import NO_TARGET
from unilseg.errors import UnilsegError
from unilseg.io.paths import user_path

SPLITS = ("train", "val", "testA", "testB")
FOLDER = "grefcoco"


def read_grefs(folder: Path) -> tuple[Path, list[dict]]:
    """grefs(unc).json (or the pickle grefs(unc).p) in `folder` -> (its path, its refs)."""
    path = folder / "grefs(unc).json"
    if not path.is_file() and (folder / "grefs(unc).p").is_file():
        pickled = folder / "grefs(unc).p"
        return pickled, read_refs(pickled)
    try:
        refs = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UnilsegError(f"cannot read {path}: {e.strerror}; is this the refer data folder?") from e
    except ValueError as e:
        raise UnilsegError(f"{path} is not JSON ({e})") from e
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise UnilsegError(f"{path} is not a gRefCOCO refs file: expected a list of objects")
    return path, refs


def ref_annotation_ids(ref: dict, where: str) -> list[int]:
    """The annotation ids a ref names ([] for a no-target ref)."""
    ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
    named = [a for a in ids if a != -1]
    if ref.get("no_target") and named:
        raise UnilsegError(f"{where}: no_target is set but ann_id names annotations {named}")
    if not named and not ids:
        raise UnilsegError(f"{where}: ann_id is empty; a no-target ref has [-1]")
    return named


def union_rle(anns: list[dict], height: int, width: int) -> dict:
    """The union of COCO annotations (non-crowd ones if there are any) -> compressed RLE, str counts;
    no annotations: an empty mask."""
    from pycocotools import mask as mask_utils

    kept = [a for a in anns if not a.get("iscrowd")] or anns
    if not kept:
        rle = mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
    else:
        rles = [annotation_rle(a["segmentation"], height, width) for a in kept]
        rle = rles[0] if len(rles) == 1 else mask_utils.merge(
            [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles], intersect=False)
    counts = rle["counts"]
    counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
    return {"size": [int(height), int(width)], "counts": counts}


def load_grefcoco(
    data_root: str | Path, split: str = "val", images: str | Path | None = None, check_files: bool = True
) -> list[Sample]:
    """Samples of one split (train, val, testA, testB) from DATA/grefcoco; `images` defaults to
    DATA/images/mscoco/images/train2014."""
    if split not in SPLITS:
        raise UnilsegError(f"grefcoco has no split {split!r}; use one of {', '.join(SPLITS)}")
    root = user_path(data_root)
    folder = root / FOLDER
    inst_path = folder / "instances.json"
    has_refs = (folder / "grefs(unc).json").is_file() or (folder / "grefs(unc).p").is_file()
    for p, found in ((folder / "grefs(unc).json", has_refs), (inst_path, inst_path.is_file())):
        if not found:
            raise UnilsegError(f"{p} not found; --refer-root must be the refer data folder (holding {FOLDER}/)")
    image_dir = user_path(images) if images is not None else root / DEFAULT_IMAGES
    refs_path, refs = read_grefs(folder)
    anns, imgs = read_instances(inst_path)
    samples = []
    for r in refs:
        if r.get("split") != split:
            continue
        where = f"{refs_path} ref_id {r.get('ref_id')}"
        try:
            ids = ref_annotation_ids(r, where)
            img = imgs[r["image_id"]]
            sentences = [s["sent"] for s in r["sentences"]]
            rle = union_rle([anns[a] for a in ids], img["height"], img["width"])
        except KeyError as e:
            raise UnilsegError(f"{where}: {e} not found in the ref or in {inst_path}") from e
        except (TypeError, ValueError) as e:
            raise UnilsegError(f"{where}: bad annotation ({e.__class__.__name__}: {e})") from e
        if not sentences:
            raise UnilsegError(f"{where}: the ref has no sentences")
        samples.append(Sample(
            image=coco_image(image_dir, img, where, check_files), mask=rle, expressions=sentences,
            granularity="object" if ids else NO_TARGET, source=FOLDER, id=str(r["ref_id"]), origin=where,
            meta={"split": split, "ann_id": ids or [-1], "image_id": r["image_id"], "targets": len(ids),
                  "sent_ids": [s.get("sent_id") for s in r["sentences"]]},
        ))
    if not samples:
        raise UnilsegError(f"{refs_path} has no refs in split {split!r}")
    return samples
