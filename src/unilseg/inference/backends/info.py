"""What an export directory holds, as the runtimes read it: `unilseg-export.json` (ExportInfo,
`read_info`), the cache folder an export of a registered model goes to, the int8 schemes an
ONNX export may record, and the precisions and runtimes there are. `unilseg.export` writes
these directories; this module reads them.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.io.paths import SETTINGS_LIMIT, read_text_input
from unilseg.model.spec import InferenceSpec, check_spec

EXPORT_FILE = "unilseg-export.json"
TORCH_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")  # what the torch runtime casts a network to
PRECISIONS: tuple[str, ...] = (*TORCH_PRECISIONS, "int8")  # int8: an ONNX export made with --quantize int8
RUNTIMES: tuple[str, ...] = ("torch", "onnx", "aoti")  # torch, and the runtimes that run an export
FORMATS = ("onnx", "aoti")
SCHEMA = 1
TOKENIZER = {  # what tokenize() does, for runtimes that re-implement it
    "kind": "clip-bpe",
    "vocab": "open_clip bpe_simple_vocab_16e6 (49408 tokens)",
    "sot": 49406, "eot": 49407, "pad": 0,
    "truncate": "keep the first context_length - 1 ids and end with eot",
    "lowercase": True,
}


@dataclass(frozen=True)
class DeviceName:
    """The device of a runtime that has no torch.device to give: its `type` and `str` are torch.device's."""

    type: str

    def __str__(self) -> str:
        return self.type


@dataclass(frozen=True)
class Int8Scheme:
    """One setting of ONNX Runtime's dynamic quantisation: MatMul/Gemm weights stored as `weight_type`
    (one scale per output channel), activations quantised to uint8 per tensor on the fly."""

    name: str
    weight_type: str  # int8 | uint8
    reduce_range: bool  # weights in 7 bits, so that u8 x s8 pair sums fit in 16 bits

    def to_json(self) -> dict[str, Any]:
        return {"scheme": self.name, "activations": "uint8", "weights": self.weight_type, "per_channel": True,
                "reduce_range": self.reduce_range, "ops": list(QUANTIZED_OPS)}

    @property
    def saturates_without_vnni(self) -> bool:
        """True where AVX2 / AVX-512 cores without VNNI sum u8 x s8 pairs into 16 bits with saturation
        (VPMADDUBSW): full-range int8 weights overflow there; uint8 weights and 7-bit weights do not."""
        return self.weight_type == "int8" and not self.reduce_range


QUANTIZED_OPS = ("MatMul", "Gemm")
INT8_SCHEMES = {s.name: s for s in (
    Int8Scheme("u8s8", "int8", reduce_range=False),
    Int8Scheme("u8s8-reduced", "int8", reduce_range=True),
    Int8Scheme("u8u8", "uint8", reduce_range=False),
)}
INT8_DEFAULT = "u8u8"  # chosen by benchmarks/int8_settings.py (docs/runtimes.md, "int8 on every x86 CPU")
INT8_LEGACY = "u8s8"  # what an int8 export that records no scheme was made with (unilseg 0.1.0)


@dataclass
class ExportInfo:
    """What `unilseg-export.json` holds."""

    format: str  # onnx | aoti
    variant: str  # fp32 | int8 | bf16 ... (the file set's numeric format)
    files: dict[str, str]  # role (image_encoder, prompt_decoder, ...) -> file name in the directory
    spec: InferenceSpec
    model: str = ""  # registered name or weight file it came from
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific: opset, dynamic axes, torch version ...

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        spec = {k: v for k, v in asdict(self.spec).items() if k in SPEC_KEYS or v is not None}  # unset: as before
        d["spec"] = {**spec, "tokenizer": TOKENIZER}
        return {"schema": SCHEMA, **d}


ROLES = ("image_encoder", "prompt_decoder")  # the files every export holds
# an ONNX export's optional copies of ROLES pre-optimised for ONNX Runtime's CPU provider (export/onnx.py)
CPU_ROLES = {role: f"{role}_ort_cpu" for role in ROLES}
SPEC_KEYS = ("size", "mean", "std", "context_length", "threshold")
OPTIONAL_SPEC_KEYS = ("min_score",)  # absent from exports made before it existed


