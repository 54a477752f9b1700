"""CLIP BPE tokenizer (open_clip's `SimpleTokenizer`), cut the way UniLSeg's authors cut.

open_clip's package `__init__` imports its whole model zoo (seconds of start-up), so the
tokenizer module, which depends only on ftfy, regex, numpy and torch, is loaded from
the installed package's file without running that `__init__`.
"""
from __future__ import annotations

import importlib.util
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import torch

SOT, EOT = 49406, 49407


@lru_cache(maxsize=1)
def _simple_tokenizer():
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("open_clip_torch is required for the CLIP tokenizer: pip install open_clip_torch")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    name = "unilseg._open_clip_tokenizer"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def encode(text: str) -> list[int]:
    """BPE ids of one text after CLIP's cleaning (ftfy, html unescape, whitespace, lower case)."""
    return _simple_tokenizer().encode(text)


def tokenize(texts: str | list[str], context_length: int = 17, warn: bool = True) -> torch.Tensor:
    """Texts -> (B, context_length) int64: [SOT] + ids + [EOT], zero padded.

    Longer sequences are cut to `context_length` with the last id set to EOT, as the
    authors' tokenizer does (so at most context_length - 2 word pieces are kept).
    """
    if isinstance(texts, str):
        texts = [texts]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT, *encode(text), EOT]
        if len(ids) > context_length:
            if warn:
                warnings.warn(
                    f"expression has {len(ids) - 2} word pieces; only the first {context_length - 2} are used: "
                    f"{_shorten(text)}",
                    stacklevel=2,
                )
            ids = ids[:context_length]
            ids[-1] = EOT
        out[i, : len(ids)] = torch.tensor(ids)
    return out


def _shorten(text: str, limit: int = 80) -> str:
    """`text` quoted for a one-line message: at most `limit` characters of it, cut with an ellipsis."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 3]!r}... ({len(text)} characters)"


def token_ids(texts: str | list[str], context_length: int = 17, warn: bool = True):  # placeholder until the BPE port
    return tokenize(texts, context_length, warn).numpy()
