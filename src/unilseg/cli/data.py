"""`python -m unilseg.data SPEC --out manifest.jsonl`: write any data spec as a unified JSONL manifest.

Samples that live in memory (generated scenes) are saved as PNGs beside the manifest
(images/<content hash>.png, masks/<row>.png); file-based ones keep their paths.

    python -m unilseg.data synthetic:250:1 --out heldout/manifest.jsonl
    python -m unilseg.data refcoco:val --refer-root data/refer --out refcoco_val.jsonl
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from unilseg.cli.args import add_data_args, guarded_main


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unilseg.data", description="Write a data spec as a JSONL manifest.")
    p.add_argument("data", help="data spec: refcoco:val, a folder with texts.csv, synthetic:SCENES[:SEED[:SIZE]], ...")
    p.add_argument("--out", required=True, help="manifest path (.jsonl); PNGs for generated data go beside it")
    add_data_args(p)
    return p


def export(spec: str, out: str, refer_root: str | None = None, coco_images: str | None = None) -> int:
    """Write the samples of `spec` to the manifest `out`; returns the number of rows."""
    import dataclasses
    import hashlib
    from pathlib import Path

    import numpy as np

    from unilseg.data.manifest import write_manifest
    from unilseg.data.sources import open_samples
    from unilseg.errors import UnilsegError
    from unilseg.io.writers import check_dir_target, encode_image, encode_mask, write_atomic

    if not out.endswith(".jsonl"):
        raise UnilsegError(f"--out {out}: a manifest is a .jsonl file")
    out_path = Path(out)
    check_dir_target(out_path.parent, "--out")
    if out_path.is_dir():
        raise UnilsegError(f"--out {out} is a directory; give the manifest's file name")
    rows = []
    for k, sample in enumerate(open_samples(spec, refer_root, coco_images)):
        if isinstance(sample.image, np.ndarray):
            bgr = np.ascontiguousarray(sample.image[:, :, ::-1])
            path = out_path.parent / "images" / f"{hashlib.sha1(bgr.tobytes()).hexdigest()[:16]}.png"
            if not path.exists():
                write_atomic(path, encode_image(path, bgr))
            sample = dataclasses.replace(sample, image=path)
        if isinstance(sample.mask, np.ndarray):
            path = out_path.parent / "masks" / f"{k:06d}.png"
            write_atomic(path, encode_mask(sample.mask, "png"))
            sample = dataclasses.replace(sample, mask=path)
        rows.append(sample)
    return write_manifest(out_path, rows)


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)

    def run() -> None:
        n = export(args.data, args.out, args.refer_root, args.coco_images)
        print(f"wrote {n} rows to {args.out}")

    return guarded_main(run)
