"""Start-up cost: one cold CLI call (process start to PNG written) and model load alone.

    python benchmarks/startup.py [--repeat 3] [--workdir /tmp/unilseg-bench] [--size 480] [--json PATH]

Uses seeded full-size UniLSeg-20 checkpoints (same tensors as the real one) in both
formats; the page cache is warm (files just written or read), the process is cold.
Prints medians of wall time and peak RSS (the child's own ru_maxrss); --json PATH also writes
them (`_common.save_results`; `scripts/speed_plots.py` draws them).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _common import ROOT, add_json_option, median, run_child, save_results, seeded_checkpoints

LOAD_ONLY = """
import resource, sys, time
import torch
from unilseg.model.build import load_model
rss0 = int(open('/proc/self/statm').read().split()[1]) * 4096
t0 = time.perf_counter()
model = load_model(sys.argv[1], device='cpu')
t = time.perf_counter() - t0
rss1 = int(open('/proc/self/statm').read().split()[1]) * 4096
print(t, (rss1 - rss0) / 1e9)
"""


TABLE_HEADER = ("| weights | cold CLI call: wall | peak RSS | model load alone: wall | RSS added by load |\n"
                "|---|---|---|---|---|")


def table_line(r: dict) -> str:
    """One row of the Markdown table (printed here, and on the docs' speed page by scripts/speed_plots.py)."""
    return (f"| {r['weights']} ({r['size_gb']:.2f} GB) | {r['cold_wall_s']:.2f} s | {r['peak_rss_gb']:.2f} GB "
            f"| {r['load_wall_s']:.2f} s | {r['load_rss_added_gb']:.2f} GB |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench")
    p.add_argument("--size", type=int, default=480, help="input size (the checkpoint's is 480)")
    add_json_option(p)
    args = p.parse_args()
    pth, st = seeded_checkpoints(args.workdir)
    img = ROOT / "tests/fixtures/images/astronaut.png"
    out = args.workdir / "mask.png"
    print(f"input {args.size}x{args.size}, fp32, CPU, {args.repeat} runs each (median)")
    print(TABLE_HEADER)
    rows = []
    for path in (pth, st):
        cli = [sys.executable, "general_inference.py", "--img", str(img), "--exp", "the face of the astronaut",
               "--sp", str(out), "--weights", str(path), "--device", "cpu", "--opts", "input.size", str(args.size)]
        walls, peaks, loads, added = [], [], [], []
        for _ in range(args.repeat):
            out.unlink(missing_ok=True)
            wall, peak, _ = run_child(cli)
            assert out.is_file(), "the CLI wrote no mask"
            walls.append(wall)
            peaks.append(peak)
            _, _, text = run_child([sys.executable, "-c", LOAD_ONLY, str(path)])
            t, rss = map(float, text.split())
            loads.append(t)
            added.append(rss)
        r = {"weights": path.suffix, "size_gb": path.stat().st_size / 1e9, "cold_wall_s": median(walls),
             "peak_rss_gb": median(peaks), "load_wall_s": median(loads), "load_rss_added_gb": median(added)}
        rows.append(r)
        print(table_line(r))  # as each is measured
    if args.json:
        save_results(args.json, "startup", rows, args)


if __name__ == "__main__":
    main()
