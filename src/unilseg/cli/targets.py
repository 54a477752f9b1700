"""The files a command's flags name: the inputs it reads and the outputs it reserves, each named in
messages by its flag (segment, its label maps and videos, ray)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from unilseg.io.paths import user_path


def output_label(sp_arg: str | None, sp: Path, in_dir: bool, what: str = "the mask") -> str:
    """What a message calls a single call's output: `the mask --sp m.png` (or its default, or the name in --sp DIR)."""
    if sp_arg is None:
        return f"{what} {sp} (the default --sp)"
    return f"{what} {sp} (in --sp {sp_arg})" if in_dir else f"{what} --sp {sp_arg}"



def claim_inputs(registry: Any, args: argparse.Namespace) -> Any:
    """Claim the files the job's flags name for reading (the image files too, for a single call):
    --img, --manifest, --exp-file, --classes-file, --config, --weights; returns the registry."""
    named = [("the manifest --manifest", getattr(args, "manifest", None)),
             ("the expression file --exp-file", getattr(args, "exp_file", None)),
             ("the class file --classes-file", getattr(args, "classes_file", None)),
             ("the config --config", getattr(args, "config", None)),
             ("the weights --weights", getattr(args, "weights", None))]
    named += [("the input image --img", value) for value in getattr(args, "img", None) or []]
    for what, value in named:
        if value and user_path(value).is_file():  # a shipped config's name, a folder or a glob is no file
            registry.read(user_path(value), f"{what} {value}")
    return registry



def sidecar_arg(value: str | bool | None, sp: Path, default_suffix: str, flag: str,
                extensions: tuple[str, ...]) -> Path | None:
    """--save-prob/--overlay of a single call: a path, or True for one beside the mask."""
    from unilseg.errors import UnilsegError
    from unilseg.io.writers import sidecar

    if value is None:
        return None
    path = sidecar(sp, default_suffix) if value is True else user_path(value)
    if path.suffix.lower() not in extensions:
        raise UnilsegError(f"{flag} {value}: use a {' or '.join(extensions)} path")
    return path



def reserve_results(registry: Any, out_dir: Path, shard: tuple[int, int] | None) -> Any:
    """Claim the results logs of this job in out_dir: results.jsonl, or every shard's (shards share --sp)."""
    if shard is None:
        registry.reserve(out_dir, r"results\.jsonl", f"the results log {out_dir / 'results.jsonl'}")
    else:
        registry.reserve(out_dir, rf"results\.shard-\d+-of-{shard[1]}\.jsonl",
                         f"a results log of the {shard[1]} shards ({out_dir}/results.shard-I-of-{shard[1]}.jsonl)")
    return registry
