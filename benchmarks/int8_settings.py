"""Which int8 settings hold on every x86 CPU: ONNX Runtime's dynamic quantisation schemes compared.

    python benchmarks/int8_settings.py --dir /tmp/int8                   # this CPU (exports on first run)
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/int8_settings.py --dir /tmp/int8 \
        --no-speed --label "AVX2, no VNNI (QEMU EPYC-Rome)"               # the AVX2 kernels, emulated
    python benchmarks/int8_settings.py --dir /tmp/int8 --table            # the table in docs/runtimes.md

The first run exports, into DIR, three models in fp32 and with each scheme of
`unilseg.export.onnx.INT8_SCHEMES`: the tiny test model (tests/tiny.py), the seeded full-size
UniLSeg-20 and the shipped demo model. Each run then measures every scheme against fp32:

    tiny     correlation of int8 with fp32 logits on tests/test_onnx.py's int8 case
    golden   IoU of int8 vs fp32 masks on the three golden cases (seeded full-size checkpoint)
    demo     the demo model's mIoU on 1,000 held-out instructions (synthetic:250:2)
    forward  one full-size forward (1 image, 1 instruction), best of --repeat (skipped by --no-speed)

and appends one JSON row per scheme to DIR/results.jsonl. Under QEMU's user-mode emulator
ONNX Runtime sees the emulated CPU's CPUID and runs its AVX2 integer kernels (VPMADDUBSW, which
saturates); QEMU computes them exactly, but slowly, so time only on real hardware.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import ROOT, seeded_checkpoints

TEXTS = ["the left cat", "sky", "a person in a red coat"]  # tests/test_onnx.py's int8 case
DEMO_DATA = "synthetic:250:2"


def export_all(root: Path) -> None:
    """fp32 exports of the three models, and each int8 scheme quantised from them (kept between runs)."""
    from tiny import write_tiny_model

    from unilseg.__main__ import main
    from unilseg.export.onnx import INT8_SCHEMES, requantize

    config, weights = write_tiny_model(root / "src" / "tiny")
    _, full = seeded_checkpoints(root / "src" / "full")
    models = {
        "tiny": ["--config", str(config), "--weights", str(weights)],
        "full": ["--config", str(ROOT / "src/unilseg/configs/unilseg20.yaml"), "--weights", str(full)],
        "demo": ["--model", "unilseg-demo"],
    }
    for name, argv in models.items():
        fp32 = root / name / "fp32"
        if not fp32.is_dir():
            assert main(["export", *argv, "--format", "onnx", "--out", str(fp32)]) == 0
        for scheme in INT8_SCHEMES:
            out = root / name / scheme
            if out.is_dir():
                continue
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(fp32, tmp)
            requantize(tmp, scheme)
            tmp.rename(out)


def predictor(directory: Path):
    from unilseg.inference.backends import load_backend
    from unilseg.inference.predictor import Predictor

    return Predictor(load_backend("onnx", weights=str(directory), device="cpu"))


def tiny_correlation(root: Path, scheme: str) -> float:
    import numpy as np
    import torch

    image = np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    logits = []
    for variant in ("fp32", scheme):
        p = predictor(root / "tiny" / variant)
        p.set_image(image)
        logits.append(p.predict_logits(TEXTS).flatten())
    return float(torch.corrcoef(torch.stack(logits))[0, 1])


def golden_masks(root: Path, variant: str) -> dict:
    """The variant's masks on the golden cases; fp32's are kept in DIR (fp32 kernels agree across CPUs to ~1e-6,
    and an emulator runs them slowest)."""
    import numpy as np
    from conftest import FIXTURES, golden_cases

    cache = root / "full" / "fp32-golden-masks.npz"
    if variant == "fp32" and cache.is_file():
        return dict(np.load(cache))
    p = predictor(root / "full" / variant)
    masks = {}
    for case in golden_cases():
        p.set_image(str(FIXTURES / case["img"]))
        masks[case["name"]] = p.predict(case["exp"])[0].mask
    if variant == "fp32":
        np.savez(cache, **masks)
    return masks


def golden_ious(root: Path, scheme: str) -> list[float]:
    reference, masks = golden_masks(root, "fp32"), golden_masks(root, scheme)
    ious = []
    for name, a in reference.items():
        b = masks[name]
        union = (a | b).sum()
        ious.append(float((a & b).sum() / union) if union else 1.0)
    return ious


def demo_miou(root: Path, variant: str) -> float:
    from unilseg.data.sources import open_samples
    from unilseg.eval.evaluate import evaluate

    return float(evaluate(predictor(root / "demo" / variant), open_samples(DEMO_DATA))["overall"]["mIoU"])


def forward_seconds(root: Path, variant: str, repeat: int) -> float:
    from conftest import FIXTURES

    p = predictor(root / "full" / variant)
    best = float("inf")
    for i in range(repeat + 1):  # the first call warms ORT's allocations
        t0 = time.perf_counter()
        p.set_image(str(FIXTURES / "images/chelsea.png"))
        p.predict_logits("cat")
        if i:
            best = min(best, time.perf_counter() - t0)
    return best


def cpu_label() -> str:
    from unilseg.inference.backends.cpu import cpu_features

    return cpu_features().summary()


def table(rows: list[dict]) -> str:
    """Markdown, one row per (CPU, scheme): later runs fill in (or replace) the measures they took."""
    merged: dict[tuple[str, str], dict] = {}
    for r in rows:
        row = merged.setdefault((r["cpu"], r["scheme"]), {})
        row.update({k: v for k, v in r.items() if v is not None})
    lines = ["| CPU | scheme | tiny corr. | golden IoU (3 cases) | demo mIoU | forward |", "|---|---|---|---|---|---|"]
    for r in merged.values():
        ious = ", ".join(f"{v:.3f}" for v in r["golden"]) if r.get("golden") else "-"
        speed = f"{r['forward']:.2f} s" if r.get("forward") else "-"
        tiny = f"{r['tiny']:.4f}" if r.get("tiny") is not None else "-"
        demo = f"{r['demo']:.4f}" if r.get("demo") is not None else "-"
        lines.append(f"| {r['cpu']} | {r['scheme']} | {tiny} | {ious} | {demo} | {speed} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, required=True, help="exports and results.jsonl (reused between runs)")
    p.add_argument("--label", help="the CPU's name in the table (default: from /proc/cpuinfo)")
    p.add_argument("--schemes", help="comma-separated schemes (default: all, and fp32)")
    p.add_argument("--skip", default="", help="comma-separated measures to skip: tiny, golden, demo")
    p.add_argument("--no-speed", action="store_true", help="no forward timing (under an emulator)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads (ORT uses its own pool)")
    p.add_argument("--table", action="store_true", help="print the table of DIR/results.jsonl and stop")
    args = p.parse_args()
    results = args.dir / "results.jsonl"
    if args.table:
        print(table([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))
        return
    import torch

    from unilseg.export.onnx import INT8_SCHEMES

    torch.set_num_threads(args.threads)
    args.dir.mkdir(parents=True, exist_ok=True)
    export_all(args.dir)
    label = args.label or cpu_label()
    skip = set(filter(None, args.skip.split(",")))
    for scheme in (args.schemes.split(",") if args.schemes else ["fp32", *INT8_SCHEMES]):
        row: dict = {"cpu": label, "scheme": scheme}
        if scheme != "fp32":
            row["tiny"] = None if "tiny" in skip else tiny_correlation(args.dir, scheme)
            row["golden"] = None if "golden" in skip else golden_ious(args.dir, scheme)
        row["demo"] = None if "demo" in skip else demo_miou(args.dir, scheme)
        row["forward"] = None if args.no_speed else forward_seconds(args.dir, scheme, args.repeat)
        print(json.dumps(row), flush=True)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    main()
