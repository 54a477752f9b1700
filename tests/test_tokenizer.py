import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURES, ROOT, golden_cases
from tokenizer_corpus import corpus

from unilseg.data.synthetic.instructions import absent_instructions, instructions
from unilseg.data.synthetic.scene import generate_scene, render
from unilseg.data.synthetic.semantic import SEMANTIC_INSTRUCTIONS
from unilseg.model import tokenizer
from unilseg.model.tokenizer import EOT, SOT, encode, token_ids, tokenize


@pytest.mark.parametrize("case", golden_cases(), ids=lambda c: c["name"])
def test_tokens_match_golden(case):
    expected = np.load(FIXTURES / f"{case['name']}.tokens.npy")
    got = tokenize(case["exp"], warn=False).numpy()
    np.testing.assert_array_equal(got, expected)


def test_long_expression_is_cut_like_the_authors_and_warns():
    text = "the handle of the white coffee cup on the saucer, which is on a wooden table next to a spoon"
    with pytest.warns(UserWarning, match="only the first 15"):
        tokens = tokenize(text)
    assert tokens.shape == (1, 17)
    assert tokens[0, 0] == SOT and tokens[0, -1] == EOT
    assert (tokens[0, 1:-1] != 0).all()


def test_warning_shows_at_most_80_characters_of_a_huge_expression():
    text = "the red cup on the left " * 420  # 10,080 characters
    with pytest.warns(UserWarning) as record:
        tokens = tokenize(text)
    assert tokens.shape == (1, 17) and len(record) == 1
    message = str(record[0].message)
    shown = repr(text[:77]) + f"... ({len(text)} characters)"
    assert message == f"expression has 2520 word pieces; only the first 15 are used: {shown}"
    assert len(message) < 200 and "\n" not in message
    with pytest.warns(UserWarning) as record:  # a text of 80 characters or fewer is shown whole
        tokenize("the cup " * 10)
    assert str(record[0].message).endswith(repr("the cup " * 10))


def test_batch_pads_with_zero_and_ends_with_eot():
    tokens = tokenize(["cat", "the sky above the hills"])
    assert tokens.shape == (2, 17) and tokens.dtype.is_floating_point is False
    for row in tokens:
        n = int((row != 0).sum())
        assert row[0] == SOT and row[n - 1] == EOT and (row[n:] == 0).all()


def test_cleaning_html_and_case():
    np.testing.assert_array_equal(tokenize("Cat &amp; Dog"), tokenize("cat & dog"))


# Token-exact against open_clip's own SimpleTokenizer, the reference (loaded from the installed package's
# file, as unilseg did before it had a tokenizer of its own; that file imports torch, which is fine here).

@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.find_spec("open_clip")
    path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_reference_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def _synthetic_texts() -> list[str]:
    """Every instruction (and no-target instruction) of 100 scenes of stream 0, and the semantic ones."""
    texts = set(SEMANTIC_INSTRUCTIONS.values())
    for i in range(100):
        scene = generate_scene(0, i)
        _, labels = render(scene)
        for options in (instructions(scene, labels), absent_instructions(scene)):
            texts.update(inst.text for alternatives in options.values() for alts in alternatives for inst in alts)
    return sorted(texts)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus(20_000, seed=0) + [case["exp"] for case in golden_cases()] + _synthetic_texts()


@pytest.fixture(scope="module")
def expected(reference, texts) -> list[list[int]]:
    return [reference.encode(text) for text in texts]


def _differences(texts, got, want) -> str:
    bad = [i for i in range(len(texts)) if got[i] != want[i]]
    shown = "\n".join(f"{texts[i][:120]!r}: {got[i][:12]} != {want[i][:12]}" for i in bad[:5])
    return f"{len(bad)} of {len(texts)} texts differ:\n{shown}" if bad else ""


@pytest.mark.slow  # the 21k-text corpus, against open_clip
def test_the_corpus_is_large_and_varied(texts):
    assert len(texts) > 21_000 and len(set(texts)) > 15_000
    assert sum(len(t) > 3000 for t in texts) >= 50  # over-long texts
    for needle in ("&amp;amp;", "\u200d", "\U0001f3fd", "\u0130", "\u017f", "\u212a", "\u05d7", "\u0301", "\x85",
                   "\u3000", "\u2028", "\u00c3\u00a9", "\u0663", "\uac00", "\u30ab", "\u732b", "<start_of_text>"):
        assert any(needle in t for t in texts), needle


