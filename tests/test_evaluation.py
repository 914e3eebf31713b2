import pytest

from edge_asr.evaluation import normalize, word_error_rate


def test_normalize_drops_case_punctuation_and_spells_digits():
    assert normalize("Ever tried. Ever failed, 2 times! Don't") == [
        "ever",
        "tried",
        "ever",
        "failed",
        "two",
        "times",
        "don't",
    ]


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("a b c d", "a b c d", 0.0),
        ("a b c d", "a x c d", 0.25),  # substitution
        ("a b c d", "a c d", 0.25),  # deletion
        ("a b c d", "a b b c d", 0.25),  # insertion
        ("a b", "", 1.0),
    ],
)
def test_word_error_rate_counts_edits(ref, hyp, expected):
    assert word_error_rate(ref, hyp) == expected
