"""The inference settings that travel with a model: input size, mean/std, context length, threshold.

Read once from a config (`input` and `test` sections) into an `InferenceSpec`, which
`build_model` / `load_model` attach to the network as `model.spec`; the predictor, the
datasets, evaluation, training and every runtime read that object and nothing else.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

from unilseg.errors import UnilsegError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


MIN_SIZE, MAX_SIZE = 32, 4096  # the Swin halves a 4-pixel patch grid three times; 4096^2 is a 64 MB image tensor


@dataclass(frozen=True)
class InferenceSpec:
    """Pre- and post-processing settings of one model (checked: see `check_spec`)."""

    size: int = 480  # side of the letterboxed square the network sees
    mean: tuple[float, float, float] = CLIP_MEAN  # RGB, in [0, 1] units
    std: tuple[float, float, float] = CLIP_STD
    context_length: int = 17  # token ids per text, SOT and EOT included
    threshold: float = 0.35  # mask = soft map > threshold
    min_score: float | None = None  # presence score below it: nothing found, the mask empty (None: never)

    def __post_init__(self) -> None:
        check_spec(asdict_shallow(self))

    @classmethod
    def from_config(cls, cfg: dict[str, Any], where: str = "") -> InferenceSpec:
        """The settings of a config's `input` and `test` sections, each checked for type and range
        (`where` prefixes the error: "--opts ", "config X: "). input.context_length must not exceed
        the text encoder's positions (model.text.max_positions) when the config names them."""
        inp = cfg.get("input") or {}
        test = cfg.get("test") or {}
        if not isinstance(inp, dict) or not isinstance(test, dict):
            raise UnilsegError(f"{where}the config's `input` and `test` sections must be mappings")
        fields = {key: inp[key] for key in ("size", "mean", "std", "context_length") if key in inp}
        for key in ("threshold", "min_score"):
            if key in test:
                fields[key] = test[key]
        text = (cfg.get("model") or {}).get("text") if isinstance(cfg.get("model"), dict) else None
        positions = text.get("max_positions") if isinstance(text, dict) else None
        names = {"threshold": "test.threshold", "min_score": "test.min_score",
                 **{k: f"input.{k}" for k in ("size", "mean", "std", "context_length")}}
        checked = check_spec(fields, where, names, positions if _is_int(positions) else None)
        return cls(**checked)

    def with_threshold(self, threshold: float | None) -> InferenceSpec:
        """A copy with another threshold (None keeps this one)."""
        return self if threshold is None else dataclasses.replace(self, threshold=check_threshold(threshold))

    def with_min_score(self, min_score: float | None) -> InferenceSpec:
        """A copy with another minimum presence score (None keeps this one; 0 turns it off)."""
        if min_score is None:
            return self
        return dataclasses.replace(self, min_score=effective_min_score(self.min_score, check_min_score(min_score)))


def asdict_shallow(spec: InferenceSpec) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_spec(fields: dict[str, Any], where: str = "", names: dict[str, str] | None = None,
               max_positions: int | None = None) -> dict[str, Any]:
    """Inference settings by type and range -> the same, lists as tuples and numbers as floats; else one
    UnilsegError naming the field. size and context_length: integers (not 192.0, not true); mean and std:
    3 finite numbers each, std above 0; threshold: a number strictly between 0 and 1; min_score: None or
    a number from 0 to 1 (0 as None: off)."""
    names = names or {}
    out = dict(fields)
    for key, low, high in (("size", MIN_SIZE, MAX_SIZE), ("context_length", 2, max_positions)):
        if key not in fields:
            continue
        value = fields[key]
        if not _is_int(value) or value < low or (high is not None and value > high):
            span = (f"from {low} to {high}" + (" (the text encoder's positions)" if key == "context_length" else "")
                    if high is not None else f"of at least {low}")
            raise UnilsegError(f"{where}{names.get(key, key)} must be an integer {span}, not {value!r}")
    for key in ("mean", "std"):
        if key not in fields:
            continue
        value = fields[key]
        ok = (isinstance(value, (list, tuple)) and len(value) == 3
              and all(_is_number(v) and math.isfinite(v) for v in value)
              and (key == "mean" or min(value) > 0))
        if not ok:
            what = "3 finite numbers above 0" if key == "std" else "3 finite numbers"
            raise UnilsegError(f"{where}{names.get(key, key)} must be {what} (RGB, in [0, 1] units), not {value!r}")
        out[key] = tuple(float(v) for v in value)
    if "threshold" in fields:
        value = fields["threshold"]
        if not _is_number(value):
            raise UnilsegError(f"{where}{names.get('threshold', 'threshold')} must be a number between 0 and 1, "
                               f"not {value!r}")
        out["threshold"] = check_threshold(value, f"{where}{names.get('threshold', 'threshold')}")
    if fields.get("min_score") is not None:
        out["min_score"] = check_min_score(fields["min_score"], f"{where}{names.get('min_score', 'min_score')}") or None
    return out


def check_threshold(value: Any, field: str = "threshold") -> float:
    """A threshold must be a number strictly between 0 and 1 (0 or 1 would give all or nothing).
    `field`: what the error calls it (UnilsegError.field)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise UnilsegError("{field} must be a number between 0 and 1, not {value}", field=field,
                           value=repr(value)) from None
    if not 0.0 < t < 1.0:
        raise UnilsegError("{field} must lie strictly between 0 and 1 (a probability), not {value}", field=field,
                           value=value)
    return t


def effective_min_score(default: float | None, override: float | None) -> float | None:
    """The min score in force: `override` if given (0 turns it off: None), else `default` (None: off)."""
    return default if override is None else (override or None)


def check_min_score(value: Any, field: str = "min_score") -> float:
    """A minimum presence score is a number from 0 (off) to 1. `field`: what the error calls it."""
    try:
        if not (_is_number(value) or isinstance(value, str)):  # float() would take True (and 1.0 is in range)
            raise ValueError
        t = float(value)
    except ValueError:
        raise UnilsegError("{field} must be a number from 0 to 1, not {value}", field=field,
                           value=repr(value)) from None
    if not 0.0 <= t <= 1.0:
        raise UnilsegError("{field} must be a number from 0 (off) to 1, not {value}", field=field, value=value)
    return t
