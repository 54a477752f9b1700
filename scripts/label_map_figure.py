"""Make the docs' label-map picture: a held-out scene, its label map, the overlay and the truth.

    python scripts/label_map_figure.py [--model unilseg-demo] [--out docs/img/label_map.png]

The scene is the first of stream 777 (no training run uses it) with the sun, a house
and two more kinds of thing (a scene holds at most three kinds besides the sun). The
label map comes from one `tasks.labelmap.label_map` call with the seven synthetic classes and
their default instructions; the true label map from `semantic_labels`. Panels are
upscaled x2 with nearest-neighbour pixels.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from unilseg.data.synthetic import SEMANTIC_CLASSES, SEMANTIC_INSTRUCTIONS, generate_scene, render, semantic_labels
from unilseg.tasks.labelmap import label_map, make_legend, palette, render_label_overlay

HELD_OUT_SEED = 777
SCALE = 2


def find_full_scene() -> int:
    """The first scene of the held-out stream with the sun, a house and two more kinds of thing."""
    index = 0
    while True:
        kinds = {o.kind for o in generate_scene(HELD_OUT_SEED, index).objects}
        if {"sun", "house"} <= kinds and len(kinds) == 4:
            return index
        index += 1


def panel(image_bgr: np.ndarray, caption: str) -> np.ndarray:
    """Upscale and put a caption band above."""
    tile = cv2.resize(image_bgr, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    band = np.full((28, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption, (5, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([band, tile], 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unilseg-demo")
    p.add_argument("--out", type=Path, default=Path("docs/img/label_map.png"))
    args = p.parse_args()

    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model
    from unilseg.tasks.labelmap import ClassSpec

    index = find_full_scene()
    scene = generate_scene(HELD_OUT_SEED, index)
    image, shape_labels = render(scene)
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    classes = [ClassSpec(c, SEMANTIC_INSTRUCTIONS[c]) for c in SEMANTIC_CLASSES]
    predictor = Predictor(load_model(args.model), max_batch=len(classes))
    predictor.set_image(bgr)
    labels, legend = label_map(predictor, classes)
    truth = semantic_labels(scene, shape_labels)
    colors = palette(len(classes) + 1)[:, ::-1]  # BGR
    unions = [((labels == k) | (truth == k)).sum() for k in range(1, len(classes) + 1)]
    inter = [((labels == k) & (truth == k)).sum() / u if u else None for k, u in enumerate(unions, start=1)]
    present = [v for v in inter if v is not None]  # a class in neither map does not count (as in eval)
    big = cv2.resize(bgr, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    big_labels = cv2.resize(labels, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    overlay = render_label_overlay(big, big_labels, make_legend(big_labels, classes))
    row = np.concatenate([
        panel(bgr, f"scene {HELD_OUT_SEED}/{index}"),
        panel(colors[labels], f"label map (mIoU {100 * np.mean(present):.1f})"),
        np.concatenate([np.full((28, overlay.shape[1], 3), 255, np.uint8), overlay], 0),
        panel(colors[truth], "true label map"),
    ], 1)
    key = np.full((40, row.shape[1], 3), 255, np.uint8)
    x = 6
    for entry, iou in zip(legend[1:], inter):
        text = f"{entry.name} \"{entry.instruction}\" " + ("-" if iou is None else f"{100 * iou:.0f}")
        cv2.rectangle(key, (x, 12), (x + 14, 26), tuple(int(c) for c in entry.color[::-1]), -1)
        cv2.putText(key, text, (x + 18, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
        x += 22 + cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)[0][0] + 12
    figure = np.concatenate([row, key], 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), figure, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} (scene {HELD_OUT_SEED}/{index}; class IoU " +
          ", ".join(f"{e.name} {v:.2f}" for e, v in zip(legend[1:], inter) if v is not None) + ")")


if __name__ == "__main__":
    main()
