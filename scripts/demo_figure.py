"""Make the demo scenes and the granularity figure from held-out generated scenes and the demo model.

    python scripts/demo_figure.py [--model unilseg-demo] [--out imgs] [--figures docs/img]

Writes imgs/demo_scene.png (a scene with a red house, for the README's first command and the docs' examples),
imgs/demo_scene_2.png, imgs/demo_scene_3.png, and docs/img/demo_granularity.png: per row a
scene with its instruction, the predicted mask and the true mask, two rows per
granularity (object, part, group, stuff). Scenes come from seed 777, which no training
run uses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from unilseg.data.synthetic import GRANULARITIES, generate_scene, instructions, render, target_mask

HELD_OUT_SEED = 777
TINT = np.array([255, 40, 200], np.float32)  # magenta overlay (RGB)


def overlay(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Tint the mask and draw its outline."""
    out = image_rgb.astype(np.float32)
    out[mask] = 0.45 * out[mask] + 0.55 * TINT
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def captioned(tile: np.ndarray, text: str, width: int = 240) -> np.ndarray:
    """Scale a tile to `width` and put a caption band above it."""
    tile = cv2.resize(tile, (width, width), interpolation=cv2.INTER_NEAREST)
    band = np.full((26, width, 3), 255, np.uint8)
    scale = 0.42 if len(text) < 34 else 0.36
    cv2.putText(band, text, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], 0)


def pick_examples(per_granularity: int) -> list[tuple[int, object]]:
    """Deterministic held-out (scene index, instruction) pairs, `per_granularity` of each."""
    picked: list[tuple[int, object]] = []
    for gi, g in enumerate(GRANULARITIES):
        index, n = 17 * gi, 0
        while n < per_granularity:
            scene = generate_scene(HELD_OUT_SEED, index)
            _, labels = render(scene)
            options = instructions(scene, labels).get(g) or []
            if options:
                alternatives = options[(index + n) % len(options)]
                picked.append((index, alternatives[index % len(alternatives)]))
                n += 1
            index += 1 + 11 * n  # spread the examples over different scenes
    return picked


def find_scene(kind: str, color: str, start: int = 0) -> int:
    index = start
    while True:
        scene = generate_scene(HELD_OUT_SEED, index)
        if any(o.kind == kind and o.color == color for o in scene.objects):
            return index
        index += 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unilseg-demo")
    p.add_argument("--weights", help="weights file (overrides --model)")
    p.add_argument("--out", type=Path, default=Path("imgs"), help="the demo scenes (inputs of the examples)")
    p.add_argument("--figures", type=Path, default=Path("docs/img"), help="the granularity figure")
    p.add_argument("--per-granularity", type=int, default=2)
    args = p.parse_args()

    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    args.out.mkdir(parents=True, exist_ok=True)
    for name, (kind, color, start) in {
        "demo_scene.png": ("house", "red", 0), "demo_scene_2.png": ("car", "blue", 40),
        "demo_scene_3.png": ("tree", "green", 80),
    }.items():
        image, _ = render(generate_scene(HELD_OUT_SEED, find_scene(kind, color, start)))
        cv2.imwrite(str(args.out / name), image[:, :, ::-1])

    predictor = Predictor(load_model(args.weights or args.model))
    rows = []
    for index, inst in pick_examples(args.per_granularity):
        scene = generate_scene(HELD_OUT_SEED, index)
        image, labels = render(scene)
        predictor.set_image(image, color="RGB")
        pred = predictor.predict(inst.text)[0].mask
        truth = target_mask(scene, labels, inst.target)
        iou = (pred & truth).sum() / max((pred | truth).sum(), 1)
        rows.append(np.concatenate([
            captioned(image, f"{inst.granularity}: \"{inst.text}\""),
            captioned(overlay(image, pred), f"predicted (IoU {iou:.2f})"),
            captioned(overlay(image, truth), "true mask"),
        ], 1))
    sep = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([r for row in rows for r in (row, sep)][:-1], 0)
    args.figures.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.figures / "demo_granularity.png"), grid[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.figures}/demo_granularity.png and the demo scenes in {args.out}/")


if __name__ == "__main__":
    main()
