"""CLIP BPE tokenizer, token-exact with open_clip's `SimpleTokenizer`, without torch; cut as the authors cut.

The ids of open_clip's SimpleTokenizer, without torch or open_clip: CLIP's cleaning (ftfy, html
unescape, whitespace, lower case) and word split (the `regex` package) in Python, the byte-level BPE
of each word in Hugging Face `tokenizers`, with CLIP's merges shipped beside this file
(`clip_bpe_merges.txt.gz`, see `clip_bpe_merges.md`). ftfy, regex and tokenizers are imported, and the
BPE model built from the merges, at the first call. `token_ids` needs numpy only; `tokenize` is
`token_ids` as a torch tensor.
"""
from __future__ import annotations

import bisect
import html
import warnings
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

SOT, EOT = 49406, 49407
VOCAB_SIZE = 49408  # 256 byte characters, the same with "</w>", 48,894 merges, SOT and EOT
MERGES_FILE = "clip_bpe_merges.txt.gz"  # the first 48,894 merges of CLIP's bpe_simple_vocab_16e6.txt.gz
SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")
# CLIP's word pattern; the special tokens first, as in open_clip (a text that spells one gets its id).
WORD_PATTERN = "|".join(SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _byte_characters() -> list[str]:
    """GPT-2 / CLIP byte -> character table, in byte order: printable Latin-1 bytes stand for themselves,
    the other 68 bytes for U+0100 onwards, so that no BPE symbol is whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]


@lru_cache(maxsize=1)
def _word_pattern():
    import regex

    return regex.compile(WORD_PATTERN, regex.IGNORECASE)


@lru_cache(maxsize=1)
def _bpe():
    """The `tokenizers.Tokenizer` that maps a list of words to CLIP ids: byte-level, then BPE."""
    import gzip

    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    lines = gzip.decompress((resources.files(__package__) / MERGES_FILE).read_bytes()).decode("utf-8")
    merges = [tuple(line.split(" ")) for line in lines.splitlines()[1:]]  # line 0: the file's version
    chars = _byte_characters()
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), *SPECIAL_TOKENS]
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"{MERGES_FILE} gives {len(vocab)} tokens, not {VOCAB_SIZE}")
    # ignore_merges stays False: a word that is in the vocabulary is still merged pair by pair, as CLIP does.
    bpe = models.BPE({token: i for i, token in enumerate(vocab)}, merges, end_of_word_suffix="</w>")
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    # A word that is exactly a special token gets its id, as open_clip's BPE cache gives it.
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIAL_TOKENS])
    return tokenizer


def _clean(text: str) -> str:
    """open_clip's 'lower' cleaning: ftfy, html unescaped twice, whitespace (`str.split`) collapsed, lower case."""
    # ftfy and html.unescape leave printable ASCII without '&' as it is (tests/test_tokenizer.py checks): skip them.
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


_pieces: dict[str, list[int]] = {}  # word -> its BPE ids, as open_clip's BPE cache (bounded here)
CACHE_WORDS = 100_000  # the cache is emptied when it would grow past this many words


def _encode_many(texts: Sequence[str]) -> list[list[int]]:
    """BPE ids of each text: the words not in the cache go through the BPE model in one call."""
    pattern = _word_pattern()
    words = [pattern.findall(_clean(text)) for text in texts]
    found = {w: _pieces.get(w) for ws in words for w in ws}
    new = [w for w, ids in found.items() if ids is None]
    if new:
        encoding = _bpe().encode(new, is_pretokenized=True, add_special_tokens=False)
        ids, word_of = encoding.ids, encoding.word_ids
        cuts = [bisect.bisect_left(word_of, k) for k in range(len(new) + 1)]  # each word gives one id or more
        fresh = {w: ids[a:b] for w, a, b in zip(new, cuts, cuts[1:])}
        found.update(fresh)
        if len(_pieces) + len(fresh) > CACHE_WORDS:
            _pieces.clear()
        if len(fresh) <= CACHE_WORDS:
            _pieces.update(fresh)
    return [[i for w in ws for i in found[w]] for ws in words]


def encode(text: str) -> list[int]:
    """BPE ids of one text after CLIP's cleaning (ftfy, html unescape, whitespace, lower case)."""
    return _encode_many([text])[0]


def _token_ids(texts: str | Sequence[str], context_length: int, warn: bool, stacklevel: int) -> np.ndarray:
    import numpy as np

    if isinstance(texts, str):
        texts = [texts]
    out = np.zeros((len(texts), context_length), dtype=np.int64)
    for i, (text, pieces) in enumerate(zip(texts, _encode_many(texts))):
        ids = [SOT, *pieces, EOT]
        if len(ids) > context_length:
            if warn:
                warnings.warn(
                    f"expression has {len(pieces)} word pieces; only the first {context_length - 2} are used: "
                    f"{_shorten(text)}",
                    stacklevel=stacklevel + 1,
                )
            ids = ids[:context_length]
            ids[-1] = EOT
        out[i, : len(ids)] = ids
    return out


def token_ids(texts: str | Sequence[str], context_length: int = 17, warn: bool = True) -> np.ndarray:
    """Texts -> (B, context_length) int64 numpy array: [SOT] + ids + [EOT], zero padded (no torch needed).

    Longer sequences are cut to `context_length` with the last id set to EOT, as the
    authors' tokenizer does (so at most context_length - 2 word pieces are kept), with a warning.
    """
    return _token_ids(texts, context_length, warn, stacklevel=2)


def tokenize(texts: str | Sequence[str], context_length: int = 17, warn: bool = True) -> torch.Tensor:
    """`token_ids` as a (B, context_length) int64 torch tensor."""
    import torch

    return torch.from_numpy(_token_ids(texts, context_length, warn, stacklevel=2))


def _shorten(text: str, limit: int = 80) -> str:
    """`text` quoted for a one-line message: at most `limit` characters of it, cut with an ellipsis."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 3]!r}... ({len(text)} characters)"
