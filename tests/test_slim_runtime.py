"""Deploying without PyTorch: `--runtime onnx` imports no torch, and a slim install runs it.

- Every front end on `--runtime onnx` (a single call, a batch, `--classes`, `--video`, `unilseg serve`,
  `unilseg demo`) ends with no torch module loaded: a `sitecustomize` hook writes the process's torch
  modules at exit. `-X importtime` of a single call lists none either.
- A fresh virtual environment with only Dockerfile.onnx's install lines (torch not importable there),
  given an export made here, writes masks byte-equal to this environment's `--runtime onnx` for a
  single call, a 2x2 batch and `--classes`; the commands that need torch say so in one line.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src/unilseg/demo/examples"
SCENES = [EXAMPLES / "demo_scene.png", EXAMPLES / "demo_scene_2.png"]
CLASSES = "sky: the sky,car: the red car,tree: all trees"
HOOK = """import atexit, os, sys
def _record():
    with open(os.environ["UNILSEG_TEST_MODULES"], "a") as f:
        f.write(repr(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))) + "\\n")
atexit.register(_record)
"""


def run(argv: list[str], env: dict[str, str] | None = None, check: bool = True, cwd: Path = ROOT,
        timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def export(module_tmp) -> Path:
    """An fp32 ONNX export of the demo model, made by this (full) environment."""
    out = module_tmp / "demo-onnx"
    run([sys.executable, "-m", "unilseg", "export", "--model", "unilseg-demo", "--device", "cpu", "--format", "onnx",
         "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    """-> (environment that records each process's torch modules at exit, the file they go to)."""
    folder = tmp_path_factory.mktemp("hook")
    (folder / "sitecustomize.py").write_text(HOOK)
    record = folder / "modules.txt"
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "UNILSEG_TEST_MODULES": str(record),
            "GRADIO_ANALYTICS_ENABLED": "False"}, record


def front_end_calls(export: Path, out: Path) -> dict[str, list[str]]:
    """The `unilseg` arguments of each front end the slim runtime serves, writing under `out`."""
    flags = ["--runtime", "onnx", "--weights", str(export), "--device", "cpu", "--threads", "2"]
    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for scene in SCENES:
        shutil.copy(scene, folder / scene.name)
    return {
        "single": ["--img", str(SCENES[0]), "--exp", "the red car", "--sp", str(out / "single.png"), *flags],
        "batch": ["--img", str(folder), "--exp", "the red car", "--exp", "the sky", "--sp", str(out / "batch"),
                  *flags],
        "classes": ["--img", str(SCENES[1]), "--classes", CLASSES, "--sp", str(out / "labels.png"), *flags],
    }


@pytest.mark.slow
def test_no_front_end_on_onnx_imports_torch(export, hooked, tmp_path):
    env, record = hooked
    calls = front_end_calls(export, tmp_path / "out")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        shutil.copy(SCENES[i % 2], frames / f"{i:03d}.png")
    calls["video"] = ["--video", str(frames), "--exp", "the red car", "--sp", str(tmp_path / "video"),
                      *calls["single"][calls["single"].index("--runtime"):]]
    for name, argv in calls.items():
        record.unlink(missing_ok=True)
        run([sys.executable, "-m", "unilseg", *argv], env=env)
        lines = record.read_text().splitlines()
        assert lines and all(line == "[]" for line in lines), f"{name}: torch modules loaded: {lines}"
    assert (tmp_path / "out" / "single.png").is_file() and (tmp_path / "out" / "labels.png").is_file()
    assert len(list((tmp_path / "out" / "batch").rglob("*.png"))) == 4


