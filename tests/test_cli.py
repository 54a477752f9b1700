"""The command line: bad input gives one `error:` line, exit code 2, and no output file."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT

from unilseg.cli.segment import main

IMG = str(FIXTURES / "images/chelsea.png")


def run_cli(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0]


def test_missing_image(capsys, tmp_path):
    out = tmp_path / "m.png"
    code, err = run_cli(capsys, "--img", str(tmp_path / "none.jpg"), "--exp", "cat", "--sp", str(out))
    assert_one_line_error(code, err, "image not found", "none.jpg")
    assert not out.exists()


def test_non_image_file(capsys, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "m.png"
    code, err = run_cli(capsys, "--img", str(bad), "--exp", "cat", "--sp", str(out))
    assert_one_line_error(code, err, "cannot read", "notes.png")
    assert not out.exists()


def test_empty_expression(capsys, tmp_path):
    out = tmp_path / "m.png"
    code, err = run_cli(capsys, "--img", IMG, "--exp", "   ", "--sp", str(out))
    assert_one_line_error(code, err, "--exp is empty")
    assert not out.exists()


def test_missing_checkpoint(capsys, tmp_path):
    out = tmp_path / "m.png"
    code, err = run_cli(capsys, "--img", IMG, "--exp", "cat", "--sp", str(out), "--weights", str(tmp_path / "w.pth"))
    assert_one_line_error(code, err, "weights file not found", "w.pth")
    assert not out.exists()


def test_wrong_checkpoint(capsys, tmp_path):
    wrong = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, wrong)
    out = tmp_path / "m.png"
    code, err = run_cli(capsys, "--img", IMG, "--exp", "cat", "--sp", str(out), "--weights", str(wrong))
    assert_one_line_error(code, err, "does not match this model", "missing:", "unexpected: conv1.weight")
    assert not out.exists()


def test_unwritable_output_directory(capsys, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "m.png"
    code, err = run_cli(capsys, "--img", IMG, "--exp", "cat", "--sp", str(out))
    assert_one_line_error(code, err, "does not exist")
    assert not out.exists()


def test_unavailable_device(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    code, err = run_cli(capsys, "--img", IMG, "--exp", "cat", "--sp", str(tmp_path / "m.png"), "--device", "cuda")
    assert_one_line_error(code, err, "CUDA is not available")


def test_subprocess_error_has_no_traceback(tmp_path):
    out = tmp_path / "m.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "general_inference.py"), "--img", str(tmp_path / "x.jpg"), "--exp", "cat",
         "--sp", str(out)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not out.exists()


def test_help_does_not_import_torch():
    code = ("import sys; from unilseg.cli.segment import get_parser; get_parser().format_help(); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.stdout.strip() == "False"


def test_long_expression_warns_in_one_line_and_still_writes(capsys, tmp_path, seeded_checkpoint):
    out = tmp_path / "m.png"
    long_text = "the handle of the white coffee cup on the saucer, which is on a wooden table next to a spoon"
    code, err = run_cli(capsys, "--img", IMG, "--exp", long_text, "--sp", str(out), "--weights",
                        str(seeded_checkpoint), "--device", "cpu", "--threshold", "0.5")
    assert code == 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("warning: expression has 21 word pieces; only the first 15 are used: ")
    import cv2

    mask = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (300, 451) and set(np.unique(mask)) <= {0, 255}
    # seeded random weights find nothing here: the single call says so in one note, with the top score
    assert not mask.any() and len(lines) == 2
    assert lines[1].startswith("note: the mask is empty: nothing scored above the threshold (the top score was 0.")
    assert not list(tmp_path.glob(".*.part"))
