"""Label maps: K classes on one image vs a K-instruction batch on it, and the merge's share.

    python benchmarks/labelmap.py [--repeat 3] [--threads N] [--clock wall|cpu] [--text-batch N]
                                  [--models demo,unilseg20] [--workdir /tmp/unilseg-bench]

For the shipped demo model (192-px input, on the 192x192 demo scene) and a full-size
UniLSeg-20 with seeded weights (480-px input, on the demo scene resized to 640x480), and
K = 4 and 8, each from one Swin pass:

- label map: `embed` + `tasks.labelmap.label_map(K classes)` (K soft maps -> class indices + legend);
- batch: `embed` + `Predictor.predict(K texts)` (K masks and soft maps, what a K-instruction
  CLI batch computes before writing);
- merge: `merge_soft_maps` + `make_legend` on K ready soft maps, the work a label map adds;
  its share is merge / label map (goal: < 5%).

Timings are the best of --repeat runs after a warm-up (cases interleaved). --clock cpu
(with --threads 1) counts this process's CPU time, which load from other jobs on a shared
machine does not inflate. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _common import ROOT, seeded_checkpoints

sys.path.insert(0, str(ROOT))

CLASSES = ["sky: the sky", "ground: the ground", "house: all houses", "tree: all trees", "car: all cars",
           "ball: all balls", "sun: the sun", "roof: all the roofs"]


def timed(fn: Callable[[], object], clock: Callable[[], float]) -> float:
    t0 = clock()
    fn()
    return clock() - t0


def bench_case(predictor, image: np.ndarray, k: int, clock, repeat: int) -> tuple[float, float, float]:
    """(label map, K-instruction batch, merge + legend) seconds for the first k classes, best of `repeat`."""
    from unilseg.tasks.labelmap import ClassSpec, label_map, make_legend, merge_soft_maps

    classes = [ClassSpec.of(c) for c in CLASSES[:k]]
    texts = [c.instruction for c in classes]
    probs = [p.prob for p in predictor.predict(texts, embedding=predictor.embed([image])[0])]
    cases = {
        "label map": lambda: label_map(predictor, classes, predictor.embed([image])[0]),
        "batch": lambda: predictor.predict(texts, embedding=predictor.embed([image])[0]),
        "merge": lambda: make_legend(merge_soft_maps(probs, predictor.threshold, k), classes),
    }
    for fn in cases.values():  # warm-up
        fn()
    times = {name: float("inf") for name in cases}
    for _ in range(repeat):  # interleaved, so a burst of load hits all alike
        for name, fn in cases.items():
            times[name] = min(times[name], *(timed(fn, clock) for _ in range(5 if name == "merge" else 1)))
    return times["label map"], times["batch"], times["merge"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--text-batch", type=int, help="pairs per decoder batch (default: the Predictor's, 1 on CPU)")
    p.add_argument("--models", default="demo,unilseg20")
    p.add_argument("--ks", default="4,8")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/unilseg-bench"))
    args = p.parse_args()

    import torch

    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    ks = [int(k) for k in args.ks.split(",")]
    scene = cv2.imread(str(ROOT / "imgs" / "demo_scene.png"))
    print(f"clock {args.clock}, {torch.get_num_threads()} thread(s), best of {args.repeat}, "
          f"text batch {args.text_batch or 'default'}\n")
    print("| model | image | K | label map | K-instruction batch | ratio | merge + legend | merge share |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        if name == "demo":
            model, image = load_model("unilseg-demo", device="cpu"), scene
        elif name == "unilseg20":
            pth, _ = seeded_checkpoints(args.workdir)
            model = load_model(pth, "unilseg20", device="cpu")
            image = cv2.resize(scene, (640, 480), interpolation=cv2.INTER_CUBIC)
        else:
            raise SystemExit(f"unknown model {name!r}: use demo, unilseg20")
        predictor = Predictor(model, max_batch=args.text_batch)
        h, w = image.shape[:2]
        for k in ks:
            t_map, t_batch, t_merge = bench_case(predictor, image, k, clock, args.repeat)
            print(f"| {name} | {w}x{h} | {k} | {t_map:.3f} s | {t_batch:.3f} s | {t_map / t_batch:.2f} | "
                  f"{1000 * t_merge:.1f} ms | {100 * t_merge / t_map:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
