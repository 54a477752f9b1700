"""`python -m unilseg.train` / `python -m unilseg.eval`: files written, resume, one-line errors."""
import json
import subprocess
import sys

import pytest
from conftest import ROOT

from unilseg.cli.eval import main as eval_main
from unilseg.cli.train import main as train_main

TINY = str(ROOT / "src/unilseg/configs/unilseg-tiny.yaml")


@pytest.mark.slow  # trains three times, then evaluates
def test_train_resume_and_eval_commands(tmp_path, capsys):
    out = tmp_path / "run"
    common = [TINY, "--out", str(out), "--val-data", "synthetic:2:1:96", "--no-progress",
              "--opts", "train.ckpt_every", "2", "train.eval_every", "3", "train.log_every", "1"]
    assert train_main([*common, "--steps", "3"]) == 0
    assert {p.name for p in out.iterdir()} == {"config.yaml", "log.jsonl", "model.pth", "step0000002.pt",
                                                "step0000003.pt"}
    assert train_main([*common, "--steps", "4", "--resume"]) == 0  # picks up step 3, runs one more
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    # resuming from an earlier checkpoint: the log keeps one row per step
    assert train_main([*common, "--steps", "4", "--resume", str(out / "step0000003.pt")]) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [3, 4] and evals[0]["eval"]["overall"]["count"] == 8
    assert {"lr", "bce", "dice", "grad_norm", "samples_per_s"} <= set(rows[0])

    per_sample, report = tmp_path / "per.jsonl", tmp_path / "report.json"
    capsys.readouterr()
    assert eval_main(["--weights", str(out / "step0000004.pt"),  # the config travels in the file
                      "--data", "synthetic:3:5:96", "--per-sample", str(per_sample), "--json", str(report),
                      "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "granularity=part" in printed and printed.splitlines()[0].startswith("synthetic:3:5:96: 12 texts")
    lines = [json.loads(x) for x in per_sample.read_text().splitlines()]
    assert len(lines) == 12 and {"id", "text", "granularity", "source", "inter", "union", "iou"} <= set(lines[0])
    data = json.loads(report.read_text())
    assert data["overall"]["count"] == 12 and set(data["granularity"]) == {"object", "part", "group", "stuff"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--opts", "train.nope", "1"], "error: --opts: unknown config key 'train.nope'"),
        (["--data", "pictures/"], "error: cannot tell what data 'pictures/' is"),
        (["--data", "synthetic:x"], "error: bad data spec 'synthetic:x'"),
        (["--resume", "missing.pt"], "error: checkpoint not found: missing.pt; give an existing stepNNNNNNN.pt "
                                     "from a run folder, or --resume alone for the latest in --out"),
        (["--init", "missing.pth"], "error: weights file not found: missing.pth"),
        (["--opts", "train.batch_size", "100", "train.data", "synthetic:50:0:96"],
         "error: the training data has 50 items, fewer than one global batch"),
        (["--opts", "train.batch_size", "1"], "error: train.batch_size is 1; it must be at least 2 per process"),
    ],
)
def test_train_errors_are_one_line(tmp_path, capsys, argv, message):
    assert train_main([TINY, "--out", str(tmp_path / "r"), "--steps", "1", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_init_messages_name_only_train_flags(tmp_path, capsys, monkeypatch):
    """train has --init, not --weights: its messages say so (a file, or a registered name not downloaded)."""
    monkeypatch.setenv("UNILSEG_HOME", str(tmp_path / "home"))  # an empty cache: unilseg-20 is not downloaded
    for init, message in [("missing.pth", "give --init a .pth or .safetensors file, or a registered model's name"),
                          ("unilseg-20", "--init unilseg-20: its weights are not downloaded; run "
                                         "`python -m unilseg download unilseg-20`")]:
        assert train_main([TINY, "--out", str(tmp_path / "r"), "--steps", "1", "--no-progress", "--init", init]) == 2
        err = capsys.readouterr().err
        assert message in err and "--weights" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_init_takes_a_registered_model_name(tmp_path, capsys):
    out = tmp_path / "r"
    assert train_main(["unilseg-demo.yaml", "--init", "unilseg-demo", "--out", str(out), "--steps", "1",
                       "--data", "synthetic:4:0:96", "--val-data", "none", "--opts", "train.batch_size", "2",
                       "--threads", "1", "--no-progress"]) == 0
    assert (out / "model.pth").is_file()


def test_eval_refuses_the_old_workers_flag(capsys):
    with pytest.raises(SystemExit) as exit:
        eval_main(["--data", "synthetic:2", "--workers", "0"])
    assert exit.value.code == 2 and "unrecognized arguments: --workers 0" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_is_one_line_and_writes_nothing(tmp_path, capsys):
    def fails(out, *argv):
        before = sorted(out.iterdir()) if out.is_dir() else None
        assert train_main([TINY, "--out", str(out), "--steps", "1", "--no-progress", *argv]) == 2
        assert (sorted(out.iterdir()) if out.is_dir() else None) == before  # nothing trained or written
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        return err.rstrip("\n")

    missing = tmp_path / "never-ran"
    assert fails(missing, "--resume") == (
        f"error: nothing to resume in {missing}: the folder does not exist; drop --resume to start afresh")
    empty = tmp_path / "finished"
    empty.mkdir()
    (empty / "model.pth").write_bytes(b"")  # a run whose checkpoints were deleted
    assert fails(empty, "--resume") == (
        f"error: nothing to resume in {empty}: the folder holds no stepNNNNNNN.pt checkpoint; "
        "drop --resume to start afresh")
    assert fails(empty, "--resume", str(empty / "step0000005.pt")) == (
        f"error: checkpoint not found: {empty / 'step0000005.pt'}; give an existing stepNNNNNNN.pt from a run "
        "folder, or --resume alone for the latest in --out")
    assert fails(empty, "--resume", str(empty)) == (
        f"error: {empty} is a folder, not a training checkpoint; give one of its stepNNNNNNN.pt files, "
        f"or --out {empty} --resume for its latest")
    page = tmp_path / "step0000005.pt"
    page.write_bytes(b"<html><body>Not Found</body></html>")
    assert fails(empty, "--resume", str(page)) == (
        f"error: {page} is not a PyTorch checkpoint: it starts with '<html><body>Not ' (an HTML page, perhaps a "
        "failed download); download the file again")


def test_unknown_train_setting_in_config(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(open(TINY).read().replace("  workers: 0\n", "  workers: 0\n  epochs: 3\n"))
    assert train_main([str(config), "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.startswith("error: unknown train setting(s) epochs; known: data, val_data")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "synthetic:2", "--weights", "nothing.pth"], "error: weights file not found: nothing.pth"),
        (["--data", "nope.jsonl", "--weights", "nothing.pth"], "error: cannot read manifest nope.jsonl"),
        (["--data", "refcoco:val"], "error: --data refcoco:val needs --refer-root"),
        (["--data", "synthetic:2", "--model", "no-such-model"], "error: unknown model 'no-such-model'"),
        (["--data", "synthetic:2", "--batch-size", "0"],
         "error: --batch-size must be at least 1, not 0"),
        # --model with --weights: the model's config, these weights (as in every subcommand)
        (["--data", "synthetic:2", "--model", "unilseg-20", "--weights", "x.pth"],
         "error: weights file not found: x.pth"),
    ],
)
def test_eval_errors_are_one_line(capsys, argv, message):
    assert eval_main([*argv, "--config", TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_module_entry_points_answer_help():
    for module in ("unilseg.train", "unilseg.eval"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0 and "usage:" in done.stdout
