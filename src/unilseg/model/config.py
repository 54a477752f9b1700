"""Configs are YAML data: load one, apply `--opts KEY VALUE` overrides by dotted key.

The shipped configs are package data (`unilseg/configs/*.yaml`), so a config can be named
from any directory: `unilseg-small`, `unilseg-small.yaml` or `configs/unilseg-small.yaml`
all find the packaged file when no such file exists where you are.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from unilseg.errors import UnilsegError
from unilseg.io.paths import SETTINGS_LIMIT, read_text_input, user_path

DEFAULT_CONFIG = "unilseg20.yaml"  # the UniLSeg-20 checkpoint's network


def packaged_configs() -> list[str]:
    """File names of the configs shipped in the package."""
    return sorted(p.name for p in resources.files("unilseg").joinpath("configs").iterdir() if p.name.endswith(".yaml"))


def config_source(path: str | Path) -> Path:
    """A config path as given if it exists, else the packaged config of that file name (if any)."""
    p = user_path(path)
    if p.exists():
        return p
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    packaged = resources.files("unilseg").joinpath("configs", name)
    return Path(str(packaged)) if packaged.is_file() else p


def load_config(path: str | Path, opts: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML config (a path, or a packaged config's name) and apply [KEY, VALUE, ...] overrides."""
    import yaml

    p = config_source(path)
    if not p.exists():
        raise UnilsegError(
            "cannot read config {path}: no such file; pass an existing YAML file to {field} (or a shipped one: "
            "{shipped})", field="config", path=path, shipped=", ".join(packaged_configs())
        )
    text = read_text_input(p, "config", SETTINGS_LIMIT)
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UnilsegError(f"config {path} is not valid YAML ({e.__class__.__name__}); fix the file") from e
    if not isinstance(cfg, dict):
        raise UnilsegError(f"config {path} must be a YAML mapping")
    if not all_finite(cfg):
        raise UnilsegError(f"config {path}: numbers must be finite (not .nan or .inf); fix the file")
    from unilseg.model.spec import InferenceSpec

    InferenceSpec.from_config(cfg, f"config {path}: ")
    return apply_overrides(cfg, opts)


def apply_overrides(cfg: dict[str, Any], opts: Sequence[str]) -> dict[str, Any]:
    """Return a copy of cfg with each dotted KEY set to the YAML-parsed VALUE."""
    import yaml

    if len(opts) % 2:
        raise UnilsegError("{field} takes KEY VALUE pairs; got an odd number of items: {items}", field="opts",
                           items=" ".join(opts))
    cfg = copy.deepcopy(cfg)
    for key, raw in zip(opts[0::2], opts[1::2]):
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise UnilsegError("{field}: unknown config key {key}", field="opts", key=repr(key))
            node = node[part]
        if leaf not in node:
            raise UnilsegError("{field}: unknown config key {key}", field="opts", key=repr(key))
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise UnilsegError("{field} {key}: {raw} is not a valid YAML value", field="opts", key=key,
                               raw=repr(raw)) from e
        if not all_finite(value):
            raise UnilsegError("{field} {key} {raw}: numbers must be finite (not NaN or infinite)", field="opts",
                               key=key, raw=raw)
        node[leaf] = value
    if opts:
        from unilseg.model.spec import InferenceSpec

        InferenceSpec.from_config(cfg, "--opts ")  # the input/test settings, checked before any model work
    return cfg


def all_finite(value: Any) -> bool:
    """Whether every number in a YAML value (nested lists and mappings included) is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(v) for v in value)
    return True
