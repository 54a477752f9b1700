"""The package as a user installs it: a wheel, installed elsewhere, run from a directory outside
the checkout, finds its configs and demo weights and writes what the checkout writes."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # builds and installs a wheel, then runs it in subprocesses

FIRST_COMMAND = ["--model", "unilseg-demo", "--img", "imgs/demo_scene.png", "--exp", "the roof of the red house",
                 "--sp", "roof.png"]  # the README's first command, after `python -m unilseg`


@pytest.fixture(scope="module")
def installed(module_tmp):
    """(site dir with the wheel installed, environment that imports it first, a work dir outside the checkout)."""
    tmp = module_tmp
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q",
                            "-w", str(tmp / "dist")], capture_output=True, text=True, cwd=tmp)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp / "dist").glob("unilseg-*.whl")
    site = tmp / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                              str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp / "work"
    (work / "imgs").mkdir(parents=True)
    shutil.copy(ROOT / "imgs" / "demo_scene.png", work / "imgs")
    shutil.copy(ROOT / "imgs" / "demo_scene_2.png", work / "imgs")
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(tmp / "cache")}
    env.pop("UNILSEG_HOME", None)
    return site, env, work


def unilseg(installed, *argv, cwd=None):
    site, env, work = installed
    return subprocess.run([sys.executable, "-m", "unilseg", *argv], capture_output=True, text=True, env=env,
                          cwd=cwd or work, timeout=600)


def test_the_wheel_is_what_runs(installed):
    site, env, work = installed
    out = subprocess.run([sys.executable, "-c", "import unilseg; print(unilseg.__file__)"], capture_output=True,
                         text=True, env=env, cwd=work)
    assert Path(out.stdout.strip()).is_relative_to(site)
    assert (site / "unilseg" / "configs" / "unilseg-demo.yaml").is_file()
    assert (site / "unilseg" / "weights" / "unilseg-demo.safetensors").is_file()


def test_first_command_models_and_a_batch_match_the_checkout(installed, tmp_path):
    site, env, work = installed
    first = unilseg(installed, *FIRST_COMMAND)
    assert first.returncode == 0, first.stderr
    models = unilseg(installed, "models")
    assert models.returncode == 0, models.stderr
    assert f"unilseg-demo   found in package: {site / 'unilseg' / 'weights' / 'unilseg-demo.safetensors'}" \
        in models.stdout
    assert "unilseg-20     not found; run `python -m unilseg download unilseg-20`" in models.stdout
    batch = ["--model", "unilseg-demo", "--img", "imgs/demo_scene.png", "imgs/demo_scene_2.png",
             "--exp", "the sky", "--exp", "all trees", "--sp", "batch"]
    assert unilseg(installed, *batch).returncode == 0

    # the same commands from the checkout, in another directory
    ref = tmp_path / "ref"
    shutil.copytree(work / "imgs", ref / "imgs")
    checkout_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for argv in (FIRST_COMMAND, batch):
        done = subprocess.run([sys.executable, str(ROOT / "general_inference.py"), *argv], cwd=ref,
                              capture_output=True, text=True, env=checkout_env, timeout=600)
        assert done.returncode == 0, done.stderr
    assert (work / "roof.png").read_bytes() == (ref / "roof.png").read_bytes()
    names = sorted(p.name for p in (work / "batch").glob("*.png"))
    assert len(names) == 4
    for name in names:
        assert (work / "batch" / name).read_bytes() == (ref / "batch" / name).read_bytes(), name
