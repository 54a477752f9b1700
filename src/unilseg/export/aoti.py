"""AOTInductor export: the image encoder and the prompt decoder as two compiled packages.

    image_encoder.pt2   image (B, 3, S, S) float32 -> feat4, feat8, feat16, feat32
    prompt_decoder.pt2  feat4..feat32 (P, ...) + tokens (P, L) int64 -> logits (P, 1, S/4, S/4)

The same split and dynamic dimensions (B, P) as the ONNX export (`unilseg.inference.backends.graphs`). A
package is machine code for one kind of machine and one torch build: unilseg-export.json
records a fingerprint (torch version, device type, CPU architecture and ISA, or the GPU),
and `--runtime aoti` refuses a package made for something else. `--precision bf16` bakes
the casts of `unilseg.inference.backends.precision` into the packages.

CPU is tested; on CUDA the same calls produce GPU packages (written for it, untested).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unilseg.errors import UnilsegError
from unilseg.export import ExportInfo
from unilseg.inference.backends.aoti import FILES, machine_fingerprint
from unilseg.inference.backends.graphs import (
    DYNAMIC_AXES,
    INPUTS,
    ImageEncoderGraph,
    PromptDecoderGraph,
    example_inputs,
)


def export_packages(model: nn.Module, directory: Path, device: torch.device) -> dict[str, str]:
    """Export and AOT-compile both parts of `model` (already on `device`, cast) -> role -> file name."""
    from unilseg.inference.backends.compiled import use_inductor_cache

    use_inductor_cache()
    image, decoder_inputs = example_inputs(model, device)
    batch, pairs = torch.export.Dim("batch", min=1), torch.export.Dim("pairs", min=1)
    with torch.no_grad():
        jobs = [(ImageEncoderGraph(model), (image,), ({0: batch},), FILES["image_encoder"]),
                (PromptDecoderGraph(model), decoder_inputs, tuple({0: pairs} for _ in decoder_inputs),
                 FILES["prompt_decoder"])]
        for module, inputs, dynamic, name in jobs:
            program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
            torch._inductor.aoti_compile_and_package(program, package_path=str(directory / name))
    return dict(FILES)


def export_aoti(model: nn.Module, directory: Path, precision: str = "fp32") -> ExportInfo:
    """`unilseg export --format aoti`: two .pt2 packages of `model` in `precision` (fp32, bf16 or fp16) in
    `directory` -> their ExportInfo."""
    from unilseg.inference.backends.precision import apply_precision

    model = model.eval()
    device = next(model.parameters()).device
    if device.type == "mps":
        raise UnilsegError("--format aoti compiles for CPU or CUDA; use --device cpu")
    apply_precision(model, precision, device)
    files = export_packages(model, directory, device)
    sizes = {role: (directory / name).stat().st_size for role, name in files.items()}
    return ExportInfo("aoti", precision, files, model.spec,
                      extra={"fingerprint": machine_fingerprint(device), "sizes": sizes,
                             "inputs": INPUTS, "dynamic_axes": DYNAMIC_AXES,
                             "torch": torch.__version__})
