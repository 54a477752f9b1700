"""Parameter groups: separate learning rates (or freezing) for the two encoders, no decay on norms/biases."""
from __future__ import annotations

from typing import Any

from torch import nn

# Module prefixes of the encoders (names as in the official checkpoint).
ENCODERS = {"text": "backbone.", "image": "backbone_visual."}
NO_DECAY_NAMES = ("relative_position_bias_table", "positional_embedding", "token_embedding")
UNUSED = ("backbone.logit_scale",)  # kept only so official checkpoints load; never in the forward pass


def _part(name: str) -> str:
    for part, prefix in ENCODERS.items():
        if name.startswith(prefix):
            return part
    return "head"


def param_groups(model: nn.Module, train: dict[str, Any]) -> list[dict[str, Any]]:
    """AdamW groups from the `train` config: lr, lr_text, lr_image, freeze_text, freeze_image, weight_decay.

    Frozen parameters get requires_grad=False and join no group. Each group carries its
    `name` (part/decay) for logging.
    """
    lrs = {
        "head": float(train["lr"]),
        "text": float(train["lr"] if train.get("lr_text") is None else train["lr_text"]),
        "image": float(train["lr"] if train.get("lr_image") is None else train["lr_image"]),
    }
    frozen = {"text": bool(train.get("freeze_text")), "image": bool(train.get("freeze_image")), "head": False}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        part = _part(name)
        if frozen[part] or name in UNUSED:
            p.requires_grad_(False)
            continue
        p.requires_grad_(True)
        decay = p.ndim >= 2 and not any(n in name for n in NO_DECAY_NAMES)
        groups.setdefault((part, decay), []).append(p)
    return [
        {"params": params, "lr": lrs[part], "weight_decay": float(train["weight_decay"]) if decay else 0.0,
         "name": f"{part}/{'decay' if decay else 'no_decay'}"}
        for (part, decay), params in sorted(groups.items())
    ]
