"""A new user's first commands, from the folder that holds a fresh clone (git names it `unilseg`).

That folder is on sys.path (`python -m` and a script put their directory first, Ray's actors
start in the driver's directory), so a clone whose top-level `unilseg/` were importable would
shadow the installed package as a namespace package. With the src layout the installed package
(here: ROOT/src on PYTHONPATH, as an install puts it on sys.path) is the one imported.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXTURES, ROOT
from PIL import Image

IMAGE = FIXTURES / "images" / "astronaut.png"
DEMO = ["--model", "unilseg-demo", "--device", "cpu"]


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A folder holding a fresh `git clone` of this repository, named `unilseg` as git names it."""
    folder = tmp_path_factory.mktemp("newuser")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder / "unilseg")], check=True, timeout=120)
    assert (folder / "unilseg" / "src" / "unilseg" / "__init__.py").is_file()
    return folder


def run(parent: Path, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(list(argv), cwd=parent, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def assert_mask(path: Path, like: Path = IMAGE) -> None:
    mask = np.asarray(Image.open(path))
    assert mask.shape == np.asarray(Image.open(like)).shape[:2] and set(np.unique(mask)) <= {0, 255}


def test_the_installed_package_is_imported_not_the_clone(parent):
    proc = run(parent, sys.executable, "-c", "import unilseg; print(unilseg.__file__)")
    assert Path(proc.stdout.strip()) == ROOT / "src" / "unilseg" / "__init__.py"


def test_python_m_unilseg(parent):
    run(parent, sys.executable, "-m", "unilseg", *DEMO, "--img", str(IMAGE), "--exp", "the sky", "--sp", "sky.png")
    assert_mask(parent / "sky.png")


def test_a_script_saved_there(parent):
    script = parent / "try_unilseg.py"
    script.write_text(
        "import sys\n"
        "import unilseg\n\n"
        "model = unilseg.load_model('unilseg-demo', device='cpu')\n"
        "predictor = unilseg.Predictor(model)\n"
        "predictor.set_image(sys.argv[1])\n"
        "(p,) = predictor.predict(['the sky'])\n"
        "print(p.text, p.mask.shape, p.mask.dtype)\n")
    proc = run(parent, sys.executable, str(script), str(IMAGE))
    height, width = np.asarray(Image.open(IMAGE)).shape[:2]
    assert proc.stdout.strip() == f"the sky ({height}, {width}) bool"


@pytest.mark.slow  # starts Ray
def test_unilseg_ray_with_one_actor(parent):
    pytest.importorskip("ray")
    console = Path(sys.executable).parent / "unilseg"  # the command the install puts next to python
    command = [str(console)] if console.is_file() else [shutil.which("unilseg") or "unilseg"]
    run(parent, *command, "ray", *DEMO, "--img", str(IMAGE), "--exp", "the sky", "--exp", "the face",
        "--sp", "out_ray", "--actors", "1", "--cpus-per-actor", "1", "--no-progress", timeout=400)
    rows = [json.loads(line) for line in (parent / "out_ray" / "results.jsonl").read_text().splitlines()]
    assert sorted(Path(r["output"]).name for r in rows) == ["astronaut__the-face.png", "astronaut__the-sky.png"]
    assert all(r["error"] is None for r in rows)
    for row in rows:
        assert_mask(parent / row["output"])
