"""ONNX export: the image encoder and the prompt decoder as two graphs, optionally int8.

    image_encoder.onnx   image (B, 3, S, S) float32, letterboxed and normalised
                         -> feat4, feat8, feat16, feat32 (B, C_i, S/4/2^i, S/4/2^i)
    prompt_decoder.onnx  feat4..feat32 (P, C_i, ...) + tokens (P, L) int64
                         -> logits (P, 1, S/4, S/4)

B and P are dynamic; S and L are fixed by the model's settings (unilseg-export.json).
The split keeps the main saving of the torch path: Swin runs once per image, the text
encoder, fusion and decoders once per instruction.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unilseg.errors import UnilsegError
from unilseg.export import INT8_DEFAULT, INT8_SCHEMES, QUANTIZED_OPS, ExportInfo
from unilseg.inference.backends.graphs import (
    DYNAMIC_AXES,
    INPUTS,
    LEVELS,
    ImageEncoderGraph,
    PromptDecoderGraph,
    example_inputs,
)

FILES = {"image_encoder": "image_encoder.onnx", "prompt_decoder": "prompt_decoder.onnx"}

try:
    import onnx
except ImportError:  # pragma: no cover - depends on the environment
    raise UnilsegError("ONNX export needs the onnx packages: pip install 'unilseg[onnx]'") from None


def export_graphs(model: nn.Module, directory: Path, opset: int = 18) -> dict[str, str]:
    """Write the two fp32 graphs into `directory` and check them -> role -> file name."""
    model = model.float().eval().cpu()
    image, decoder_inputs = example_inputs(model)
    batch = {0: "batch"}
    pairs = {0: "pairs"}
    jobs = [
        (ImageEncoderGraph(model), (image,), INPUTS["image_encoder"], list(LEVELS),
         {"image": batch, **{name: batch for name in LEVELS}}, FILES["image_encoder"]),
        (PromptDecoderGraph(model), decoder_inputs, INPUTS["prompt_decoder"], ["logits"],
         {**{name: pairs for name in LEVELS}, "tokens": pairs, "logits": pairs}, FILES["prompt_decoder"]),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python ints taken from shapes: the sizes are fixed
        for module, inputs, names_in, names_out, axes, name in jobs:
            path = directory / name
            torch.onnx.export(module, inputs, str(path), input_names=names_in, output_names=names_out,
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
            onnx.checker.check_model(str(path), full_check=True)
    return dict(FILES)


def quantize_graphs(directory: Path, files: dict[str, str], scheme: str = INT8_DEFAULT) -> dict[str, str]:
    """Dynamic int8 quantisation of each graph's MatMul/Gemm weights with `scheme` (INT8_SCHEMES) -> role ->
    file name. Convolutions, norms and softmax stay fp32."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    setting = INT8_SCHEMES[scheme]
    weight_type = QuantType.QInt8 if setting.weight_type == "int8" else QuantType.QUInt8
    out = {}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice on the root logger ("consider pre-processing")
    try:
        for role, name in files.items():
            target = name.replace(".onnx", ".int8.onnx")
            quantize_dynamic(directory / name, directory / target, weight_type=weight_type, per_channel=True,
                             reduce_range=setting.reduce_range, op_types_to_quantize=list(QUANTIZED_OPS))
            (directory / name).unlink()
            out[role] = target
    finally:
        root.setLevel(level)
    return out


def export_onnx(model: nn.Module, directory: Path, opset: int = 18, quantize: str | None = None) -> ExportInfo:
    """`unilseg export --format onnx`: the two graphs in `directory` (opset 14..21; quantize: None, or
    "int8" for int8 weights too) -> their ExportInfo."""
    if not 14 <= opset <= 21:
        raise UnilsegError(f"--opset {opset}: use an opset between 14 and 21 (default 18)")
    files = export_graphs(model, directory, opset)
    extra: dict[str, Any] = {"opset": opset, "inputs": INPUTS, "dynamic_axes": DYNAMIC_AXES,
                             "torch": torch.__version__, "onnx": onnx.__version__}
    if quantize == "int8":
        files = quantize_graphs(directory, files)
        extra["quantization"] = INT8_SCHEMES[INT8_DEFAULT].to_json()
    return ExportInfo("onnx", quantize or "fp32", files, model.spec, extra=extra)
