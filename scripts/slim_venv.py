"""Make the slim runtime (ONNX Runtime, no PyTorch) in a virtual environment, with Dockerfile.onnx's own lines.

    python scripts/slim_venv.py VENV        then: VENV/bin/unilseg --runtime onnx --weights EXPORT_DIR ...

Runs each `RUN pip install ...` line of Dockerfile.onnx, unchanged, into VENV (with this
Python's pip: the venv is made without one) in the repository root (the image's working
directory holds the same files), so the venv and the container hold the same packages. tests/test_slim_runtime.py and
benchmarks/slim_runtime.py build theirs with it.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile.onnx"


def install_lines(dockerfile: Path = DOCKERFILE) -> list[list[str]]:
    """The arguments after `pip install` of each `RUN pip install` line, in order."""
    lines = [shlex.split(line)[3:] for line in dockerfile.read_text().splitlines()
             if line.startswith("RUN pip install ")]
    if not lines:
        raise SystemExit(f"error: {dockerfile} has no `RUN pip install` line")
    return lines


def build(venv: Path, quiet: bool = True) -> Path:
    """Create `venv` (if it is not one yet) and install the slim runtime into it -> its python.

    The venv is made without pip: this process's pip installs into it (`pip --python`), so the runtime
    holds no installer (pip and setuptools are 25 MB of a venv that only runs)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    for args in install_lines():
        extra = ["--quiet"] if quiet else []
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--disable-pip-version-check",
                        *extra, *args], check=True, cwd=ROOT)
    return python


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("venv", type=Path, help="the virtual environment to make (or to install into)")
    args = p.parse_args()
    try:
        python = build(args.venv.resolve(), quiet=False)
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"error: {shlex.join(map(str, e.cmd))} exited {e.returncode}") from None
    print(f"slim runtime in {args.venv}: {python.parent / 'unilseg'} --runtime onnx --weights EXPORT_DIR ...")


if __name__ == "__main__":
    main()
