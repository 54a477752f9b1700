"""Helpers shared by the benchmark scripts: seeded full-size checkpoints, child-process timing, --json output."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from unilseg.inference.backends.cpu import CpuFeatures, parse_cpuinfo  # noqa: E402 (imports no torch)

RESULTS_FORMAT = 1
# /proc/cpuinfo flags that change which kernels run: oneDNN's bf16 and ORT's int8 paths
CPU_FLAGS = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


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


def _version(module: str, *distributions: str) -> str | None:
    """The imported module's __version__ (torch's carries its build, +cu130), else the installed distribution's."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    for name in distributions or (module,):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return None


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def machine(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """What a timing depends on: CPU model and flags, cores, library versions; torch's view only if it is imported
    (a benchmark whose parent process stays without torch is not made to import it here)."""
    try:  # the parser `unilseg models` prints its CPU line with
        cpu = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        cpu = CpuFeatures(platform.processor() or platform.machine(), None)
    flags = cpu.flags or frozenset()
    torch = sys.modules.get("torch")
    return {
        "cpu": cpu.model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),  # children inherit it (throughput.py --threads sets it)
        "load_average": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime", "onnxruntime", "onnxruntime-gpu"),
        "commit": _git_revision(),
    }


def _rounded(value):
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def save_results(path: Path, name: str, rows: list[dict], args: argparse.Namespace) -> dict:
    """Write what a benchmark measured as one JSON document (`scripts/speed_plots.py` reads it) -> the document.

    {"format": 1, "name", "command" (as typed, `python` for the interpreter), "args" (the parsed options),
    "date" (UTC, ISO 8601), "machine" (see `machine`), "rows": the numbers its tables print, one dict a row}.
    """
    doc = {
        "format": RESULTS_FORMAT,
        "name": name,
        "command": shlex.join(["python", *sys.argv]),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "rows": _rounded(rows),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, metavar="PATH",
                        help="also write the measurements to PATH as JSON (scripts/speed_plots.py draws them)")
