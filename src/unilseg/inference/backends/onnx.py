"""ONNX Runtime backend: the two graphs of an `unilseg export --format onnx` directory.

`encode_text` only tokenises (the text encoder is inside the prompt decoder graph), so the
Predictor's flow is unchanged: one image-encoder run per image batch, one decoder run per
batch of (image, instruction) pairs. Everything here is numpy: this backend imports no torch.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from unilseg.errors import UnilsegError, first_line
from unilseg.inference.backends.info import (
    CPU_ROLES,
    EXPORT_FILE,
    INT8_LEGACY,
    INT8_SCHEMES,
    DeviceName,
    ExportInfo,
)

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - depends on the environment
    raise UnilsegError("{field} onnx needs ONNX Runtime: pip install 'unilseg[onnx]'", field="runtime") from None

_NUMPY = {"tensor(float)": np.float32, "tensor(int64)": np.int64}


class Graph:
    """One InferenceSession whose inputs are checked against the graph's declared types and shapes."""

    def __init__(self, path: Path, providers: list[str], threads: int | None = None) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception classes with multi-line texts
            raise UnilsegError(f"cannot load {path}: {first_line(e)}; export again") from None
        self.name = path.name
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """One clear line for a missing input, a wrong dtype or a wrong fixed dimension."""
        for name, meta in self.inputs.items():
            if name not in feeds:
                raise UnilsegError(f"{self.name}: input {name!r} missing")
            value = feeds[name]
            want = _NUMPY.get(meta.type)
            if want is not None and value.dtype != want:
                raise UnilsegError(f"{self.name}: input {name!r} must be {np.dtype(want).name}, got {value.dtype}")
            if value.ndim != len(meta.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(meta.shape, value.shape)
            ):
                shape = "x".join(str(d) if isinstance(d, int) else str(d or "?") for d in meta.shape)
                raise UnilsegError(f"{self.name}: input {name!r} must have shape {shape}, got "
                                   f"{'x'.join(map(str, value.shape))}")

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.check(feeds)
        try:
            return self.session.run(self.outputs, feeds)
        except Exception as e:
            raise UnilsegError(f"{self.name} failed: {first_line(e)}") from None


class OnnxBackend:
    """predictor.Backend over ONNX Runtime (CPU provider; CUDA where ORT has it and a GPU is asked for)."""

    device = DeviceName("cpu")  # outputs come back as numpy arrays in host memory

    def __init__(self, encoder: Graph, decoder: Graph, info: ExportInfo) -> None:
        self.encoder, self.decoder, self.info = encoder, decoder, info
        self.spec = info.spec
        self.precision = info.variant  # fp32 | int8
        self.levels = [name for name in decoder.inputs if name != "tokens"]
        size, length = info.spec.size, info.spec.context_length
        image = encoder.inputs.get("image")
        tokens = decoder.inputs.get("tokens")
        if image is None or len(encoder.outputs) != len(self.levels) or tokens is None or "logits" not in \
                decoder.outputs:
            raise UnilsegError(f"{encoder.name} / {decoder.name} are not UniLSeg's image encoder and prompt decoder "
                               "graphs; export again")
        if list(image.shape[1:]) != [3, size, size] or list(tokens.shape[1:]) != [length]:
            raise UnilsegError(f"the graphs take {image.shape[1:]} images and {tokens.shape[1:]} tokens, but "
                               f"{EXPORT_FILE} says size {size} and context length {length}; export again")

    @classmethod
    def load(cls, directory: Path, info: ExportInfo, device: Any = "auto", threads: int | None = None) -> OnnxBackend:
        providers = ["CPUExecutionProvider"]
        available = ort.get_available_providers()
        if str(device).startswith("cuda") or str(device) == "auto":
            if "CUDAExecutionProvider" in available:
                providers.insert(0, "CUDAExecutionProvider")
            elif str(device) != "auto":
                raise UnilsegError("{field} {device}: this ONNX Runtime has no CUDA provider (pip install "
                                   "onnxruntime-gpu), use {field} cpu", field="device", device=device)
        if info.variant == "int8":
            warn_if_saturating(directory, info)
        paths = [directory / info.files[role] for role in graph_roles(info, providers)]
        # ORT parses and optimises a graph with the GIL released, on one core: the two side by side halve a
        # cold call's session build (3.9 -> 2.0 s for UniLSeg-20 int8 on 2 cores)
        with ThreadPoolExecutor(max_workers=2) as pool:
            encoder, decoder = pool.map(lambda path: Graph(path, providers, threads), paths)
        return cls(encoder, decoder, info)

    def encode_image(self, x: np.ndarray) -> list[np.ndarray]:
        return self.encoder({"image": np.ascontiguousarray(x)})

    def encode_text(self, tokens: np.ndarray) -> tuple[np.ndarray, ...]:
        return (tokens,)

    def decode(self, features: Sequence[np.ndarray], text: tuple[np.ndarray, ...]) -> np.ndarray:
        if len(features) != len(self.levels):
            raise UnilsegError(f"{self.decoder.name}: expected {len(self.levels)} feature maps, got {len(features)}")
        feeds = {name: np.ascontiguousarray(f) for name, f in zip(self.levels, features)}
        feeds["tokens"] = np.ascontiguousarray(text[0])
        return self.decoder(feeds)[0]


def graph_roles(info: ExportInfo, providers: Sequence[str]) -> tuple[str, str]:
    """The roles of the two graphs to load: the CPU provider's pre-optimised copies where the export has
    them, the run is on the CPU provider only and this is the ONNX Runtime version that wrote them (its
    contrib ops and fusions), else the portable graphs."""
    recorded = info.extra.get("cpu_graphs")
    if (list(providers) == ["CPUExecutionProvider"] and isinstance(recorded, dict)
            and recorded.get("onnxruntime") == ort.__version__ and all(r in info.files for r in CPU_ROLES.values())):
        return CPU_ROLES["image_encoder"], CPU_ROLES["prompt_decoder"]
    return "image_encoder", "prompt_decoder"


def int8_scheme(info: ExportInfo) -> str:
    """The quantisation scheme an int8 export was made with; exports that record none predate the choice."""
    recorded = info.extra.get("quantization")
    return str(recorded.get("scheme", INT8_LEGACY)) if isinstance(recorded, dict) else INT8_LEGACY


def warn_if_saturating(directory: Path, info: ExportInfo) -> None:
    """One warning line when an int8 export's kernels saturate on this CPU (no VNNI): its masks drift."""
    from unilseg.inference.backends.cpu import cpu_features

    scheme = INT8_SCHEMES.get(int8_scheme(info))
    if scheme is not None and scheme.saturates_without_vnni and cpu_features().vnni is False:
        warnings.warn(f"{directory} is an int8 export with {scheme.name} weights, whose int8 sums saturate on CPUs "
                      "without VNNI such as this one (masks can differ from fp32); export it again with this "
                      "version (`unilseg export --format onnx --quantize int8`)", stacklevel=2)
