"""Configs are YAML data: load one, apply `--opts KEY VALUE` overrides by dotted key."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UnilsegError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def resolve_path(path: str | Path) -> Path:
    """A relative path is taken from the working directory, else from the project root."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p


def load_config(path: str | Path, opts: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config and apply overrides given as [KEY, VALUE, KEY, VALUE, ...]."""
    import yaml

    p = resolve_path(path)
    try:
        with open(p, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except OSError as e:
        raise UnilsegError(f"cannot read config {path}: {e.strerror}; pass an existing YAML file to --config") from e
    except yaml.YAMLError as e:
        raise UnilsegError(f"config {path} is not valid YAML ({e.__class__.__name__}); fix the file") from e
    if not isinstance(cfg, dict):
        raise UnilsegError(f"config {path} must be a YAML mapping")
    return apply_overrides(cfg, opts)


def apply_overrides(cfg: dict[str, Any], opts: Sequence[str]) -> dict[str, Any]:
    """Return a copy of cfg with each dotted KEY set to the YAML-parsed VALUE."""
    import yaml

    if len(opts) % 2:
        raise UnilsegError(f"--opts takes KEY VALUE pairs; got an odd number of items: {' '.join(opts)}")
    cfg = copy.deepcopy(cfg)
    for key, raw in zip(opts[0::2], opts[1::2]):
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise UnilsegError(f"--opts: unknown config key {key!r}")
            node = node[part]
        if leaf not in node:
            raise UnilsegError(f"--opts: unknown config key {key!r}")
        node[leaf] = yaml.safe_load(raw)
    return cfg
