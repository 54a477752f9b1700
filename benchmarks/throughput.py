"""Throughput: many expressions per image, many images per process, fp32 vs bf16.

    python benchmarks/throughput.py [--repeat 2] [--images 20] [--threads N] [--clock wall|cpu]
                                    [--workdir /tmp/unilseg-bench] [--no-cli] [--cli-precision fp32|bf16]
                                    [--json PATH]

On a seeded full-size UniLSeg-20 checkpoint (same tensors and shapes as the real one), CPU:

1. one image x 1, 4 and 8 expressions through `Predictor` (set_image + predict, masks
   included), per precision, against k steady single forwards `model(image, tokens)`;
   fp32 also with all 8 pairs in one decoder batch (the CPU default decodes one at a time);
2. N images x 1 expression: one CLI process over a directory vs N separate CLI calls.
   The per-image cost inside one process is (time(N images) - time(1 image)) / (N - 1),
   compared with a steady single forward plus the same read / mask / PNG work.

--clock cpu (with --threads 1) measures CPU time — this process's, or a child's from
wait4 — instead of wall time: on a machine shared with other jobs it is not inflated by
waiting for a core, so ratios stay meaningful. Children get OMP_NUM_THREADS=--threads.
Timings are the best of --repeat runs after a warm-up run (cases interleaved, so a burst
of load hits all alike). Prints Markdown tables; --json PATH also writes their numbers
(`_common.save_results`; `scripts/speed_plots.py` draws them).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import ROOT, add_json_option, save_results, seeded_checkpoints

sys.path.insert(0, str(ROOT))

TEXTS = ["the face of the astronaut", "the flag on the left", "her right hand", "the helmet",
         "the red patch on the suit", "the sky behind her", "the rocket", "the white gloves"]
CLOCK: Callable[[], float] = time.perf_counter
CHILD_ENV: dict[str, str] = {}


def timed(fn: Callable[[], object]) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def run_child(argv: list[str]) -> float:
    """Run a process to completion -> its wall time, or with --clock cpu its user + system CPU time."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **CHILD_ENV})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr.read()}")
    proc.stderr.close()
    return usage.ru_utime + usage.ru_stime if CLOCK is time.process_time else wall


def expressions_per_image(weights: Path, repeat: int) -> dict[str, dict]:
    """{precision: {'single': s, 'k': {k: s}}} for one image and k = 1, 4, 8 expressions."""
    return {precision: _per_image(weights, precision, repeat) for precision in ("fp32", "bf16")}


def _per_image(weights: Path, precision: str, repeat: int) -> dict:
    import torch

    from unilseg.inference.predictor import Predictor
    from unilseg.inference.transforms import preprocess, read_image
    from unilseg.model.build import load_model
    from unilseg.model.tokenizer import tokenize

    image = read_image(ROOT / "tests/fixtures/images/astronaut.png")
    model = load_model(weights, device="cpu")
    predictor = Predictor(model, precision=precision)
    x, _ = preprocess(image, predictor.spec.size)
    tokens = tokenize(TEXTS[0])

    def single() -> None:
        with torch.inference_mode():
            model(x, tokens)

    def many(k: int, text_batch: int = 1) -> None:
        predictor.max_batch = text_batch
        predictor.set_image(image)
        predictor.predict(TEXTS[:k])

    runs: dict = {"single": single, **{k: (lambda k=k: many(k)) for k in (1, 4, 8)}}
    if precision == "fp32":
        runs["8, one decoder batch"] = lambda: many(8, text_batch=8)
    times: dict = {key: [] for key in runs}
    for round_ in range(repeat + 1):  # round 0 warms up (allocations, oneDNN kernels per batch shape)
        for key, fn in runs.items():
            t = timed(fn)
            if round_:
                times[key].append(t)
    return {"single": min(times["single"]), "k": {k: min(t) for k, t in times.items() if k != "single"}}


