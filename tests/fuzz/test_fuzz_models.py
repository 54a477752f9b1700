"""Hostile checkpoints, configs, --opts and videos: each refused with one line before any work."""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fuzz.hostile import VALID, animated_gif, image_bytes, make, truncated, zip_bytes

DEMO = ["--model", "unilseg-demo", "--device", "cpu"]
MARKER = "pwned-marker"


class Payload:
    """Unpickling it would create the marker file (code run by the loader)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def demo_state() -> dict[str, torch.Tensor]:
    import unilseg
    from unilseg.model.checkpoint import read_weights

    return dict(read_weights(Path(unilseg.__file__).parent / "weights" / "unilseg-demo.safetensors")[0])


def save_safetensors(path: Path, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def nan_weights(path: Path) -> Path:
    state = demo_state()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[key] = state[key].clone().fill_(float("nan"))
    return save_safetensors(path, state)


def inf_weights(path: Path) -> Path:
    state = demo_state()
    key = sorted(k for k, v in state.items() if v.is_floating_point())[-1]
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("inf")
    path.write_bytes(torch_bytes({"state_dict": state}))
    return path


def wrong_shape(path: Path) -> Path:
    state = demo_state()
    key = next(k for k, v in state.items() if v.dim() == 2)
    state[key] = torch.zeros(3, 3)
    return save_safetensors(path, state)


def missing_key(path: Path) -> Path:
    state = demo_state()
    state.pop(sorted(state)[0])
    path.write_bytes(torch_bytes(state))
    return path


def write(data: bytes):
    return lambda p: (p.write_bytes(data), p)[1]


CHECKPOINTS = {  # name -> (file name, maker)
    "zero-byte-pth": ("w.pth", write(b"")),
    "zero-byte-safetensors": ("w.safetensors", write(b"")),
    "truncated-pth": ("w.pth", lambda p: write(torch_bytes({"w": torch.ones(1000)})[:700])(p)),
    "truncated-safetensors": ("w.safetensors", lambda p: (p.write_bytes(
        save_safetensors(p, {"w": torch.ones(100)}).read_bytes()[:-50]), p)[1]),
    "html-pth": ("w.pth", write(b"<!DOCTYPE html><html><title>Google Drive - quota exceeded</title></html>")),
    "html-safetensors": ("w.safetensors", write(b"<html>404</html>")),
    "safetensors-huge-header": ("w.safetensors", write(struct.pack("<Q", 1 << 60) + b"{}")),
    "safetensors-header-not-json": ("w.safetensors", write(struct.pack("<Q", 8) + b"{notjson")),
    "zip-bomb-ish": ("w.pth", write(zip_bytes({"archive/data.pkl": b"\0" * 30_000_000}))),
    "zip-not-torch": ("w.pth", write(zip_bytes({"readme.txt": b"hello"}))),
    "pickle-code-zip": ("w.pth", lambda p: write(torch_bytes({"x": Payload(p.with_name(MARKER))}))(p)),
    "pickle-code-legacy": ("w.pth", lambda p: write(pickle.dumps(Payload(p.with_name(MARKER)), protocol=2))(p)),
    "pickle-not-a-dict": ("w.pth", write(torch_bytes([torch.ones(2)]))),
    "wrong-shapes": ("w.safetensors", wrong_shape),
    "missing-key": ("w.pth", missing_key),
    "nan-weights": ("w.safetensors", nan_weights),
    "inf-weights": ("w.pth", inf_weights),
    "directory": ("w.pth", lambda p: (p.mkdir(), p)[1]),
    "missing-file": ("w.pth", lambda p: p),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_hostile_checkpoint(sandbox, name):
    """Refused (2) with one line, no mask written, and no code from the file ever run."""
    file_name, maker = CHECKPOINTS[name]
    weights = maker(sandbox.inp / file_name)
    image = sandbox.inp / "a.png"
    image.write_bytes(image_bytes())
    result = sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *DEMO, "--weights", str(weights)], 2)
    assert not sandbox.outputs()
    assert not (sandbox.inp / MARKER).exists()
    if name.startswith(("nan", "inf")):
        assert "NaN or infinite" in result.err


# ---------------------------------------------------------------- configs and --opts

CONFIGS = {
    "not-a-mapping": "- a\n- b\n",
    "a-scalar": "42\n",
    "empty": "",
    "invalid-yaml": "model: [unclosed\n",
    "tabs": "model:\n\tswin: 1\n",
    "unknown-keys": "{model: {swin: 1}, bogus: 2}\n",
    "wrong-types": "{model: {swin: {embed_dim: lots}}}\n",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hostile_config(sandbox, name):
    config = sandbox.inp / "c.yaml"
    config.write_text(CONFIGS[name])
    image = sandbox.inp / "a.png"
    image.write_bytes(image_bytes())
    sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *DEMO, "--config", str(config)], 2)
    assert not sandbox.outputs()


OPTS = {
    "odd-count": ["test.threshold"],
    "unknown-key": ["model.bogus", "1"],
    "unknown-parent": ["nothing.here", "1"],
    "wrong-type-string": ["model.swin.embed_dim", "lots"],
    "wrong-type-list": ["input.size", "[1, 2]"],
    "negative-size": ["input.size", "-32"],
    "zero-heads": ["model.fusion_heads", "0"],
    "threshold-out-of-range": ["test.threshold", "7"],
    "threshold-text": ["test.threshold", "high"],
    "invalid-yaml-value": ["test.threshold", "[unclosed"],
    "key-into-a-number": ["test.threshold.x", "1"],
}


@pytest.mark.parametrize("name", sorted(OPTS))
def test_hostile_opts(sandbox, name):
    image = sandbox.inp / "a.png"
    image.write_bytes(image_bytes())
    sandbox.run(["--img", str(image), "--exp", "x", "--sp", "m.png", *DEMO, "--opts", *OPTS[name]], 2)
    assert not sandbox.outputs()


# ---------------------------------------------------------------- videos

def text_mp4(p: Path) -> Path:
    p.write_text("this is not a video\n")
    return p


def truncated_mp4(p: Path) -> Path:
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 24))
    for i in range(5):
        writer.write(np.full((24, 32, 3), 40 * i, np.uint8))
    writer.release()
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    return p


def zero_frame_mp4(p: Path) -> Path:
    writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 5, (32, 24))
    writer.release()
    if not p.exists():
        p.write_bytes(b"")
    return p


VIDEOS_BAD = {
    "text-as-mp4": ("v.mp4", text_mp4),
    "truncated-mp4": ("v.mp4", truncated_mp4),
    "zero-frames": ("v.mp4", zero_frame_mp4),
    "zero-byte": ("v.mp4", lambda p: (p.write_bytes(b""), p)[1]),
    "random-bytes": ("v.webm", lambda p: (p.write_bytes(np.random.default_rng(0).bytes(5000)), p)[1]),
    "empty-frame-folder": ("frames", lambda p: (p.mkdir(), p)[1]),
    "folder-of-broken-frames": ("frames", lambda p: (p.mkdir(), truncated(p / "000.png", ".png"), p)[2]),
    "missing": ("v.mp4", lambda p: p),
}


@pytest.mark.parametrize("name", sorted(VIDEOS_BAD))
def test_hostile_video(sandbox, name):
    """Refused before any work (2), or, where some frames decoded, those written and exit 1."""
    file_name, maker = VIDEOS_BAD[name]
    video = maker(sandbox.inp / file_name)
    result = sandbox.run(["--video", str(video), "--exp", "x", "--sp", ".", *DEMO], (1, 2))
    if result.code == 2:
        assert not sandbox.outputs()


def test_one_frame_gif_video(sandbox):
    video = animated_gif(sandbox.inp / "one.gif", frames=1)
    sandbox.run(["--video", str(video), "--exp", "the thing", "--sp", ".", *DEMO], 0)
    assert [p.name for p in sandbox.outputs()] == ["000000.png"]


def test_frame_folder_of_odd_images(sandbox):
    """A folder of frames in odd formats (grey, 16-bit, RGBA) of one size: one mask per frame."""
    frames = sandbox.inp / "frames"
    frames.mkdir()
    for i, name in enumerate(("grey-png", "16bit-png", "rgba-png")):
        make(VALID, name, frames).rename(frames / f"{i:03d}.png")
    sandbox.run(["--video", str(frames), "--exp", "x", "--sp", ".", *DEMO], 0)
    assert len(sandbox.outputs()) == 3


def test_video_mask_folder_symlinked_out_is_refused(sandbox):
    video = animated_gif(sandbox.inp / "one.gif", frames=1)
    (sandbox.out / "one__x").symlink_to(sandbox.inp, target_is_directory=True)
    sandbox.run(["--video", str(video), "--exp", "x", "--sp", ".", *DEMO], 2)
    assert sorted(p.name for p in sandbox.inp.iterdir()) == ["one.gif"]
