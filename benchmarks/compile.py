"""Compiled inference side by side: eager vs `--compile` vs `--runtime aoti`, fp32 and bf16.

    python benchmarks/compile.py [--precisions fp32,bf16] [--modes eager,compile,aoti] [--images 20]
                                 [--texts 8] [--repeat 3] [--size 480] [--workdir /tmp/unilseg-bench]
                                 [--keep-cache] [--no-cli] [--quick]

On a seeded full-size UniLSeg-20 checkpoint (same tensors and shapes as the real one), CPU,
one process per run, all threads. For each mode and precision:

- setup: model load (aoti: package load), plus for compile the first forward minus a steady
  one (the compile, cold cache); aoti also shows the one-off `unilseg export --format aoti`
  (a child process);
- steady forward: one image, one instruction (set_image + predict_logits), best of --repeat;
- 1 image x --texts instructions (one at a time, the CPU default), best of --repeat;
- --images images x 1 instruction in one process, setup included (what a batch run pays);
- break-even: images after which the mode has paid for its extra setup against eager;
- one cold CLI call (a child process: import, load, one mask written). For compile it runs
  with the inductor cache the in-process compile just filled (a warm start).

The inductor cache is `WORKDIR/inductor`, emptied first unless --keep-cache. --quick: 3 images,
2 instructions, 1 repeat, to check that everything runs. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, run_child, seeded_checkpoints

sys.path.insert(0, str(ROOT))

TEXTS = ["the face of the astronaut", "the flag on the left", "her right hand", "the helmet",
         "the red patch on the suit", "the sky behind her", "the rocket", "the white gloves"]
IMAGES = [ROOT / "tests/fixtures/images" / name for name in ("astronaut.png", "chelsea.png", "coffee.png")]
CONFIG = ROOT / "src/unilseg/configs/unilseg20.yaml"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def export_aoti(weights: Path, precision: str, size: int, out: Path) -> float:
    """`unilseg export --format aoti` in a child process -> seconds."""
    argv = [sys.executable, "-m", "unilseg", "export", "--format", "aoti", "--weights", str(weights), "--config",
            str(CONFIG), "--device", "cpu", "--precision", precision, "--out", str(out), "--opts", "input.size",
            str(size)]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def predictor(mode: str, precision: str, weights: Path, size: int, export: Path):
    """(Predictor, seconds to make it: model load or package load)."""
    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    t0 = time.perf_counter()
    if mode == "aoti":
        from unilseg.inference.backends import load_backend

        made = Predictor(load_backend("aoti", weights=str(export), device="cpu"))
    else:
        model = load_model(weights, CONFIG, device="cpu", opts=["input.size", str(size)])
        made = Predictor(model, precision=precision, compile=mode == "compile")
    return made, time.perf_counter() - t0


def run_case(mode: str, precision: str, args: argparse.Namespace, weights: Path) -> dict[str, float]:
    export = args.workdir / f"aoti-{precision}-{args.size}"
    row: dict[str, float] = {}
    if mode == "aoti":
        row["export"] = export_aoti(weights, precision, args.size, export)
    p, load = predictor(mode, precision, weights, args.size, export)
    texts = TEXTS[: args.texts]

    def forward(image: Path, k: int = 1) -> None:
        p.set_image(image)
        for text in texts[:k]:
            p.predict_logits(text)

    first = timed(lambda: forward(IMAGES[0]))
    row["steady"] = min(timed(lambda: forward(IMAGES[0])) for _ in range(args.repeat))
    row["setup"] = load + max(first - row["steady"], 0.0)  # load, plus the compile in the first call
    row["texts"] = min(timed(lambda: forward(IMAGES[0], len(texts))) for _ in range(args.repeat))
    loop = timed(lambda: [forward(IMAGES[i % len(IMAGES)]) for i in range(args.images)])
    row["images"] = row["setup"] + loop
    row["per_image"] = loop / args.images
    if not args.no_cli:
        row["cli"] = cold_cli(mode, precision, args, weights, export)
    return row


def cold_cli(mode: str, precision: str, args: argparse.Namespace, weights: Path, export: Path) -> float:
    out = args.workdir / "mask.png"
    argv = [sys.executable, "general_inference.py", "--img", str(IMAGES[0]), "--exp", TEXTS[0], "--sp", str(out),
            "--device", "cpu", "--precision", precision]
    if mode == "aoti":
        argv += ["--runtime", "aoti", "--weights", str(export)]
    else:
        argv += ["--weights", str(weights), "--config", str(CONFIG), "--opts", "input.size", str(args.size)]
        argv += ["--compile"] if mode == "compile" else []
    wall, _, _ = run_child(argv)
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16 (default both)")
    p.add_argument("--modes", default="eager,compile,aoti", help="comma-separated: eager, compile, aoti")
    p.add_argument("--images", type=int, default=20, help="images in the one-process run (default 20)")
    p.add_argument("--texts", type=int, default=8, choices=range(1, len(TEXTS) + 1), metavar="1-8",
                   help="instructions per image in the 1 image x K run (default 8)")
    p.add_argument("--repeat", type=int, default=3, help="steady timings: best of N (default 3)")
    p.add_argument("--size", type=int, default=480, help="input size (the checkpoint's is 480)")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench")
    p.add_argument("--keep-cache", action="store_true", help="keep WORKDIR/inductor (the compile starts warm)")
    p.add_argument("--no-cli", action="store_true", help="skip the cold CLI calls")
    p.add_argument("--quick", action="store_true", help="3 images, 2 instructions, 1 repeat: a check that it runs")
    args = p.parse_args()
    if args.quick:
        args.images, args.texts, args.repeat = 3, 2, 1
    cache = args.workdir / "inductor"
    if not args.keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # the CLI children inherit it
    weights, _ = seeded_checkpoints(args.workdir)

    import torch

    print(f"seeded UniLSeg-20, {args.size}x{args.size}, CPU {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, load average "
          f"{os.getloadavg()[0]:.1f} at start; best of {args.repeat}")
    print(f"| mode | precision | setup (load + compile) | steady forward | 1 image x {args.texts} | "
          f"{args.images} images, one process | break-even vs eager | cold CLI call |")
    print("|---|---|---|---|---|---|---|---|")
    for precision in args.precisions.split(","):
        eager: dict[str, float] | None = None
        for mode in args.modes.split(","):
            r = run_case(mode, precision, args, weights)
            if mode == "eager":
                eager = r
            setup = f"{r['setup']:.1f} s" + (f" (+ {r['export']:.0f} s export, once)" if "export" in r else "")
            even = "-"
            if mode != "eager" and eager is not None:
                saving, extra = eager["per_image"] - r["per_image"], r["setup"] - eager["setup"]
                even = "at once" if extra <= 0 else f"{extra / saving:.0f} images" if saving > 0 else "never"
            cli = f"{r['cli']:.1f} s" if "cli" in r else "-"
            print(f"| {mode} | {precision} | {setup} | {r['steady']:.2f} s | {r['texts']:.2f} s | "
                  f"{r['images']:.1f} s | {even} | {cli} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
