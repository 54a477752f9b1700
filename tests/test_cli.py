"""The command line: bad input gives one `error:` line, exit code 2, and no output file."""
import re
import subprocess
import sys

import cv2
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


@pytest.mark.slow
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


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny import write_images, write_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    config, weights = write_tiny_model(root)
    return config, weights, write_images(root / "images", 2)


def tiny_args(tiny):
    return ["--config", str(tiny[0]), "--weights", str(tiny[1]), "--device", "cpu"]


@pytest.mark.parametrize("what", [["--exp", "a red circle"], ["--classes", "a red circle,the blue thing"]])
def test_batch_overlay_takes_the_same_spellings_for_masks_and_label_maps(capsys, tiny, tmp_path, what):
    """One rule for a batch's --overlay: jpg (no value), png, .png, PNG; a path is refused the same way."""
    images = [str(p) for p in tiny[2]]
    for value, suffix in [([], ".overlay.jpg"), (["png"], ".overlay.png"), ([".png"], ".overlay.png"),
                          (["PNG"], ".overlay.png")]:
        out = tmp_path / f"out{len(value)}{value[0] if value else ''}".replace(".", "_")
        assert main([*tiny_args(tiny), "--img", *images, *what, "--sp", str(out), "--overlay", *value]) == 0
        assert len(list(out.glob(f"*{suffix}"))) == 2, sorted(out.iterdir())
    code, err = run_cli(capsys, *tiny_args(tiny), "--img", *images, *what, "--sp", str(tmp_path / "x"),
                        "--overlay", "a/b.png")
    assert_one_line_error(code, err, "--overlay a/b.png: in a batch give jpg or png")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # two subprocesses that import torch
def test_threads_sets_torch_intra_op_threads(tiny, tmp_path):
    """--threads N is torch's thread count for the run (default: torch's own, left alone)."""
    code = ("import sys, torch; from unilseg.cli.segment import main; before = torch.get_num_threads(); "
            "rc = main(sys.argv[1:]); print(rc, before, torch.get_num_threads())")
    base = [*tiny_args(tiny), "--img", str(tiny[2][0]), "--exp", "a red circle"]
    for threads, expect in [(["--threads", "3"], 3), ([], None)]:
        done = subprocess.run([sys.executable, "-c", code, *base, "--sp", str(tmp_path / f"m{expect}.png"),
                               *threads], capture_output=True, text=True, cwd=ROOT, timeout=300)
        rc, before, after = map(int, done.stdout.split())
        assert rc == 0 and after == (before if expect is None else expect), done.stderr


@pytest.mark.parametrize("argv, needle", [
    (["--threads", "0"], "--threads must be at least 1, not 0"),
    (["--precision", "int8"], "--precision int8 runs on ONNX Runtime"),
    (["--runtime", "onnx", "--compile"], "--compile applies to --runtime torch; an onnx export is compiled already"),
])
def test_model_flag_rules_are_one_line_before_any_work(capsys, tiny, tmp_path, loads, argv, needle):
    code, err = run_cli(capsys, *tiny_args(tiny), "--img", str(tiny[2][0]), "--exp", "cat",
                        "--sp", str(tmp_path / "m.png"), *argv)
    assert_one_line_error(code, err, needle)
    assert not loads and not (tmp_path / "m.png").exists()


def test_load_predictor_is_the_typed_constructor_and_speaks_in_its_keywords(tiny):
    import unilseg
    from unilseg.errors import UnilsegError
    from unilseg.inference import load_predictor
    from unilseg.inference.predictor import Predictor
    from unilseg.model.build import load_model

    assert unilseg.load_predictor is load_predictor
    predictor = load_predictor(weights=tiny[1], config=tiny[0], device="cpu", threshold=0.4)
    image = cv2.imread(str(tiny[2][0]))
    reference = Predictor(load_model(tiny[1], tiny[0]), threshold=0.4)
    for p in (predictor, reference):
        p.set_image(image)
    assert np.array_equal(predictor.predict(["a red circle"])[0].prob, reference.predict(["a red circle"])[0].prob)
    for kwargs, message in [
        ({"precision": "int8"}, "precision int8 runs on ONNX Runtime: `unilseg export --format onnx --quantize "
                                "int8`, then add runtime onnx"),
        ({"runtime": "onnx", "compile": True}, "compile applies to runtime torch"),
        ({"runtime": "onnx", "opts": ["model.x", "1"]}, "opts model.x: an onnx export's network"),
        ({"runtime": "tpu"}, "unknown runtime 'tpu'"),
        ({"threads": 0}, "threads must be at least 1, not 0"),
    ]:
        with pytest.raises(UnilsegError, match="^" + re.escape(message)):
            load_predictor(weights=tiny[1], **kwargs)
