"""Convert an official `.pth` checkpoint to `.safetensors`: only the tensors the model
uses (the CLIP image tower is dropped, ~340 MB less), the config in the metadata."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from unilseg import __version__
from unilseg.errors import UnilsegError, WriteError, first_line
from unilseg.io.writers import OutputRegistry, check_file_target, default_file_mode, new_temporary
from unilseg.model.build import as_config, build_model
from unilseg.model.checkpoint import PAD_SUFFIX, SAFETENSORS_FORMAT, check_state_dict, read_weights, remap_official_keys


def convert(
    src: str | Path, dst: str | Path, config: dict[str, Any] | str | Path | None = None, half: bool = False
) -> Path:
    """Write `dst` (.safetensors) from `src` (.pth or .safetensors); checks keys/shapes first.

    half: store weights as float16 (half the size; loading casts them back to float32);
    BatchNorm statistics and values beyond float16's range stay float32.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise UnilsegError(f"output {dst} must end in .safetensors")
    check_file_target(dst, "output")
    claims = OutputRegistry()  # converting a file onto itself would replace the only copy of the weights
    claims.read(src, f"the weights {src}")
    claims.write(dst, f"output {dst}")
    state_dict, stored = read_weights(src)
    cfg = as_config(config if config is not None else stored)
    state_dict = remap_official_keys(state_dict)
    with torch.device("meta"):
        model = build_model(cfg)
    check_state_dict(model, state_dict, source=str(src))
    metadata = {
        "format": SAFETENSORS_FORMAT,
        "config": json.dumps(cfg),
        "source": src.name,
        "unilseg_version": __version__,
    }
    if half:
        state_dict = {k: _to_half(k, v) for k, v in state_dict.items()}
    tensors, metadata = align_tensors({k: v.contiguous() for k, v in state_dict.items()}, metadata)
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    part: Path | None = None
    try:
        part = new_temporary(dst)  # exclusively created: no file of the user's is written over or removed
        save_file(tensors, str(part), metadata=metadata)
        os.chmod(part, default_file_mode())
        part.replace(dst)
    except OSError as e:
        raise WriteError(f"cannot write {dst}: {e.strerror or e}") from e
    except SafetensorError as e:  # its writer's I/O errors (a full disk: "File too large", "No space left")
        raise WriteError(f"cannot write {dst}: {_io_reason(e)}") from e
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
    return dst


def _io_reason(e: BaseException) -> str:
    """'Error while serializing: I/O error: File too large (os error 27)' -> 'File too large (os error 27)'."""
    text = first_line(e)
    return text.rsplit("I/O error: ", 1)[-1] if "I/O error: " in text else text


FP16_MAX = 65504.0


def _to_half(name: str, t: torch.Tensor) -> torch.Tensor:
    """float16 copy of a weight; BatchNorm statistics and out-of-range tensors stay float32.

    Running variances of a trained model can exceed float16's range (seen: 4e5), and an
    inf there silently ruins every mask.
    """
    if not t.is_floating_point() or name.endswith(("running_mean", "running_var")):
        return t
    return t if t.abs().max().item() >= FP16_MAX else t.half()


# safetensors lays tensors out back to back, sorted by dtype (widest first) then name. CPU
# kernels pick their summation order by the data's alignment, so an unaligned memory-mapped
# weight gives logits that differ in the last bits from the 64-byte-aligned `.pth` load.
# Padding entries (dropped on load) and a padded header keep every tensor 64-byte aligned.
ALIGN = 64
_DTYPE_RANK = {torch.int64: 5, torch.float64: 4, torch.float32: 3, torch.int32: 3,
               torch.float16: 2, torch.bfloat16: 2, torch.int16: 2, torch.uint8: 1, torch.int8: 1, torch.bool: 0}
_DTYPE_NAME = {torch.int64: "I64", torch.float64: "F64", torch.float32: "F32", torch.int32: "I32",
               torch.float16: "F16", torch.bfloat16: "BF16", torch.int16: "I16", torch.uint8: "U8", torch.int8: "I8",
               torch.bool: "BOOL"}


def align_tensors(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Add `<name>|pad` tensors and an `align` metadata entry so every tensor starts 64-byte aligned."""
    order = sorted(tensors, key=lambda k: (-_DTYPE_RANK[tensors[k].dtype], k))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for name in order:
        t = tensors[name]
        out[name] = t
        offset += t.numel() * t.element_size()
        gap = -offset % ALIGN
        if gap:
            if gap % t.element_size():
                raise ValueError(f"cannot pad {name} ({t.dtype}) to {ALIGN} bytes")
            out[name + PAD_SUFFIX] = torch.zeros(gap // t.element_size(), dtype=t.dtype)
            offset += gap
    metadata = dict(metadata, align="")
    header_len = len(_header_json(out, metadata))
    padded = header_len + (-header_len % 8)  # safetensors pads the header to 8 bytes with spaces
    metadata["align"] = " " * (-(8 + padded) % ALIGN)
    return out, metadata


def _header_json(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """The safetensors header as the library writes it (compact JSON; length is order-independent)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        size = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    return json.dumps(header, separators=(",", ":"))
