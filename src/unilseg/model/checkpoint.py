"""Safe, strict loading of UniLSeg weights, from `.pth` or `.safetensors`.

Official checkpoints are `{'state_dict': {'module.<key>': tensor}}` pickles; they are
read with `torch.load(weights_only=True, mmap=True)`, which refuses anything but tensors
and plain containers; a file that is neither a zip nor a pickle (an HTML page left by a
failed download, say) is named as such before torch sees it. CLIP's image tower
(`backbone.visual.*`) is stored but never run: it is dropped on load. `.safetensors` files
(see `unilseg.model.convert`) carry the model config in their metadata and are memory-mapped.
"""
from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unilseg.errors import CheckpointError

UNUSED_PREFIXES = ("backbone.visual.",)  # CLIP's image tower; note the dot (Swin is backbone_visual)


def remap_official_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DataParallel's `module.` prefix and drop keys the model never runs."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if not key.startswith(UNUSED_PREFIXES):
            out[key] = value
    return out


SAFETENSORS_FORMAT = "unilseg"
PAD_SUFFIX = "|pad"  # alignment padding entries written by unilseg.model.convert


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `.pth` or `.safetensors` file safely -> flat {key: tensor} (official key names)."""
    return read_weights(path)[0]


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """-> (state dict, config stored in the file or None). Both formats go through here."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            "weights file not found: {path}; download UniLSeg20_no_finetune.pth (see weights/README.md) "
            "or pass {field} PATH", field="weights", path=path
        )
    if _is_safetensors(path):
        return _read_safetensors(path)
    return _read_pth(path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        state_dict = load_file(path)  # memory-mapped: pages are read as tensors are touched
        state_dict = {k: v for k, v in state_dict.items() if not k.endswith(PAD_SUFFIX)}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or corrupt ({_first_line(e)}); convert or download it again"
        ) from e
    config = None
    if "config" in metadata:
        try:
            config = json.loads(metadata["config"])
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: the config in its metadata is not valid JSON; convert it again") from e
    return state_dict, config


def _read_pth(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """The official layout ({'state_dict': ...} or a bare dict of tensors); our training files add 'config'."""
    check_torch_file(path)
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes would add lines to our one-line error
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds Python objects other than tensors, which could run code "
            "(weights_only=True); use a plain state-dict checkpoint"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or corrupt ({_first_line(e)}); download it again"
        ) from e
    config = None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        stored = obj.get("config")
        config = dict(stored) if isinstance(stored, Mapping) and isinstance(stored.get("model"), Mapping) else None
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a UniLSeg checkpoint: expected a dict of tensors under 'state_dict'")
    return dict(obj), config


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
PICKLE_MAGIC = b"\x80"  # a pickle's PROTO opcode: torch.save's legacy format


def check_torch_file(path: str | Path) -> None:
    """Raise CheckpointError unless the file starts like something `torch.save` writes (a zip or a pickle).

    An HTML page left by a failed download, an empty file or other bytes get one message that
    says so, instead of torch's unpickling errors (which read like a refusal of unsafe code).
    """
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return
    if head and ZIP_MAGIC.startswith(head):  # cut inside the zip signature
        raise CheckpointError(f"cannot read {path}: the file is truncated ({len(head)} bytes); download it again")
    if not head:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: the file is empty (perhaps a failed download); download it again"
        )
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint: it starts with {_preview(head)} ({_what_it_is(head)}); "
        "download the file again"
    )


def _preview(head: bytes, limit: int = 16) -> str:
    """The first bytes as a quoted, escaped literal of at most `limit` characters between the quotes."""
    n = min(limit, len(head))
    while n > 1 and len(repr(head[:n])) - 3 > limit:  # repr is b'...': 3 characters around the text
        n -= 1
    return repr(head[:n])[1:]


def _what_it_is(head: bytes) -> str:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith(b"<!doctype html") or b"<html" in text:
        return "an HTML page, perhaps a failed download"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text, perhaps an error page from a failed download"
    return "unknown data; a PyTorch checkpoint starts with 'PK' or '\\x80'"


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError unless keys and shapes match the model exactly."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = [f"{label}: {_listed(items)}" for label, items in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise CheckpointError(
            "{source} does not match this model ({problems}); check that {field} and {config} name the same model",
            field="weights", source=source, problems="; ".join(problems)
        )


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError if a float tensor holds NaN or infinity: such a model gives no mask worth
    writing (NaN logits would be all-empty masks), so it is refused at load, not per item."""
    # A float64 sum is exact for this test: finite fp32/fp16/bf16 weights cannot overflow it (< 1e47 for
    # 1e9 of them), and any NaN or infinity makes it non-finite. One pass, no boolean copy of the model.
    bad = sorted(k for k, v in state_dict.items()
                 if v.is_floating_point() and not torch.isfinite(v.sum(dtype=torch.float64)))
    if bad:
        raise CheckpointError(f"{source} holds NaN or infinite values ({_listed(bad)}); the run that wrote it "
                              "diverged or the file is damaged: use another checkpoint")


def _listed(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f", ... ({len(items)} in all)" if len(items) > 3 else "")


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Strictly load official-layout weights into `model`, taking the tensors over (assign=True);
    refused if keys, shapes or values (NaN, infinity) are wrong."""
    state_dict = remap_official_keys(state_dict)
    check_state_dict(model, state_dict, source)
    check_finite(state_dict, source)
    # Files may store weights in half precision (the shipped demo model does); compute in fp32.
    state_dict = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state_dict.items()}
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def _is_safetensors(path: Path) -> bool:
    """safetensors: 8-byte little-endian header length, then a JSON header starting with '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return path.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else e.__class__.__name__


