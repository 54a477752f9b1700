"""ONNX Runtime against torch: one forward, one image x K instructions, a cold CLI call, int8 quality.

    python benchmarks/onnx_runtime.py [--repeat 3] [--texts 8] [--runtimes torch-fp32,torch-bf16,ort-fp32,ort-int8]
                              [--workdir /tmp/unilseg-bench] [--no-cli] [--json PATH]

Full-size UniLSeg-20 with seeded weights (480-px input) on the astronaut fixture, side by
side in one process: torch fp32, torch bf16 (`--precision bf16`), ONNX Runtime fp32 and
int8 (`unilseg export --format onnx [--quantize int8]`, written to --workdir once).

- forward: `embed` (Swin) + one instruction through text encoder, fusion and decoders;
- K texts: `embed` + K instructions (the CLI's batch over one image);
- cold CLI: a fresh process from start to the mask written (median of --repeat), with the
  share of it spent importing torch;
- int8 quality: mask IoU against the torch fp32 masks on the three golden cases.

Each runtime is timed in its own process (best of --repeat after a warm-up); cold calls are medians.
Prints Markdown tables; --json PATH also writes their numbers (`_common.save_results`;
`scripts/speed_plots.py` draws them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from _common import ROOT, add_json_option, median, run_child, save_results, seeded_checkpoints

sys.path.insert(0, str(ROOT))

TEXTS = ["the astronaut's face", "the flag", "the helmet", "the left hand", "the sky", "the white suit",
         "the patch on the arm", "the background"]
RUNTIMES = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8")


def exports(workdir: Path, pth: Path) -> dict[str, Path]:
    """fp32 and int8 ONNX exports of the seeded checkpoint (made once, in child processes)."""
    out = {}
    for variant in ("fp32", "int8"):
        d = workdir / f"onnx-{variant}"
        if not (d / "unilseg-export.json").is_file():
            extra = ["--quantize", "int8"] if variant == "int8" else []
            run_child([sys.executable, "-m", "unilseg", "export", "--weights", str(pth), "--config", "unilseg20",
                       "--format", "onnx", "--out", str(d), *extra])
        out[variant] = d
    return out


def predictor(runtime: str, st: Path, dirs: dict[str, Path]):
    from unilseg.inference.backends import load_backend
    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    kind, variant = runtime.split("-")
    if kind == "torch":
        return Predictor(load_model(st, "unilseg20", device="cpu"), precision=variant)
    return Predictor(load_backend("onnx", weights=str(dirs[variant]), device="cpu"))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def cold_cli(args: argparse.Namespace, st: Path, dirs: dict[str, Path], image: Path) -> list[dict]:
    """Median wall time and peak RSS of fresh CLI processes per runtime (rows of table "cold_cli")."""
    rows = []
    out = args.workdir / "cold.png"
    base = [sys.executable, "-m", "unilseg", "--img", str(image), "--exp", TEXTS[0], "--sp", str(out),
            "--device", "cpu"]
    calls = {"torch fp32 (.safetensors)": ["--weights", str(st), "--config", "unilseg20"],
             "ORT fp32": ["--runtime", "onnx", "--weights", str(dirs["fp32"])],
             "ORT int8": ["--runtime", "onnx", "--weights", str(dirs["int8"])]}
    imports = [run_child([sys.executable, "-c", "import torch"])[0] for _ in range(args.repeat)]
    for name, extra in calls.items():
        walls, rss = [], []
        for _ in range(args.repeat):
            w, r, _ = run_child(base + extra)
            walls.append(w)
            rss.append(r)
        rows.append({"table": "cold_cli", "call": name, "wall_s": median(walls), "import_torch_s": median(imports),
                     "peak_rss_gb": median(rss)})
    return rows


def texts_case(texts: int) -> str:
    return f"1 image x {texts} texts"


def runtime_rows(times: dict[tuple[str, str], float], runtimes: list[str], texts: int) -> list[dict]:
    """Best seconds per (runtime, case) -> one row per runtime (table "runtimes"), forward against the reference."""
    ref = "torch-fp32" if "torch-fp32" in runtimes else runtimes[0]
    return [{"table": "runtimes", "runtime": r, "forward_s": times[r, "forward"], "texts": texts,
             "texts_s": times[r, texts_case(texts)], "reference": ref,
             "forward_vs_reference": times[r, "forward"] / times[ref, "forward"]} for r in runtimes]


def runtimes_table(rows: list[dict]) -> str:
    """Table "runtimes" in Markdown (printed here, and on the docs' speed page by scripts/speed_plots.py)."""
    ref, texts = rows[0]["reference"], rows[0]["texts"]
    return "\n".join([f"| runtime | forward (s) | {texts_case(texts)} (s) | vs {ref} |", "|---|---|---|---|"]
                     + [f"| {r['runtime']} | {r['forward_s']:.2f} | {r['texts_s']:.2f} "
                        f"| {r['forward_vs_reference']:.2f}x |" for r in rows])


def cold_table(rows: list[dict]) -> str:
    """Table "cold_cli" in Markdown."""
    return "\n".join(["| cold CLI call | wall (s) | `import torch` alone (s) | peak RSS (GB) |", "|---|---|---|---|"]
                     + [f"| {r['call']} | {r['wall_s']:.2f} | {r['import_torch_s']:.2f} | {r['peak_rss_gb']:.2f} |"
                        for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--texts", type=int, default=8, help="instructions per image in the K-texts case")
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--no-cli", action="store_true", help="skip the cold CLI calls")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench")
    p.add_argument("--child", help=argparse.SUPPRESS)
    add_json_option(p)
    args = p.parse_args()
    if args.child:
        return time_one_runtime(args)
    import torch


    pth, st = seeded_checkpoints(args.workdir)
    dirs = exports(args.workdir, pth)
    image_path = ROOT / "tests/fixtures/images/astronaut.png"
    # Cold calls first: a child's peak RSS starts from its parent's at fork, so spawn them while this one is small.
    cold = [] if args.no_cli else cold_cli(args, st, dirs, image_path)
    runtimes = [r for r in args.runtimes.split(",") if r]
    # One child process per runtime: torch's and ONNX Runtime's thread pools in one process spin against
    # each other on 2 cores (ORT measured 2x slower beside torch than alone).
    times: dict[tuple[str, str], float] = {}
    for r in runtimes:
        argv = [sys.executable, __file__, "--child", r, "--repeat", str(args.repeat), "--texts", str(args.texts),
                 "--workdir", str(args.workdir)]
        for case, t in json.loads(run_child(argv)[2].strip().splitlines()[-1]).items():
            times[r, case] = t
    print(f"seeded UniLSeg-20, 480x480, CPU, {torch.get_num_threads()} threads, best of {args.repeat}, "
          "one process per runtime\n")
    rows = runtime_rows(times, runtimes, args.texts)
    print(runtimes_table(rows))

    preds = {r: predictor(r, st, dirs) for r in runtimes if r in ("torch-fp32", "ort-int8")}
    if "ort-int8" in preds and "torch-fp32" in preds:
        from conftest import FIXTURES, golden_cases

        print("\nint8 masks vs torch fp32 (golden cases, seeded weights): IoU")
        for case in golden_cases():
            masks = [preds[r].predict(case["exp"], embedding=preds[r].embed([str(FIXTURES / case["img"])])[0])[0].mask
                     for r in ("torch-fp32", "ort-int8")]
            rows.append({"table": "int8_iou", "case": case["name"], "iou": iou(*masks),
                         "fp32_pixels": int(masks[0].sum())})
            print(f"- {case['name']}: {rows[-1]['iou']:.3f} ({rows[-1]['fp32_pixels']} px in fp32)")

    if cold:
        print("\n" + cold_table(cold))
    print("\n" + json.dumps({f"{r}|{c}": round(t, 3) for (r, c), t in times.items()}))
    if args.json:
        save_results(args.json, "onnx_runtime", rows + cold, args)


def time_one_runtime(args: argparse.Namespace) -> None:
    """Time one runtime in this process; print {case: best seconds} as the last line."""
    from unilseg.inference.transforms import read_image

    pth, st = seeded_checkpoints(args.workdir)
    pred = predictor(args.child, st, exports(args.workdir, pth))
    image = read_image(ROOT / "tests/fixtures/images/astronaut.png")
    texts = (TEXTS * args.texts)[: args.texts]
    cases = {
        "forward": lambda: pred.predict_logits(texts[:1], pred.embed([image])[0]),
        texts_case(args.texts): lambda: pred.predict_logits(texts, pred.embed([image])[0]),
    }
    cases["forward"]()  # warm-up
    best = {c: min(timed(fn) for _ in range(args.repeat)) for c, fn in cases.items()}
    print(json.dumps(best))


if __name__ == "__main__":
    main()
