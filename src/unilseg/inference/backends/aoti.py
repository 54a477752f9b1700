"""AOTInductor backend: the two packages of an `unilseg export --format aoti` directory.

Loading a package maps its compiled library: nothing is compiled at run time. As with the
ONNX backend, `encode_text` only passes the tokens on (the text encoder is inside the
prompt decoder package). A package from another machine or torch build, or a damaged one,
is refused with one line telling the user to re-export.
"""
from __future__ import annotations

import logging
import platform
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unilseg.errors import UnilsegError, first_line
from unilseg.inference.backends.info import ExportInfo

FILES = {"image_encoder": "image_encoder.pt2", "prompt_decoder": "prompt_decoder.pt2"}
REEXPORT = "re-export with `unilseg export --format aoti`"


def machine_fingerprint(device: torch.device) -> dict[str, str]:
    """What a package's machine code depends on: torch build, device kind, CPU ISA or GPU model."""
    fp = {"torch": torch.__version__, "device": device.type, "machine": platform.machine(),
          "system": platform.system()}
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        fp.update(gpu=torch.cuda.get_device_name(device), capability=f"{major}.{minor}", cuda=str(torch.version.cuda))
    else:
        from unilseg.inference.backends.precision import native_cpu_bf16

        fp.update(isa=torch.backends.cpu.get_cpu_capability(), cpu_bf16=str(native_cpu_bf16()))
    return fp


def fingerprint_mismatch(recorded: dict[str, str], device: torch.device) -> str | None:
    """None if a package with fingerprint `recorded` runs here on `device`, else what differs."""
    here = machine_fingerprint(device)
    diffs = [f"{k} {recorded.get(k)!r} (here {v!r})" for k, v in here.items() if recorded.get(k) != v]
    return ", ".join(diffs) or None


def load_package(path: Path, expected_size: int | None, device: torch.device) -> Any:
    """One .pt2 package -> its callable compiled model, or a UnilsegError saying why not."""
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        raise UnilsegError(f"{path} is damaged ({size} bytes, the export wrote {expected_size}); {REEXPORT}")
    if not zipfile.is_zipfile(path):  # before torch, which logs its own warning about such a file
        raise UnilsegError(f"cannot load {path} (not a .pt2 package: no zip archive); {REEXPORT}")
    quiet = logging.getLogger("torch._inductor.package")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the error below says it in one line
    try:
        return torch._inductor.aoti_load_package(str(path), device_index=-1 if device.index is None else device.index)
    except Exception as e:  # zip, loader and runtime errors come as several exception types with long texts
        raise UnilsegError(f"cannot load {path} ({first_line(e, 200)}); {REEXPORT}") from None
    finally:
        quiet.setLevel(level)


class AotiBackend:
    """predictor.Backend over AOTInductor packages compiled for this machine."""

    def __init__(self, encoder: Any, decoder: Any, info: ExportInfo, device: torch.device) -> None:
        self.encoder, self.decoder, self.info = encoder, decoder, info
        self.spec = info.spec
        self.precision = info.variant  # fp32 | bf16 | fp16, baked into the packages (Predictor.precision reads it)
        self.device = device

    @classmethod
    def load(cls, directory: Path, info: ExportInfo, device: Any = "auto") -> AotiBackend:
        from unilseg.inference.predictor import resolve_device

        device = resolve_device(device)
        recorded = info.extra.get("fingerprint")
        if not isinstance(recorded, dict):
            raise UnilsegError(f"{directory} records no machine fingerprint; {REEXPORT}")
        if recorded.get("device") != device.type:
            raise UnilsegError("{directory} was compiled for {recorded}, not {here}; pass {field} {recorded} or "
                               "{again} on this device", field="device", directory=directory,
                               recorded=recorded.get("device"), here=device.type, again=REEXPORT)
        mismatch = fingerprint_mismatch(recorded, device)
        if mismatch:
            raise UnilsegError(f"{directory} was compiled for another machine or torch: {mismatch}; {REEXPORT}")
        sizes = info.extra.get("sizes") or {}
        encoder, decoder = (load_package(directory / info.files[role], sizes.get(role), device) for role in FILES)
        return cls(encoder, decoder, info, device)

    def encode_image(self, x: np.ndarray) -> list[torch.Tensor]:
        with torch.inference_mode():
            return list(self.encoder(torch.as_tensor(x).to(self.device).contiguous()))

    def encode_text(self, tokens: np.ndarray) -> tuple[torch.Tensor, ...]:
        return (torch.as_tensor(tokens).to(self.device),)

    def decode(self, features: Sequence[torch.Tensor], text: tuple[torch.Tensor, ...]) -> np.ndarray:
        # the packages' kernels assume dense inputs: a text batch against one image is an expanded view
        with torch.inference_mode():
            logits = self.decoder(*(f.contiguous() for f in features), text[0].contiguous())
        return logits.float().cpu().numpy()
