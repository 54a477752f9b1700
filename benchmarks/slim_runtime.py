"""The slim runtime (ONNX Runtime, no PyTorch) against the full install: size on disk and cold calls.

    python benchmarks/slim_runtime.py [--repeat 3] [--slim /tmp/unilseg-slim] [--workdir /tmp/unilseg-bench]
                                      [--json PATH]

- size: the slim venv (`scripts/slim_venv.py`, Dockerfile.onnx's lines; made at --slim if it is
  not there) and this one (the full install: torch, every extra; a Label Studio server venv
  nested inside it is left out), each `du` of the whole venv, plus torch's own share of this one;
- cold call: a fresh `unilseg` process from start to the mask written, on seeded full-size UniLSeg-20
  (480-px input): `--runtime onnx` on its fp32 and int8 exports in the slim venv and in this one
  (where the ONNX path imports no torch either, but the packages are the full install's), and the
  torch runtime on its .safetensors; median of --repeat, with peak RSS, against torch fp32 in the
  same run and against the authors' script (--authors: their code is not in this repository, so
  its figure is the one measured before, on this kind of machine). The masks of the two venvs are
  compared byte for byte.

Prints Markdown tables; --json PATH also writes their numbers (`_common.save_results`).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, add_json_option, median, run_child, save_results, seeded_checkpoints
from onnx_runtime import exports

sys.path.insert(0, str(ROOT / "scripts"))
from slim_venv import build  # noqa: E402

IMAGE = ROOT / "tests/fixtures/images/astronaut.png"
TEXT = "the astronaut's face"
AUTHORS_COLD_S = 24.4  # their general_inference.py, one cold call on the 2-core AVX-512 EPYC (docs/speed.md, Start-up)


def du(path: Path, leave_out: tuple[Path, ...] = ()) -> int:
    """Bytes on disk under `path` (du -s), less those of the folders `leave_out`."""
    def size(p: Path) -> int:
        return int(subprocess.run(["du", "-sk", str(p)], capture_output=True, text=True, check=True).stdout.split()[0])
    return (size(path) - sum(size(p) for p in leave_out if p.exists())) * 1024


def cold_calls(argv: list[str], out: Path, repeat: int) -> tuple[float, float, bytes]:
    """-> (median wall s, median peak RSS GB, the mask's bytes) of `repeat` fresh processes running `argv`
    (a single call writing `out`)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    walls, peaks = [], []
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        wall, peak, _ = run_child(argv, env=env)
        walls.append(wall)
        peaks.append(peak)
    return median(walls), median(peaks), out.read_bytes()


def prepare(workdir: Path) -> None:
    """(child process) the seeded checkpoints and their fp32/int8 exports, made once under `workdir`."""
    pth, _ = seeded_checkpoints(workdir)
    exports(workdir, pth)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--slim", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-slim")
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "unilseg-bench")
    p.add_argument("--authors", type=float, default=AUTHORS_COLD_S,
                   help=f"the authors' cold call on this kind of machine, s (default {AUTHORS_COLD_S}: the docs')")
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    add_json_option(p)
    args = p.parse_args()
    if args.prepare:
        return prepare(args.workdir)
    slim = args.slim / "bin" / "python"
    if not (args.slim / "bin" / "unilseg").exists():
        build(args.slim)
    full = Path(sys.prefix)
    site = next((full / "lib").glob("python3*/site-packages"))
    torch_dirs = [site / name for name in os.listdir(site) if name.split("-")[0] in ("torch", "nvidia", "triton")]
    sizes = {"slim": du(args.slim), "full": du(full, (full / "label-studio",)), "torch": sum(map(du, torch_dirs))}
    rows = [{"table": "size", "venv": "slim", "mb": sizes["slim"] / 1e6, "torch_mb": None},
            {"table": "size", "venv": "full", "mb": sizes["full"] / 1e6, "torch_mb": sizes["torch"] / 1e6}]
    print("| venv | size on disk |\n|---|---|")
    print(f"| slim (`scripts/slim_venv.py`, Dockerfile.onnx) | {sizes['slim'] / 1e6:.0f} MB |")
    print(f"| full (`scripts/install.sh`: torch and every extra) | {sizes['full'] / 1e6:.0f} MB "
          f"(torch, its CUDA libraries and triton: {sizes['torch'] / 1e6:.0f} MB) |")

    # in a child: a cold call's peak RSS starts from its parent's at fork, so this process stays small
    run_child([sys.executable, __file__, "--prepare", "--workdir", str(args.workdir)])
    dirs = {v: args.workdir / f"onnx-{v}" for v in ("fp32", "int8")}
    base = ["-m", "unilseg", "--img", str(IMAGE), "--exp", TEXT, "--device", "cpu"]
    calls = {("torch fp32 (.safetensors)", "full"): [sys.executable, *base, "--weights",
                                                     str(args.workdir / "seed0.safetensors"), "--config", "unilseg20"]}
    for variant, export in dirs.items():
        for name, python in (("slim", slim), ("full", Path(sys.executable))):
            calls[f"ORT {variant}", name] = [str(python), *base, "--runtime", "onnx", "--weights", str(export)]
    print(f"\nseeded UniLSeg-20, 480x480, CPU ({os.cpu_count()} cores), one cold call (process start to mask "
          f"written), median of {args.repeat}\n")
    print(f"| runtime | venv | wall (s) | peak RSS (GB) | vs torch fp32 | vs the authors' script ({args.authors} s) |")
    print("|---|---|---|---|---|---|")
    masks, walls = {}, {}
    for (runtime, venv), argv in calls.items():
        out = args.workdir / f"cold-{len(walls)}.png"
        wall, peak, masks[runtime, venv] = cold_calls([*argv, "--sp", str(out)], out, args.repeat)
        walls[runtime, venv] = wall
        ref = walls["torch fp32 (.safetensors)", "full"]
        rows.append({"table": "cold", "runtime": runtime, "venv": venv, "wall_s": wall, "peak_rss_gb": peak,
                     "vs_torch_fp32": wall / ref, "vs_authors": wall / args.authors})
        print(f"| {runtime} | {venv} | {wall:.2f} | {peak:.2f} | {wall / ref:.2f}x | {wall / args.authors:.2f}x |")
    for variant in dirs:
        same = masks[f"ORT {variant}", "slim"] == masks[f"ORT {variant}", "full"]
        rows.append({"table": "masks", "variant": variant, "byte_equal": same})
        print(f"\nORT {variant}: masks byte-equal between the slim and the full venv: {'yes' if same else 'NO'}")
    if args.json:
        save_results(args.json, "slim_runtime", rows, args)


if __name__ == "__main__":
    main()
