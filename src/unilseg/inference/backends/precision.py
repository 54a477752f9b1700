"""Reduced-precision inference that is really faster: the heavy weights are stored in bf16/fp16.

Autocast alone re-casts every fp32 weight on every call and was no faster on CPU. Here
the big per-pixel layers keep their weights in the low precision:

- Linear and Conv2d layers of the Swin stages (~40% of the FLOPs, run once per image)
  and of the pixel decoder (most of the per-text FLOPs);
- nn.MultiheadAttention of the pixel decoder and of the text-into-image fusion (their
  query/output projections run over every pixel).

A forward pre-hook casts each such layer's input down, a forward hook casts its output
back to fp32 (except where the next consumer is another such layer: MLP/FFN hidden
activations and Swin's q, k, v, which would only be rounded again). Everything between
them — residual sums, LayerNorm/BatchNorm, position embeddings — and the cheap parts —
CLIP text encoder, word projections, query decoder, Swin patch embedding — stay fp32.
On seeded random weights (harsher than trained ones) the text encoder alone in bf16
lowered one golden case's mask IoU to 0.88, and full-module casts (residual streams in
bf16) to ~0.95; this split keeps 0.975-0.99.
"""
from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn

from unilseg.errors import UnilsegError
from unilseg.inference.backends.info import TORCH_PRECISIONS

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS = TORCH_PRECISIONS  # defined once, in unilseg.inference.backends.info
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Where Linear/Conv2d layers, and where nn.MultiheadAttention modules, go low precision
# (module-name prefixes, the official checkpoint's names).
LOW_PRECISION_LAYERS = ("backbone_visual.layers.", "pixel_decoder.")
LOW_PRECISION_ATTENTION = ("pixel_decoder.", "fusion.", "all_fusion_module.")
# Layers whose output goes only through an activation or attention into another
# low-precision layer: no cast back (it saves a full-size copy each).
LOW_PRECISION_OUTPUT = (".mlp.fc1", ".linear1", ".attn.qkv")
_ATTR = "_unilseg_precision"


def model_precision(model: nn.Module) -> str:
    """The precision `apply_precision` left the model in ('fp32' if never called)."""
    return getattr(model, _ATTR, "fp32")


def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def low_precision_modules(model: nn.Module, convs: bool = True) -> list[tuple[str, nn.Module]]:
    """(name, module) of every layer `apply_precision` casts (Conv2d layers only if `convs`)."""
    kinds = (nn.Linear, nn.Conv2d) if convs else (nn.Linear,)
    out = []
    for name, m in model.named_modules():
        # exact types: nn.MultiheadAttention's out_proj is a Linear subclass it calls through F.linear
        if type(m) in kinds and name.startswith(LOW_PRECISION_LAYERS):
            out.append((name, m))
        elif isinstance(m, nn.MultiheadAttention) and name.startswith(LOW_PRECISION_ATTENTION):
            out.append((name, m))
    return out


def apply_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Cast the heavy layers of `model` IN PLACE to `precision` and hook them.

    Idempotent; a model already cast cannot go back (its weights were rounded): load it
    again. fp16 needs a GPU (CPU has no fast fp16 kernels); bf16 runs anywhere and is
    fast on CPUs with AVX512-BF16 or AMX.
    """
    if precision not in PRECISIONS:
        raise UnilsegError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    current = model_precision(model)
    if precision == current:
        return model
    if current != "fp32":
        raise UnilsegError(f"this model's weights were already cast to {current}; load it again for {precision}")
    if precision == "fp16" and device.type == "cpu":
        raise UnilsegError("{field} fp16 needs a GPU (no fast fp16 kernels on CPU); use bf16 on CPU",
                           field="precision")
    dtype = DTYPES[precision]
    # Without bf16 instructions oneDNN has no fast bf16 convolution: a 3x3 conv over a 120x120
    # map took 89 s in bf16 against 0.23 s in fp32 on an AVX2 CPU. Convolutions stay fp32 there.
    convs = not (precision == "bf16" and device.type == "cpu" and not native_cpu_bf16())
    if not convs:
        warnings.warn("this CPU has no bf16 instructions (AVX512-BF16 or AMX): convolutions stay fp32, and bf16 "
                      "is likely slower than fp32 here", stacklevel=2)
    modules = low_precision_modules(model, convs)
    if not modules:
        raise UnilsegError("{field} {precision}: this model has none of UniLSeg's heavy layers", field="precision",
                           precision=precision)
    for name, module in modules:
        module.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            module.register_forward_pre_hook(_cast_attention_inputs, with_kwargs=True)
            module.register_forward_hook(_attention_output_to_float32)
        else:
            module.register_forward_pre_hook(_cast_input)
            if not name.endswith(LOW_PRECISION_OUTPUT):
                module.register_forward_hook(_output_to_float32)
    setattr(model, _ATTR, precision)
    return model


def _cast_input(layer: nn.Module, args: tuple) -> tuple:
    return (args[0].to(layer.weight.dtype), *args[1:])


def _output_to_float32(layer: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _cast_attention_inputs(attn: nn.MultiheadAttention, args: tuple, kwargs: dict[str, Any]) -> tuple:
    """query, key, value (positional) and an additive attn_mask -> the weights' dtype."""
    dtype = attn.out_proj.weight.dtype
    mask = kwargs.get("attn_mask")
    if mask is not None and mask.is_floating_point():
        kwargs = {**kwargs, "attn_mask": mask.to(dtype)}
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a for a in args), kwargs


def _attention_output_to_float32(attn: nn.Module, args: tuple, output: tuple) -> tuple:
    return (output[0].float(), *output[1:])