@pytest.mark.slow
def test_importtime_of_an_onnx_call_lists_no_torch(export, tmp_path):
    out = tmp_path / "mask.png"
    proc = run([sys.executable, "-X", "importtime", "-m", "unilseg", "--img", str(SCENES[0]), "--exp", "the sky",
                "--sp", str(out), "--runtime", "onnx", "--weights", str(export), "--device", "cpu"])
    modules = [line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "onnxruntime" in modules and "unilseg.inference.predictor" in modules and out.is_file()
    assert not [m for m in modules if m.split(".")[0] == "torch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_stop(argv: list[str], env: dict[str, str], url: str, request) -> subprocess.CompletedProcess:
    """Start `unilseg ARGV`, wait until `url` answers, make `request(client)`, stop it with Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "unilseg", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} did not answer"
            time.sleep(0.5)
        with httpx.Client(timeout=120) as client:
            request(client)
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0]
    return subprocess.CompletedProcess(argv, proc.returncode, output)


@pytest.mark.slow
def test_serve_and_demo_on_onnx_import_no_torch(export, hooked):
    import base64

    env, record = hooked
    flags = ["--runtime", "onnx", "--weights", str(export), "--device", "cpu", "--threads", "1"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def segment(client: httpx.Client) -> None:
        image = base64.b64encode(SCENES[0].read_bytes()).decode("ascii")
        answer = client.post(f"{base}/v1/segment", json={"image": image, "instructions": ["the red car"]})
        assert answer.status_code == 200 and answer.json()["results"][0]["present"] is not None, answer.text

    record.unlink(missing_ok=True)
    serve_and_stop(["serve", *flags, "--port", str(port)], env, f"{base}/readyz", segment)
    lines = record.read_text().splitlines()
    assert lines and all(line == "[]" for line in lines), f"serve: torch modules loaded: {lines}"

    port = free_port()
    record.unlink(missing_ok=True)
    serve_and_stop(["demo", *flags, "--port", str(port)], env, f"http://127.0.0.1:{port}/", lambda client: None)
    lines = record.read_text().splitlines()
    assert lines and all(line == "[]" for line in lines), f"demo: torch modules loaded: {lines}"


@pytest.fixture(scope="module")
def slim(module_tmp) -> Path:
    """A fresh virtual environment with Dockerfile.onnx's install lines only (`scripts/slim_venv.py`) -> its
    python."""
    lines = (ROOT / "Dockerfile.onnx").read_text().splitlines()
    installs = [line for line in lines if line.startswith("RUN pip install ")]
    assert "-r requirements-onnx.txt" in installs[0] and installs[-1].endswith("--no-deps .")
    venv = module_tmp / "slim-venv"
    run([sys.executable, str(ROOT / "scripts/slim_venv.py"), str(venv)], timeout=900)
    return venv / "bin" / "python"


def pins(text: str) -> dict[str, str]:
    """name -> version of each `name==version` in a requirements file or a Dockerfile's lines."""
    return {m[0].lower(): m[1] for m in re.findall(r"(?<![\w.-])([A-Za-z][\w.-]*)==([\w.]+)", text)}


def test_slim_pins_are_the_full_install_pins():
    full = pins((ROOT / "requirements.txt").read_text())
    slim = {**pins((ROOT / "requirements-onnx.txt").read_text()), **pins((ROOT / "Dockerfile.onnx").read_text())}
    assert {"numpy", "onnxruntime", "opencv-python-headless", "tokenizers"} <= slim.keys()
    assert "torch" not in slim and {k: v for k, v in slim.items() if full.get(k) != v} == {}


@pytest.mark.slow
def test_slim_install_has_no_torch_and_gives_the_full_install_masks(slim, export, tmp_path):
    assert run([str(slim), "-c", "import torch"], check=False).returncode != 0
    assert run([str(slim), "-c", "import torchvision"], check=False).returncode != 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outputs = {}
    for name, python in (("full", Path(sys.executable)), ("slim", slim)):
        out = tmp_path / name
        for argv in front_end_calls(export, out).values():
            run([str(python), "-m", "unilseg", *argv], env=env, cwd=tmp_path)
        outputs[name] = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*.png"))
                         if "images" not in p.parts}
    full, thin = outputs["full"], outputs["slim"]
    assert Path("single.png") in full and Path("labels.png") in full
    assert len([p for p in full if p.parts[0] == "batch"]) == 4  # 2 images x 2 instructions
    assert thin.keys() == full.keys()
    assert [p for p in full if thin[p] != full[p]] == []


@pytest.mark.slow
def test_slim_install_says_in_one_line_what_needs_torch(slim, export, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    calls = [["--model", "unilseg-demo", "--img", str(SCENES[0]), "--exp", "the sky", "--sp", str(tmp_path / "a.png")],
             ["export", "--model", "unilseg-demo", "--format", "onnx", "--out", str(tmp_path / "exp")],
             ["train", str(ROOT / "src/unilseg/configs/unilseg-demo.yaml"), "--out", str(tmp_path / "run")]]
    for argv in calls:
        proc = run([str(slim), "-m", "unilseg", *argv], env=env, check=False, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (argv, proc.stderr)
        assert "needs PyTorch" in lines[0] and "--runtime onnx" in lines[0], lines[0]
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "exp").exists()