def read_info(directory: str | Path, fmt: str | None = None) -> ExportInfo:
    """Read and check an export directory's settings (and that its files exist).

    `unilseg-export.json` (a regular file of at most 1 MiB) is checked against its schema
    with types: format and variant texts, files a mapping of every role to a file name,
    spec's size and context_length integers, mean and std 3 finite numbers (std above 0),
    threshold a number strictly between 0 and 1; a damaged one is refused in one line.
    """
    directory = Path(directory)
    path = directory / EXPORT_FILE
    hint = "run `unilseg export --format FORMAT --out DIR` to make one"
    if not directory.is_dir():
        raise UnilsegError(f"{directory} is not an export directory; {hint}")
    if not os.path.lexists(path):
        raise UnilsegError(f"{directory} holds no {EXPORT_FILE}: not an export directory; {hint}")
    text = read_text_input(path, "export settings", SETTINGS_LIMIT)
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise UnilsegError(f"{path} is damaged (not valid JSON: {e}); export again") from None
    except RecursionError:
        raise UnilsegError(f"{path} is damaged (JSON nested too deeply); export again") from None
    info = _parse_info(raw, f"{path} is damaged: ")
    if fmt is not None and info.format != fmt:
        raise UnilsegError("{directory} holds a {recorded} export, not {fmt}; use {field} {recorded} or export "
                           "with --format {fmt}", field="runtime", directory=directory, recorded=info.format, fmt=fmt)
    for role, name in info.files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise UnilsegError(f"{path} names {name!r} as its {role}: files must lie in the export directory; "
                               "export again")
        if not (directory / name).is_file():
            raise UnilsegError(f"{directory} lacks its {role} file {name}; export again")
    return info


def _parse_info(raw: Any, where: str) -> ExportInfo:
    """The settings' JSON -> ExportInfo, by the schema of `read_info` (errors start with `where`)."""
    again = "; export again"
    if not isinstance(raw, dict):
        raise UnilsegError(f"{where}expected a JSON object, got {type(raw).__name__}{again}")
    schema = raw.get("schema", SCHEMA)
    if isinstance(schema, bool) or not isinstance(schema, int) or schema != SCHEMA:
        raise UnilsegError(f"{where}schema {schema!r} is not {SCHEMA} (another unilseg version's export){again}")
    for key in ("format", "variant"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise UnilsegError(f"{where}`{key}` must be a non-empty text, not {raw.get(key)!r}{again}")
    if raw["format"] not in FORMATS:
        raise UnilsegError(f"{where}format {raw['format']!r} is none of {', '.join(FORMATS)}{again}")
    files = raw.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise UnilsegError(f"{where}`files` must map roles to file names, not {files!r}{again}")
    missing = [role for role in ROLES if role not in files]
    if missing:
        raise UnilsegError(f"{where}`files` names no {' or '.join(missing)}{again}")
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        raise UnilsegError(f"{where}`spec` must be an object of {', '.join(SPEC_KEYS)}, not {spec!r}{again}")
    fields = {k: v for k, v in spec.items() if k != "tokenizer"}
    unknown = sorted(set(fields) - set(SPEC_KEYS) - set(OPTIONAL_SPEC_KEYS))
    absent = [k for k in SPEC_KEYS if k not in fields]
    if unknown or absent:
        what = f"unknown key(s) {', '.join(unknown)}" if unknown else f"no {', '.join(absent)}"
        raise UnilsegError(f"{where}`spec` has {what}{again}")
    try:
        checked = check_spec(fields, where, {k: f"spec.{k}" for k in SPEC_KEYS + OPTIONAL_SPEC_KEYS})
    except UnilsegError as e:
        raise UnilsegError(f"{e}{again}") from None
    model, extra = raw.get("model", ""), raw.get("extra") or {}
    if not isinstance(model, str) or not isinstance(extra, dict):
        raise UnilsegError(f"{where}`model` must be a text and `extra` an object{again}")
    return ExportInfo(raw["format"], raw["variant"], dict(files), InferenceSpec(**checked), model, dict(extra))


def default_export_dir(model: str, fmt: str, variant: str) -> Path:
    """Where `unilseg export --model NAME` writes without --out (and --runtime finds it)."""
    from unilseg.model.registry import cache_dir

    return cache_dir() / "exports" / f"{model}-{fmt}-{variant}"