def make_images(directory: Path, count: int) -> list[Path]:
    """`count` distinct images of varied sizes cut from the test fixtures."""
    import cv2

    directory.mkdir(parents=True, exist_ok=True)
    sources = [cv2.imread(str(p)) for p in sorted((ROOT / "tests/fixtures/images").glob("*.png"))]
    paths = []
    for i in range(count):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        top, left = (i * 7) % (h // 4), (i * 11) % (w // 4)
        crop = src[top : h - (i % 3) * 10, left:]
        scale = 0.8 + 0.1 * (i % 5)
        path = directory / f"photo{i:02d}.png"
        cv2.imwrite(str(path), cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
        paths.append(path)
    return paths


def cli_throughput(weights: Path, workdir: Path, images: list[Path], repeat: int, precision: str) -> dict:
    one = workdir / "one-image"
    one.mkdir(exist_ok=True)
    shutil.copy(images[0], one / images[0].name)
    common = ["--exp", "the face", "--weights", str(weights), "--device", "cpu", "--precision", precision]

    def batch(src: Path) -> float:
        out = workdir / "out"
        shutil.rmtree(out, ignore_errors=True)
        return run_child([sys.executable, "general_inference.py", "--img", str(src), "--sp", str(out), *common])

    wall_one = min(batch(one) for _ in range(repeat))
    wall_all = batch(images[0].parent)  # long enough that load bursts average out; once
    separate = sum(run_child([sys.executable, "general_inference.py", "--img", str(img), "--sp",
                              str(workdir / "single.png"), *common]) for img in images)
    return {"one": wall_one, "all": wall_all, "separate": separate}


def steady_image_cost(weights: Path, image_paths: list[Path], repeat: int, precision: str) -> dict[str, float]:
    """Best per-image times in a warm process: forward alone, and read + forward + mask + PNG write."""
    import torch

    from unilseg.inference.predictor import Predictor
    from unilseg.inference.transforms import postprocess, preprocess, read_image
    from unilseg.io.writers import encode_mask, write_atomic
    from unilseg.model.build import load_model
    from unilseg.model.tokenizer import tokenize

    model = load_model(weights, device="cpu")
    Predictor(model, precision=precision)  # casts the weights for bf16
    out = Path(tempfile.mkdtemp()) / "m.png"
    prepared = {}

    def forward(path: Path) -> None:
        with torch.inference_mode():
            model(prepared[path], tokenize("the face"))

    def whole(path: Path) -> None:
        image = read_image(path)
        x, inverse = preprocess(image, 480)
        with torch.inference_mode():
            logits = model(x, tokenize("the face"))
        write_atomic(out, encode_mask(postprocess(logits, inverse, image.shape[:2])[0], "png"))

    paths = image_paths[: max(repeat, 3)]
    for p in paths:
        prepared[p] = preprocess(read_image(p), 480)[0]
    whole(paths[0])  # warm-up
    return {"forward": min(timed(lambda p=p: forward(p)) for p in paths),
            "whole": min(timed(lambda p=p: whole(p)) for p in paths)}


def expression_rows(res: dict[str, dict]) -> list[dict]:
    """`expressions_per_image`'s result -> one row per precision and case (table "expressions")."""
    rows = []
    for precision, r in res.items():
        for key, total in r["k"].items():
            k = key if isinstance(key, int) else 8
            rows.append({"table": "expressions", "precision": precision, "single_forward_s": r["single"],
                         "expressions": k, "decoder_batch": 1 if isinstance(key, int) else k, "total_s": total,
                         "per_expression_s": total / k, "vs_single_forwards": total / (k * r["single"]),
                         "per_expression_vs_fp32": total / res["fp32"]["k"][key] if key in res["fp32"]["k"] else None})
    return rows


def image_row(cli: dict, steady: dict, n: int, precision: str) -> dict:
    """`cli_throughput` and `steady_image_cost` for n images -> the row of table "images"."""
    per_image = (cli["all"] - cli["one"]) / (n - 1)
    return {"table": "images", "precision": precision, "images": n, "one_process_one_image_s": cli["one"],
            "one_process_all_s": cli["all"], "per_image_marginal_s": per_image, "separate_calls_s": cli["separate"],
            "separate_per_image_s": cli["separate"] / n, "steady_forward_s": steady["forward"],
            "steady_whole_s": steady["whole"], "marginal_vs_steady_forward": per_image / steady["forward"]}


def expressions_table(rows: list[dict]) -> str:
    """Table "expressions" in Markdown (printed here, and on the docs' speed page by scripts/speed_plots.py)."""
    lines = ["| precision | single forward | k | total | per expression | vs k single forwards | per expr. vs fp32 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        key = r["expressions"] if r["decoder_batch"] == 1 else f"{r['expressions']}, one decoder batch"
        vs_fp32 = "" if r["per_expression_vs_fp32"] is None else f"{r['per_expression_vs_fp32']:.2f}"
        lines.append(f"| {r['precision']} | {r['single_forward_s']:.2f} s | {key} | {r['total_s']:.2f} s "
                     f"| {r['per_expression_s']:.2f} s | {r['vs_single_forwards']:.2f} | {vs_fp32} |")
    return "\n".join(lines)


def images_table(r: dict) -> str:
    """The row of table "images" as its Markdown table."""
    n = r["images"]
    return "\n".join([
        "| run | total | per image |",
        "|---|---|---|",
        f"| one process, 1 image (start-up + 1 image) | {r['one_process_one_image_s']:.1f} s | |",
        f"| one process, {n} images | {r['one_process_all_s']:.1f} s | {r['per_image_marginal_s']:.2f} s (marginal) |",
        f"| {n} separate CLI calls | {r['separate_calls_s']:.1f} s | {r['separate_per_image_s']:.2f} s |",
        f"| warm process: single forward | | {r['steady_forward_s']:.2f} s |",
        f"| warm process: read + forward + mask + PNG | | {r['steady_whole_s']:.2f} s |"])


def print_images(r: dict, clock: str) -> None:
    print(f"\n### {r['images']} images x 1 expression, {r['precision']} (CLI processes, {clock} clock)\n")
    print(images_table(r))
    print(f"\nper image in one process / steady single forward: {r['marginal_vs_steady_forward']:.2f}")


def main() -> None:
    global CLOCK
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--threads", type=int, help="torch threads here and in children (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench")
    p.add_argument("--no-cli", action="store_true", help="skip the N-images CLI comparison (the slow part)")
    p.add_argument("--cli-precision", default="fp32", choices=("fp32", "bf16"))
    add_json_option(p)
    args = p.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        CHILD_ENV["OMP_NUM_THREADS"] = str(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            p.error("--clock cpu needs --threads 1 (CPU time of several threads counts their spin-waits)")
        CLOCK = time.process_time
    weights, _ = seeded_checkpoints(args.workdir)
    print(f"seeded UniLSeg-20 (480 px), CPU, {torch.get_num_threads()} thread(s), {args.clock} clock, "
          f"best of {args.repeat}; load average {os.getloadavg()[0]:.1f} at start")
    res = expressions_per_image(weights, args.repeat)
    rows = expression_rows(res)
    print("\n### One image, k expressions (Predictor: set_image + predict, masks included)\n")
    print(expressions_table(rows))
    if not args.no_cli:
        images = make_images(args.workdir / "images", args.images)
        cli = cli_throughput(weights, args.workdir, images, args.repeat, args.cli_precision)
        steady = steady_image_cost(weights, images, args.repeat, args.cli_precision)
        rows.append(image_row(cli, steady, args.images, args.cli_precision))
        print_images(rows[-1], args.clock)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    if args.json:
        save_results(args.json, "throughput", rows, args)


if __name__ == "__main__":
    main()