@pytest.mark.slow  # the 21k-text corpus, against open_clip
def test_encode_matches_open_clip(texts, expected, monkeypatch):
    monkeypatch.setattr(tokenizer, "_pieces", {})  # every word through the BPE model at least once
    got = [encode(text) for text in texts]
    assert not _differences(texts, got, expected)


@pytest.mark.slow  # the 21k-text corpus, against open_clip
def test_cleaning_matches_open_clip(reference, texts):
    """The ASCII short cut (no ftfy, no html.unescape) included: the cleaned texts themselves are the same."""
    cleaned = [tokenizer._clean(t) for t in texts]
    want = [reference.clean_fn(t) for t in texts]
    bad = [i for i in range(len(texts)) if cleaned[i] != want[i]]
    assert not bad, [(texts[i][:80], cleaned[i][:80], want[i][:80]) for i in bad[:5]]


@pytest.mark.slow  # the 21k-text corpus, against open_clip
@pytest.mark.parametrize("context_length", [17, 77])
def test_token_ids_match_open_clip_in_one_batch(reference, texts, expected, context_length, monkeypatch):
    memo = dict(zip(texts, expected))
    monkeypatch.setattr(reference, "encode", memo.__getitem__)  # its own cut, without encoding everything again
    want = reference(texts, context_length=context_length).numpy()
    monkeypatch.setattr(tokenizer, "_pieces", {})
    got = token_ids(texts, context_length=context_length, warn=False)
    assert got.dtype == np.int64 and got.shape == (len(texts), context_length)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # the 21k-text corpus, against open_clip
def test_a_small_cache_is_emptied_and_the_ids_stay_exact(texts, expected, monkeypatch):
    monkeypatch.setattr(tokenizer, "_pieces", {})
    monkeypatch.setattr(tokenizer, "CACHE_WORDS", 50)
    got = [ids for start in range(0, 3000, 7) for ids in tokenizer._encode_many(texts[start:start + 7])]
    assert len(tokenizer._pieces) <= 50
    assert not _differences(texts[:3000], got, expected[:3000])


def test_token_ids_and_tokenize_agree_and_warn_at_the_caller():
    text = "the handle of the white coffee cup on the saucer, which is on a wooden table next to a spoon"
    with pytest.warns(UserWarning, match="only the first 15") as record:
        ids = token_ids([text, "cat"])
    assert record[0].filename == __file__
    with pytest.warns(UserWarning) as record:
        tensor = tokenize([text, "cat"])
    assert record[0].filename == __file__
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64 and tensor.dtype == torch.int64
    np.testing.assert_array_equal(tensor.numpy(), ids)
    np.testing.assert_array_equal(token_ids("cat"), ids[1:])
    assert ids[1].tolist() == [SOT, *encode("cat"), EOT] + [0] * 14


def test_the_special_tokens_spelt_out_get_their_ids(reference):
    for text in ("<start_of_text> a <END_OF_TEXT>", "<\u017ftart_of_text>"):
        assert encode(text) == reference.encode(text)
    assert encode("<start_of_text> a <END_OF_TEXT>") == [SOT, *encode("a"), EOT]
    assert SOT not in encode("<\u017ftart_of_text>")  # long s: the pattern's IGNORECASE matches it, BPE splits it


def test_ypogegrammeni_is_dropped_as_open_clip_drops_it(reference):
    """U+0345 is no letter, but folds to iota under IGNORECASE, so no branch of CLIP's pattern takes it."""
    assert encode("cat\u0345dog") == reference.encode("cat\u0345dog") == encode("cat dog")


def test_importing_it_loads_neither_torch_nor_open_clip():
    texts = ["the cat", "na\u00efve caf\u00e9 &amp; \U0001f408 \u732b"]
    code = ("import json, sys\nimport unilseg.model.tokenizer as t\n"
            f"ids = t.token_ids({texts!r}, 77).tolist()\n"
            "print(json.dumps([sorted(m for m in ('torch', 'open_clip') if m in sys.modules), ids]))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [[], token_ids(texts, 77).tolist()]
