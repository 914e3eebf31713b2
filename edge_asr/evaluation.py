"""Word error rate, as speech benchmarks report it: on lower-cased words without punctuation
(letters of any alphabet kept: "büro", "calefacción")."""

from __future__ import annotations

import re

_DIGITS = dict(enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]))


def normalize(text: str) -> list[str]:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"\b(\d)\b", lambda m: _DIGITS[int(m.group(1))], text)
    text = re.sub(r"[^\w' ]+|_", " ", text)
    text = re.sub(r"'(?!\w)|(?<!\w)'", " ", text)
    return text.split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in the reference."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (r != h))
    return row[-1] / max(1, len(ref))
