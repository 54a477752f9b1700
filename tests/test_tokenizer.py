import numpy as np
import pytest
from conftest import FIXTURES, golden_cases

from unilseg.model.tokenizer import EOT, SOT, tokenize


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
