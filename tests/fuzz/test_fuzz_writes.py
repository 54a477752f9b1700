"""Every write is guarded: targets that cannot be written are refused before work (2); a write that
passes the checks and still fails (disk full, permission lost) is one line, exit 1, no temporary file."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fuzz.hostile import animated_gif, image_bytes

DEMO = ["--model", "unilseg-demo", "--device", "cpu"]
TRAIN = ["train", "unilseg-tiny", "--steps", "1", "--data", "synthetic:8", "--val-data", "none", "--device", "cpu",
         "--no-progress", "--opts", "train.batch_size", "2"]


def image(box) -> str:
    path = box.inp / "a.png"
    path.write_bytes(image_bytes())
    return str(path)


def demo_weights() -> str:
    import unilseg

    return str(Path(unilseg.__file__).parent / "weights" / "unilseg-demo.safetensors")


# argv (IMG: the sandbox's image, OUT: its output folder) for each subcommand, given a target
TARGETS = {
    "segment-sp": lambda t: ["--img", "IMG", "--exp", "x", "--sp", f"{t}/m.png", *DEMO],
    "segment-sp-dir": lambda t: ["--img", "IMG", "--exp", "x", "--sp", f"{t}/", *DEMO],
    "segment-save-prob": lambda t: ["--img", "IMG", "--exp", "x", "--sp", "m.png", "--save-prob", f"{t}/p.npy", *DEMO],
    "segment-overlay": lambda t: ["--img", "IMG", "--exp", "x", "--sp", "m.png", "--overlay", f"{t}/o.png", *DEMO],
    "batch-sp": lambda t: ["--img", "IMG", "--exp", "x", "--exp", "y", "--sp", f"{t}/masks", *DEMO],
    "labels-sp": lambda t: ["--img", "IMG", "--classes", "a,b", "--sp", f"{t}/labels.png", *DEMO],
    "video-sp": lambda t: ["--video", "VIDEO", "--exp", "x", "--sp", f"{t}/v", *DEMO],
    "eval-json": lambda t: ["eval", "--data", "synthetic:2", "--json", f"{t}/x.json", *DEMO],
    "eval-per-sample": lambda t: ["eval", "--data", "synthetic:2", "--per-sample", f"{t}/x.jsonl", *DEMO],
    "convert": lambda t: ["convert", "WEIGHTS", f"{t}/w.safetensors", "--config", "unilseg-demo"],
    "download": lambda t: ["download", "unilseg-20", "--dir", f"{t}/cache"],
    "data": lambda t: ["data", "synthetic:2", "--out", f"{t}/m.jsonl"],
    "train": lambda t: [*TRAIN, "--out", f"{t}/run"],
    "ray": lambda t: ["ray", "--img", "IMG", "--exp", "x", "--sp", f"{t}/masks", *DEMO],
}


def fill(argv: list[str], box) -> list[str]:
    video = box.inp / "v.gif"
    if "VIDEO" in argv:
        animated_gif(video, frames=2)
    return [{"IMG": image(box) if a == "IMG" else a, "VIDEO": str(video), "WEIGHTS": demo_weights()}.get(a, a)
            for a in argv]


# commands that create a missing output folder
CREATES_FOLDERS = ("segment-sp-dir", "batch-sp", "video-sp", "download", "train", "ray", "data")


@pytest.mark.parametrize(("command", "place"), [
    (command, place) for command in sorted(TARGETS) for place in ("/proc", "/sys", "MISSING/deeper", "FILE")
    if not (place == "MISSING/deeper" and command in CREATES_FOLDERS)])
def test_unwritable_target_refused_before_work(sandbox, command, place):
    """/proc, /sys, a missing folder's child, a file where a folder must be: exit 2, nothing written."""
    if command == "ray":
        pytest.importorskip("ray")
    blocker = sandbox.out / "a-file"
    blocker.write_text("x")
    base = {"MISSING/deeper": str(sandbox.root / "missing" / "deeper"), "FILE": str(blocker)}.get(place, place)
    argv = fill(TARGETS[command](base), sandbox)
    sandbox.run(argv, 2)
    assert [p.name for p in sandbox.outputs()] == ["a-file"]


# ---------------------------------------------------------------- writes that fail after the checks

WRITERS = {  # command -> (argv with OUT for the output folder, exit code)
    "segment": (["--img", "IMG", "--exp", "x", "--sp", "OUT/m.png", "--save-prob", "--overlay", *DEMO], 1),
    "batch": (["--img", "IMG", "--exp", "x", "--exp", "y", "--sp", "OUT", "--overlay", "png", *DEMO], 1),
    "batch-rle": (["--img", "IMG", "--exp", "x", "--sp", "OUT/", "--format", "rle-json", "--exp", "y", *DEMO], 1),
    "labels": (["--img", "IMG", "--classes", "a,b", "--sp", "OUT/l.png", *DEMO], 1),
    "video": (["--video", "VIDEO", "--exp", "x", "--sp", "OUT", *DEMO], 1),
    "video-overlay": (["--video", "VIDEO", "--exp", "x", "--sp", "OUT", "--overlay", *DEMO], 1),
    "video-rle": (["--video", "VIDEO", "--exp", "x", "--sp", "OUT", "--format", "rle-json", *DEMO], 1),
    "eval-json": (["eval", "--data", "synthetic:2", "--json", "OUT/x.json", "--no-progress", *DEMO], 1),
    "convert": (["convert", "WEIGHTS", "OUT/w.safetensors", "--config", "unilseg-demo"], 1),
    "data": (["data", "synthetic:2", "--out", "OUT/m.jsonl"], 1),
    "train": ([*TRAIN, "--out", "OUT/run"], 1),
}


def failing(kind: str):
    """A stand-in for os.replace (disk full at the rename) or os.open (permission lost for new files)."""
    real_open = os.open

    def no_space(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    def no_permission(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).endswith(".part"):  # the writers' temporary files, after the checks
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    return {"replace": no_space, "open": no_permission}[kind]


# convert x open is left out: safetensors writes from Rust, past os.open; the rename case covers convert
@pytest.mark.parametrize(("command", "kind"), [(c, k) for c in sorted(WRITERS) for k in ("replace", "open")
                                               if (c, k) != ("convert", "open")])
def test_write_failing_mid_run(sandbox, monkeypatch, command, kind):
    argv, code = WRITERS[command]
    argv = [a.replace("OUT", str(sandbox.out)) for a in fill(argv, sandbox)]
    from unilseg.__main__ import main

    def run(args):
        with monkeypatch.context() as m:
            m.setattr(os, kind, failing(kind))
            return main(args)

    result = sandbox.run(argv, code, main=run)
    assert "error:" in result.err
    done = [p for p in sandbox.outputs() if p.suffix in (".png", ".npy", ".json", ".safetensors", ".pth", ".pt")]
    assert not done, done
