"""COCO job memory: a 5,000-item `--coco --instances` job's peak memory against a 50-item one.

    python benchmarks/coco_memory.py [--items 50,5000] [--workdir DIR] [--no-heap] [--threads N]

Each job is one `unilseg segment` call in a fresh child process, the same in all but its
number of images: the shipped demo model (its own 192-px input) on generated 192x192
scenes (stream 2), five instructions per image ("the sky", "all houses", "all trees",
"all cars", "all balls"), `--instances --coco --coco-results`, PNG masks, results.jsonl
and annotations.jsonl in --sp. So 5,000 items are 1,000 images, 50 items 10 images. After
each job the COCO file is loaded with pycocotools and its images and annotations counted.

Two measures per job (goal: the large job within 10% of the small one on each):
- peak RSS: the child's own ru_maxrss (os.wait4). What the machine sees, but torch,
  the model and the libraries take a fixed few hundred MB of it, behind which a modest
  growth would hide;
- Python-heap peak of the loop: tracemalloc in a second child, tracing from the first
  line. It counts every Python object and NumPy buffer the job holds (records, masks,
  rows, the plan) and nothing of torch's own allocator (weights, activations), so memory
  that grows with the job shows at once. The heap is noted when the loop starts (model
  made, plan and logs open) and when the COCO files' assembly starts (all items done:
  what the loop kept), and the peak counted from the loop's start to the end (COCO files
  written). The plan (one Item per pair, made before the loop) is the one part that
  grows with the job, by design: it shows in "heap at loop start".
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from _common import ROOT, run_child

sys.path.insert(0, str(ROOT / "src"))

INSTRUCTIONS = ("the sky", "all houses", "all trees", "all cars", "all balls")
# The heap child: tracemalloc from the first line; when the loop starts (the model made, the plan and the
# annotation log open: MaskStep.prepare) it notes the heap and resets the peak, so the peak after is the loop's,
# the COCO files' assembly included.
HEAP = """
import sys, tracemalloc
tracemalloc.start()
import unilseg.batch.run as run
prepare = run.MaskStep.prepare
start = []
def noted(self, predictor):
    start.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.reset_peak()
    return prepare(self, predictor)
run.MaskStep.prepare = noted
import unilseg.batch.sinks as sinks
finish = sinks.AnnotationLog.finish
def assembling(self, items):
    start.append(tracemalloc.get_traced_memory()[0])
    return finish(self, items)
sinks.AnnotationLog.finish = assembling
from unilseg.__main__ import main
code = main(sys.argv[1:])
print("heap", start[0], start[1], tracemalloc.get_traced_memory()[1])
sys.exit(code)
"""


def write_images(folder: Path, count: int) -> Path:
    """The first `count` scenes of stream 2 as PNGs in folder (kept between runs)."""
    from unilseg.data.synthetic import generate_scene, render

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = folder / f"scene{index:05d}.png"
        if not path.exists():
            image, _ = render(generate_scene(2, index))
            cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))
    return folder


def job_argv(images: Path, out: Path, threads: int | None) -> list[str]:
    argv = ["segment", "--model", "unilseg-demo", "--device", "cpu", "--img", str(images), "--sp", str(out),
            "--coco", str(out / "coco.json"), "--coco-results", str(out / "results.json"), "--instances",
            "--no-progress"]
    for text in INSTRUCTIONS:
        argv += ["--exp", text]
    return argv + (["--threads", str(threads)] if threads else [])


def count_coco(path: Path) -> tuple[int, int]:
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    return len(coco.getImgIds()), len(coco.getAnnIds())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", default="50,5000", help="job sizes in items, comma-separated (multiples of 5)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench-coco")
    p.add_argument("--no-heap", action="store_true", help="skip the tracemalloc runs (half the time)")
    p.add_argument("--threads", type=int, help="torch threads in each job (default: torch's)")
    args = p.parse_args()
    sizes = [int(s) for s in args.items.split(",")]
    rows = []
    for items in sizes:
        images = write_images(args.workdir / f"images-{items}", items // len(INSTRUCTIONS))
        out = args.workdir / f"job-{items}"
        wall, rss, _ = run_child([sys.executable, "-m", "unilseg", *job_argv(images, out, args.threads)],
                                 env={"PYTHONPATH": str(ROOT / "src")})
        n_images, n_anns = count_coco(out / "coco.json")
        heap = None
        if not args.no_heap:
            heap_out = args.workdir / f"job-{items}-heap"
            _, _, text = run_child([sys.executable, "-c", HEAP, *job_argv(images, heap_out, args.threads)],
                                   env={"PYTHONPATH": str(ROOT / "src")})
            heap = tuple(int(v) / 1e6 for v in text.split("heap")[-1].split())  # loop start, assembly, peak
        rows.append((items, n_images, n_anns, wall, rss * 1e3, heap))
        print(json.dumps({"items": items, "images": n_images, "annotations": n_anns, "wall_s": round(wall, 1),
                          "peak_rss_mb": round(rss * 1e3, 1), "heap_mb": heap and [round(v, 2) for v in heap]}),
              file=sys.stderr)
    base = rows[0]
    print("| items | images | COCO annotations | wall | peak RSS | vs first | heap: loop start | files' assembly "
          "start | peak | vs first |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for items, n_images, n_anns, wall, rss, heap in rows:
        cells = ["-"] * 4 if heap is None else [*(f"{v:.1f} MB" for v in heap),
                                                 f"{100 * (heap[2] / base[5][2] - 1):+.1f}%"]
        print(f"| {items:,} | {n_images:,} | {n_anns:,} | {wall:.0f} s | {rss:.0f} MB | "
              f"{100 * (rss / base[4] - 1):+.1f}% | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
