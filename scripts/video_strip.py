"""Make the docs' video picture: frames of a generated clip with the demo model's masks.

    python scripts/video_strip.py [--model unilseg-demo] [--seed 5] [--clip 1] [--every 4]
                                   [--out docs/img/video_strip.png]

The clip (a scene whose objects move a few pixels per frame, `unilseg.data.synthetic.clip`)
is written to an mp4 and segmented through `tasks.video.segment_video`, as
`unilseg segment --video` does. One row per instruction of the clip, one column per
shown frame: the decoded frame with the predicted mask tinted and outlined (yellow), the
true mask's outline in white, and the frame's IoU.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np

from unilseg.data.synthetic.clip import CLIP_FPS, make_clip, write_mp4
from unilseg.eval.metrics import intersection_union, iou
from unilseg.io.writers import render_overlay
from unilseg.tasks.video import segment_video

TILE = 160
TINT_BGR = (200, 40, 255)  # magenta: visible on blue cars and the sky alike


def tile(frame_bgr: np.ndarray, mask: np.ndarray, truth: np.ndarray, caption: str) -> np.ndarray:
    """One frame: predicted mask tinted, true outline in white, scaled to TILE, caption band above."""
    out = render_overlay(frame_bgr, mask, tint_bgr=TINT_BGR)
    out = cv2.resize(out, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    big = cv2.resize(truth.astype(np.uint8), (TILE, TILE), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    band = np.full((22, TILE, 3), 255, np.uint8)
    cv2.putText(band, caption, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([band, out], 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="unilseg-demo")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--clip", type=int, default=1)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--every", type=int, default=4, help="show every Nth frame")
    p.add_argument("--out", type=Path, default=Path("docs/img/video_strip.png"))
    args = p.parse_args()

    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    predictor = Predictor(load_model(args.model))
    clip = make_clip(args.seed, args.clip, args.frames)
    texts = [i.text for i in clip.instructions]
    truth = [clip.masks(k) for k in range(len(texts))]
    rows: list[list[np.ndarray]] = [[] for _ in texts]
    with tempfile.TemporaryDirectory() as tmp:
        mp4 = write_mp4(clip.frames, Path(tmp) / "clip.mp4", CLIP_FPS)
        for frame in segment_video(predictor, mp4, texts, every=args.every):
            for k, pred in enumerate(frame.predictions):
                score = iou(*intersection_union(pred.mask, truth[k][frame.index]))
                rows[k].append(tile(frame.image, pred.mask, truth[k][frame.index],
                                    f"frame {frame.index} ({frame.time:.2f} s)  IoU {score:.2f}"))
    width = TILE * len(rows[0])
    blocks = []
    for text, row in zip(texts, rows):
        head = np.full((28, width, 3), 235, np.uint8)
        cv2.putText(head, f'"{text}"', (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (10, 10, 10), 1, cv2.LINE_AA)
        blocks += [head, np.concatenate(row, 1)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.concatenate(blocks, 0), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.out)


if __name__ == "__main__":
    main()
