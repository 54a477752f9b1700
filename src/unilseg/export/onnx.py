"""ONNX export: the image encoder and the prompt decoder as two graphs, optionally int8.

    image_encoder.onnx   image (B, 3, S, S) float32, letterboxed and normalised
                         -> feat4, feat8, feat16, feat32 (B, C_i, S/4/2^i, S/4/2^i)
    prompt_decoder.onnx  feat4..feat32 (P, C_i, ...) + tokens (P, L) int64
                         -> logits (P, 1, S/4, S/4)

B and P are dynamic; S and L are fixed by the model's settings (unilseg-export.json).
Beside them, unless `--portable-only`: the same two graphs as ONNX Runtime's CPU provider
optimises them (`*.ort-cpu.onnx`), which `--runtime onnx` loads on a CPU with the ONNX
Runtime version that wrote them (a faster cold start), and the portable ones otherwise.
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
from unilseg.inference.backends.info import CPU_ROLES

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


def optimize_for_cpu(directory: Path, files: dict[str, str]) -> dict[str, str]:
    """ONNX Runtime's CPU provider's own copy of each graph, its fusions done (level 'extended': LayerNorm,
    GELU, attention, int8 MatMul chains into com.microsoft ops; no layout changes, which depend on the CPU's
    instruction set) -> CPU_ROLES role -> file name. Loading these skips the optimiser, half of a cold
    session build; the portable graphs stay for every other runtime and provider."""
    import onnxruntime as ort

    out = {}
    for role, name in files.items():
        stem, _, suffixes = name.partition(".")  # image_encoder.int8.onnx -> image_encoder.ort-cpu.int8.onnx
        target = f"{stem}.ort-cpu.{suffixes}"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(directory / target)
        ort.InferenceSession(str(directory / name), options, providers=["CPUExecutionProvider"])
        out[CPU_ROLES[role]] = target
    return out


def requantize(directory: Path, scheme: str = INT8_DEFAULT) -> ExportInfo:
    """An fp32 export directory made int8 in place with `scheme` (INT8_SCHEMES), its settings file rewritten, its
    CPU copies (if it had them) made again from the int8 graphs -> its ExportInfo. For comparing schemes on one
    export (benchmarks/int8_settings.py, the tests)."""
    from unilseg.export import read_info, write_info

    info = read_info(directory, "onnx")
    if info.variant != "fp32":
        raise UnilsegError(f"{directory} is a {info.variant} export; requantize an fp32 one")
    had_copies = info.extra.pop("cpu_graphs", None) is not None
    for role in CPU_ROLES.values():
        if role in info.files:
            (directory / info.files.pop(role)).unlink()
    info.files = quantize_graphs(directory, info.files, scheme)
    info.variant, info.extra["quantization"] = "int8", INT8_SCHEMES[scheme].to_json()
    if had_copies:
        info.files.update(optimize_for_cpu(directory, info.files))
        info.extra["cpu_graphs"] = _cpu_graphs_record()
    write_info(directory, info)
    return info


def _cpu_graphs_record() -> dict[str, str]:
    import onnxruntime as ort

    return {"provider": "CPUExecutionProvider", "level": "extended", "onnxruntime": ort.__version__}


def export_onnx(model: nn.Module, directory: Path, opset: int = 18, quantize: str | None = None,
                cpu_graphs: bool = True) -> ExportInfo:
    """`unilseg export --format onnx`: the two graphs in `directory` (opset 14..21; quantize: None, or
    "int8" for int8 weights too; cpu_graphs: also ONNX Runtime's pre-optimised CPU copies,
    `optimize_for_cpu`) -> their ExportInfo."""
    if not 14 <= opset <= 21:
        raise UnilsegError(f"--opset {opset}: use an opset between 14 and 21 (default 18)")
    files = export_graphs(model, directory, opset)
    extra: dict[str, Any] = {"opset": opset, "inputs": INPUTS, "dynamic_axes": DYNAMIC_AXES,
                             "torch": torch.__version__, "onnx": onnx.__version__}
    if quantize == "int8":
        files = quantize_graphs(directory, files)
        extra["quantization"] = INT8_SCHEMES[INT8_DEFAULT].to_json()
    if cpu_graphs:
        files.update(optimize_for_cpu(directory, files))
        extra["cpu_graphs"] = _cpu_graphs_record()
    return ExportInfo("onnx", quantize or "fp32", files, model.spec, extra=extra)
