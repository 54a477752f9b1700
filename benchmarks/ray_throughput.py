"""Throughput of `unilseg ray` vs the local runner on one machine.

    python benchmarks/ray_throughput.py [--pairs 200] [--full-pairs 16] [--texts 4] [--only demo|full]
                                        [--workdir /tmp/unilseg-bench-ray]

For the demo model (`--model unilseg-demo`, --pairs pairs) and a seeded full-size
UniLSeg-20 (same tensors and shapes as the real one, `tests/seeded.py`; --full-pairs
pairs, fewer because one pair costs seconds), images x --texts instructions each:

- local: `run_batch` in this process, torch on 2 threads;
- ray: a fresh local cluster (`ray.init(num_cpus=2)`) and `run_ray` with 2 actors x 1
  thread (0.75 CPU each: the rest is for the decode tasks);
- local with 1 thread, a control: on a machine busy with other work, 2 OpenMP threads
  that wait for each other at every operation can be far slower than 1 (seen here: the
  demo model's CPU time went up 10-25x at 2 threads under a load of 12-20 on 2 cores).

Times are the mask files' modification times (each written as its pair finishes, by the
driver or an actor alike): start-up = from before the model load (local) or `ray.init`
(ray) to the first mask; "incl. start-up" = pairs / time to the last mask; "steady" = the
last 90% of pairs over the time they took (from the 10%-th mask to the last). Masks are written to the work directory
as PNGs in both runs (the same files). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, seeded_checkpoints

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TEXTS = ["the red circle", "the background", "the biggest shape", "the small blue thing",
         "everything on the left", "the top shape", "all circles", "the bottom right corner"]


def demo_predictor():
    from unilseg import Predictor, load_model

    return Predictor(load_model(model="unilseg-demo"))


def full_predictor(weights: str):
    from unilseg import Predictor, load_model

    return Predictor(load_model(weights))


def rates(t0: float, out: Path, pairs: int) -> tuple[float, float, float, float]:
    """Masks in `out` (t0: time.time() at the start) -> (start-up s, total s, pairs/s with start-up,
    pairs/s steady over the last 90%)."""
    stamps = sorted(p.stat().st_mtime for p in out.glob("*.png"))
    assert len(stamps) == pairs, (len(stamps), pairs)
    n, m = len(stamps), len(stamps) // 10
    total = stamps[-1] - t0
    steady = (n - 1 - m) / (stamps[-1] - stamps[m]) if stamps[-1] > stamps[m] else float("nan")
    return stamps[0] - t0, total, n / total, steady


def run_local(make: Callable[[], object], requests: list, out: Path, threads: int = 2) -> tuple[float, ...]:
    import torch

    from unilseg.batch import OutputOptions, plan_items, run_batch

    torch.set_num_threads(threads)
    options = OutputOptions()
    items = plan_items(requests, out, options)
    t0 = time.time()
    report = run_batch(make, items, options, results=out / "results.jsonl")
    assert report.done == len(items), report.failed
    return rates(t0, out, len(items))


def run_on_ray(make: Callable[[], object], requests: list, out: Path) -> tuple[float, ...]:
    import ray

    from unilseg.batch import MaskStep, OutputOptions, plan_items
    from unilseg.batch.ray import run_ray

    options = OutputOptions()
    items = plan_items(requests, out, options)
    t0 = time.time()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        report = run_ray(make, items, MaskStep(options), results=out / "results.jsonl", actors=2, cpus_per_actor=0.75)
    finally:
        ray.shutdown()
    assert report.done == len(items), report.failed
    rows = (out / "results.jsonl").read_text().splitlines()
    assert len(rows) == len(items)
    return rates(t0, out, len(items))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=200, help="pairs for the demo model (default 200)")
    p.add_argument("--full-pairs", type=int, default=16, help="pairs for the full-size model (default 16)")
    p.add_argument("--texts", type=int, default=4, help="instructions per image (default 4)")
    p.add_argument("--only", choices=("demo", "full"), help="only the demo or only the full-size model")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/unilseg-bench-ray"))
    args = p.parse_args()
    from functools import partial

    from tiny import write_images

    cases = [("unilseg-demo", demo_predictor, args.pairs)] if args.only != "full" else []
    if args.only != "demo":
        _, safetensors = seeded_checkpoints(args.workdir / "ckpt")
        cases.append(("UniLSeg-20 (seeded)", partial(full_predictor, str(safetensors)), args.full_pairs))
    lines = ["| model | pairs | runner | start-up s | total s | pairs/s incl. start-up | pairs/s steady |",
             "|---|---|---|---|---|---|---|"]
    for name, make, pairs in cases:
        images = write_images(args.workdir / "images" / name.split()[0], -(-pairs // args.texts), seed=3)
        texts = TEXTS[: args.texts]
        requests = [(str(image), text, None) for image in images for text in texts][:pairs]
        runners = (("local, 1 process x 2 threads", run_local), ("ray, 2 actors x 1 thread", run_on_ray),
                   ("local, 1 process x 1 thread", partial(run_local, threads=1)))
        for runner, fn in runners:
            out = args.workdir / "out" / f"{name.split()[0]}-{runner.replace(' ', '').replace(',', '-')}"
            shutil.rmtree(out, ignore_errors=True)
            startup, total, incl, steady = fn(make, requests, out)
            lines.append(f"| {name} | {len(requests)} | {runner} | {startup:.1f} | {total:.1f} | {incl:.2f} | "
                         f"{steady:.2f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
