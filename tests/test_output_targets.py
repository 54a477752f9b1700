"""Single-call outputs: --sp as a directory, unwritable targets, formats and thresholds are
settled before any model work (counted loads), and a write that still fails is one line."""
import errno
import os

import cv2
import numpy as np
import pytest
from tiny import write_images, write_tiny_model

from unilseg.cli.segment import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("targets")
    config, weights = write_tiny_model(root)
    (image,) = write_images(root / "images", 1)
    return config, weights, image


def run(capsys, tiny, *argv):
    config, weights, image = tiny
    code = main(["--img", str(image), "--exp", "the red circle", *argv, "--config", str(config),
                 "--weights", str(weights), "--device", "cpu"])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_error(code, lines, *needles, exit_code=2):
    assert code == exit_code and len(lines) == 1 and lines[0].startswith("error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("slash", ["", "/"])
def test_sp_existing_directory_gets_the_batch_name(capsys, tiny, tmp_path, loads, slash):
    code, lines = run(capsys, tiny, "--sp", str(tmp_path) + slash)
    assert code == 0 and len(loads) == 1
    written = tmp_path / f"{tiny[2].stem}__the-red-circle.png"
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [written.name]
    mask = cv2.imread(str(written), cv2.IMREAD_UNCHANGED)
    assert mask.shape == cv2.imread(str(tiny[2])).shape[:2] and set(np.unique(mask)) <= {0, 255}


def test_sp_new_directory_with_trailing_slash(capsys, tiny, tmp_path):
    code, _ = run(capsys, tiny, "--sp", str(tmp_path / "masks") + "/")
    assert code == 0 and (tmp_path / "masks" / f"{tiny[2].stem}__the-red-circle.png").is_file()


@pytest.mark.parametrize("case", ["file-parent", "proc", "sys", "lossy", "mismatch", "no-ext", "threshold-2",
                                  "threshold-0", "missing-dir", "overlay-dir"])
def test_bad_targets_fail_before_the_model_loads(capsys, tiny, tmp_path, loads, case):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "d").mkdir()
    argv, needles = {
        "file-parent": (["--sp", str(tmp_path / "notes.txt" / "m.png")], ["is a file, not a directory"]),
        "proc": (["--sp", "/proc/x.png"], ["/proc/x.png", "cannot write"]),
        "sys": (["--sp", "/sys/m.png"], ["/sys/m.png", "cannot write"]),
        "lossy": (["--sp", str(tmp_path / "m.jpg")], ["lossy", ".png"]),
        "mismatch": (["--sp", str(tmp_path / "m.png"), "--format", "npy"], ["--format", "npy"]),
        "no-ext": (["--sp", str(tmp_path / "mask")], ["cannot tell the mask format"]),
        "threshold-2": (["--sp", str(tmp_path / "m.png"), "--threshold", "2"], ["--threshold", "between 0 and 1"]),
        "threshold-0": (["--sp", str(tmp_path / "m.png"), "--threshold", "0"], ["--threshold"]),
        "missing-dir": (["--sp", str(tmp_path / "nope" / "m.png")], ["does not exist"]),
        "overlay-dir": (["--sp", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "d")], ["--overlay"]),
    }[case]
    code, lines = run(capsys, tiny, *argv)
    one_error(code, lines, *needles)
    assert loads == []  # settled before any model work
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "notes.txt"]  # nothing written


def test_format_follows_the_extension(capsys, tiny, tmp_path):
    code, _ = run(capsys, tiny, "--sp", str(tmp_path / "m.npy"))
    assert code == 0 and np.load(tmp_path / "m.npy").dtype == bool
    code, _ = run(capsys, tiny, "--sp", str(tmp_path / "m.json"), "--format", "rle-json")
    assert code == 0 and (tmp_path / "m.json").read_text().startswith('{"size"')


def test_a_write_that_fails_late_is_one_line_exit_1_no_temp_file(capsys, tiny, tmp_path, monkeypatch):
    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    code, lines = run(capsys, tiny, "--sp", str(tmp_path / "m.png"))
    one_error(code, lines, "cannot write", "m.png", "No space left on device", exit_code=1)
    assert list(tmp_path.iterdir()) == []


def test_eval_json_target_checked_before_the_model(capsys, tiny, loads):
    from unilseg.cli.eval import main as eval_main

    code = eval_main(["--data", "synthetic:1:0:64", "--json", "/proc/x.json", "--config", str(tiny[0]),
                      "--weights", str(tiny[1]), "--device", "cpu", "--no-progress"])
    one_error(code, [line for line in capsys.readouterr().err.splitlines() if line.strip()], "/proc/x.json")
    assert loads == []
