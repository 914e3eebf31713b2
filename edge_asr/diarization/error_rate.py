"""Diarization error rate (DER), as NIST scores it without a forgiveness collar: the share of the
reference's speech time that is missed, falsely found, or given to the wrong speaker under the
best one-to-one mapping of found speakers to reference speakers. For the tests and benchmarks
(pyannote.metrics would bring pandas, scipy and scikit-learn for this one number)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

Turn = tuple[float, float, str]  # start, end (seconds), speaker
STEP = 0.01  # seconds a frame


def read_rttm(text: str) -> list[Turn]:
    turns = []
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start = float(fields[3])
            turns.append((start, start + float(fields[4]), fields[7]))
    return turns


def diarization_error_rate(reference: Sequence[Turn], found: Sequence[Turn]) -> float:
    end = max(e for _, e, _ in [*reference, *found])
    truth, guess = _frames(reference, end), _frames(found, end)
    overlap = truth.astype(np.int64) @ guess.T.astype(np.int64)  # frames each pair shares
    size = max(overlap.shape)
    square = np.zeros((size, size), np.int64)
    square[: overlap.shape[0], : overlap.shape[1]] = overlap
    if size > 8:
        raise ValueError("more than 8 speakers: the exhaustive mapping would take too long")
    correct = max(sum(square[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(size)))
    spoken, heard = truth.sum(axis=0), guess.sum(axis=0)
    return float((np.maximum(spoken, heard).sum() - correct) / spoken.sum())


def _frames(turns: Sequence[Turn], end: float) -> np.ndarray:
    speakers = sorted({s for *_, s in turns})
    frames = np.zeros((len(speakers), int(end / STEP) + 1), bool)
    for start, stop, speaker in turns:
        frames[speakers.index(speaker), round(start / STEP) : round(stop / STEP)] = True
    return frames
