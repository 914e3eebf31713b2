"""Word error rate as Whisper's evaluations report it: on text put in one form by the Whisper
paper's normalisers (OpenAI's code, packaged as ``whisper-normalizer``), so a difference of
spelling is not counted as an error. English: numbers as digits ("forty two", "42"), contractions
expanded ("that's", "that is"), British spellings made American, punctuation, fillers and
bracketed asides dropped. Other languages: lower-cased, punctuation and symbols dropped, letters
of any alphabet kept ("büro", "calefacción")."""

from __future__ import annotations

from whisper_normalizer.basic import BasicTextNormalizer
from whisper_normalizer.english import EnglishTextNormalizer

_ENGLISH = EnglishTextNormalizer()
_OTHER = BasicTextNormalizer()


def normalize(text: str, language: str | None = "en") -> list[str]:
    """The words of ``text`` in the normalised form of its ``language`` (a Whisper code; None:
    not English)."""
    return (_ENGLISH if language == "en" else _OTHER)(text).split()


def word_error_rate(reference: str, hypothesis: str, language: str | None = "en") -> float:
    """(substitutions + deletions + insertions) / words in the reference."""
    ref, hyp = normalize(reference, language), normalize(hypothesis, language)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (r != h))
    return row[-1] / max(1, len(ref))
