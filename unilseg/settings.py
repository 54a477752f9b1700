"""The inference settings that travel with a model: input size, mean/std, context length, threshold.

Read once from a config (`input` and `test` sections) into an `InferenceSpec`, which
`build_model` / `load_model` attach to the network as `model.spec`; the predictor, the
datasets, evaluation, training and every runtime read that object and nothing else.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UnilsegError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class InferenceSpec:
    """Pre- and post-processing settings of one model."""

    size: int = 480  # side of the letterboxed square the network sees
    mean: tuple[float, float, float] = CLIP_MEAN  # RGB, in [0, 1] units
    std: tuple[float, float, float] = CLIP_STD
    context_length: int = 17  # token ids per text, SOT and EOT included
    threshold: float = 0.35  # mask = soft map > threshold

    def __post_init__(self) -> None:
        if self.size < 1 or self.context_length < 2:
            raise UnilsegError(f"input.size ({self.size}) must be positive and input.context_length "
                               f"({self.context_length}) at least 2")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise UnilsegError("input.mean and input.std need 3 values each (RGB), std above 0")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> InferenceSpec:
        inp = cfg.get("input") or {}
        test = cfg.get("test") or {}
        fields: dict[str, Any] = {}
        if "size" in inp:
            fields["size"] = int(inp["size"])
        for key in ("mean", "std"):
            if key in inp:
                fields[key] = tuple(float(v) for v in inp[key])
        if "context_length" in inp:
            fields["context_length"] = int(inp["context_length"])
        if "threshold" in test:
            fields["threshold"] = check_threshold(test["threshold"], "test.threshold")
        return cls(**fields)

    def with_threshold(self, threshold: float | None) -> InferenceSpec:
        """A copy with another threshold (None keeps this one)."""
        return self if threshold is None else dataclasses.replace(self, threshold=check_threshold(threshold))


def check_threshold(value: Any, flag: str = "--threshold") -> float:
    """A threshold must be a number strictly between 0 and 1 (0 or 1 would give all or nothing)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise UnilsegError(f"{flag} must be a number between 0 and 1, not {value!r}") from None
    if not 0.0 < t < 1.0:
        raise UnilsegError(f"{flag} must lie strictly between 0 and 1 (a probability), not {value}")
    return t
