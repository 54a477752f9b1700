"""Helpers shared by the benchmark scripts: seeded full-size checkpoints, child-process timing."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def seeded_checkpoints(workdir: Path) -> tuple[Path, Path]:
    """Full-size UniLSeg-20 checkpoints with seeded weights: official .pth and converted .safetensors."""
    from seeded import official_seeded_checkpoint

    from unilseg.model.convert import convert

    workdir.mkdir(parents=True, exist_ok=True)
    pth, st = workdir / "seed0.pth", workdir / "seed0.safetensors"
    if not pth.exists():
        official_seeded_checkpoint(ROOT / "tests/fixtures/keys.tsv", 0, pth)
    if not st.exists():
        convert(pth, st)
    return pth, st


def run_child(argv: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Run a process to completion -> (wall seconds, peak RSS in GB, stdout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{err}")
    return wall, usage.ru_maxrss / 1e6, out


def median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2]
