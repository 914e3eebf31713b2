import pytest

from edge_asr.evaluation import normalize, word_error_rate


def test_english_is_normalised_as_the_whisper_paper_does():
    said = normalize("Ever tried. Ever failed, two times! Don't... The meter shows forty two degrees.")
    assert said == [
        "ever",
        "tried",
        "ever",
        "failed",
        "2",
        "times",
        "do",
        "not",
        "the",
        "meter",
        "shows",
        "42",
        "degrees",
    ]
    assert normalize("That's the colour.") == normalize("that is the color")  # spelling is not an error
    assert word_error_rate("the meter shows forty two", "The meter shows 42.") == 0.0


def test_other_languages_keep_their_letters():
    assert normalize("Das Büro, bitte! ¿Calefacción?", "de") == ["das", "büro", "bitte", "calefacción"]


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
