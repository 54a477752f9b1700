"""`python -m unilseg.data SPEC --out manifest.jsonl`: write any data spec as a unified JSONL manifest.

Samples that live in memory (generated scenes) are saved as PNGs beside the manifest
(images/<content hash>.png, masks/<row>.png); file-based ones keep their paths.

    python -m unilseg.data synthetic:250:1 --out heldout/manifest.jsonl
    python -m unilseg.data refcoco:val --refer-root data/refer --out refcoco_val.jsonl
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unilseg.data", description="Write a data spec as a JSONL manifest.")
    p.add_argument("data", help="data spec: refcoco:val, a folder with texts.csv, synthetic:SCENES[:SEED[:SIZE]], ...")
    p.add_argument("--out", required=True, help="manifest path (.jsonl); PNGs for generated data go beside it")
    p.add_argument("--refer-root", help="refer data folder (holding refcoco/, refcoco+/, refcocog/)")
    p.add_argument("--coco-images", help="COCO train2014 images (default REFER_ROOT/images/mscoco/images/train2014)")
    return p


def export(spec: str, out: str, refer_root: str | None = None, coco_images: str | None = None) -> int:
    """Write the samples of `spec` to the manifest `out`; returns the number of rows."""
    import dataclasses
    import hashlib
    from pathlib import Path

    import numpy as np

    from ..errors import UnilsegError
    from ..io import check_writable_dir, encode_image, write_bytes_atomic
    from .manifest import write_manifest
    from .sources import open_samples

    if not out.endswith(".jsonl"):
        raise UnilsegError(f"--out {out}: a manifest is a .jsonl file")
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out_path, "--out")
    rows = []
    for k, sample in enumerate(open_samples(spec, refer_root, coco_images)):
        if isinstance(sample.image, np.ndarray):
            bgr = np.ascontiguousarray(sample.image[:, :, ::-1])
            path = out_path.parent / "images" / f"{hashlib.sha1(bgr.tobytes()).hexdigest()[:16]}.png"
            if not path.exists():
                path.parent.mkdir(exist_ok=True)
                write_bytes_atomic(path, encode_image(path, bgr))
            sample = dataclasses.replace(sample, image=path)
        if isinstance(sample.mask, np.ndarray):
            path = out_path.parent / "masks" / f"{k:06d}.png"
            path.parent.mkdir(exist_ok=True)
            write_bytes_atomic(path, encode_image(path, sample.mask.astype(np.uint8) * 255))
            sample = dataclasses.replace(sample, mask=path)
        rows.append(sample)
    return write_manifest(out_path, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    from ..errors import UnilsegError

    try:
        n = export(args.data, args.out, args.refer_root, args.coco_images)
    except UnilsegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {n} rows to {args.out}")
    return 0
