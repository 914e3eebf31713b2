"""When the decoded tokens were spoken: the reference implementation's word alignment (openai/whisper
``timing.py``, ``find_alignment``). The decoder reads the window's text once more, from the start,
and the cross-attention of the model's alignment heads (which follow the speech) says which audio
each token looked at; dynamic time warping finds the monotonic path through those weights.

Transcription uses it where a timestamp token is too coarse: to resume after a window's last word,
not after its last timestamp, which Whisper often puts a few hundred milliseconds late (in the next
sentence's first word, which the next window would then lose) or early (before a last short word,
which would then be heard twice). The reference does the same when it has word timestamps.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

POSITIONS_PER_SECOND = 50  # encoder positions: 30 s are 1500
MEDIAN_FILTER_WIDTH = 7
# Punctuation the reference merges into the word before it (``merge_punctuations``'s "appended"):
# a word's end is where its last letters end, not where Whisper placed its full stop.
TRAILING_PUNCTUATION = set("\"'.。,，!！?？:：”)]}、")  # noqa: RUF001 (the full-width forms are meant)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from ``cost[0, 0]`` to ``cost[-1, -1]`` (steps: down, right, or
    both), as (row, column) index arrays; ties broken as the reference breaks them. A row at a
    time: steps right within a row are a running minimum over prefix sums, so no Python loop runs
    over the columns (the reference compiles its loop with numba)."""
    rows, columns = cost.shape
    total = np.full((rows + 1, columns + 1), np.inf)
    total[0, 0] = 0
    for i in range(1, rows + 1):
        from_above = np.minimum(total[i - 1, :-1], total[i - 1, 1:]) + cost[i - 1]  # diagonal or down
        prefix = np.cumsum(cost[i - 1])
        total[i, 1:] = np.minimum.accumulate(from_above - prefix) + prefix  # then any steps right
    path, i, j = [], rows, columns
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        diagonal, down, right = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        if diagonal < down and diagonal < right:
            i, j = i - 1, j - 1
        elif down < diagonal and down < right:
            i -= 1
        else:
            j -= 1
    row, column = np.array(path[::-1]).T
    return row, column


def token_starts(qk: np.ndarray, positions: int, first: int = 0) -> np.ndarray:
    """When each row's token begins, in seconds into the window. ``qk [heads, rows, 1500]``: the
    alignment heads' cross-attention logits of the rows that predict the tokens (the last row
    predicts <|endoftext|>, so its start is where the last token ends); ``positions``: the encoder
    positions that hold the window's audio; ``first``: the first position the tokens may start at.
    Normalised and median-filtered as the reference does."""
    weights = qk[:, :, :positions].astype(np.float64)
    weights = np.exp(weights - weights.max(-1, keepdims=True))
    weights = (weights / weights.sum(-1, keepdims=True))[:, :, first:]
    weights = (weights - weights.mean(1, keepdims=True)) / (weights.std(1, keepdims=True) + 1e-10)
    half = MEDIAN_FILTER_WIDTH // 2
    if weights.shape[-1] > half:
        padded = np.pad(weights, ((0, 0), (0, 0), (half, half)), mode="reflect")
        windows = sliding_window_view(padded, MEDIAN_FILTER_WIDTH, axis=-1)
        weights = np.partition(windows, half, axis=-1)[..., half]
    row, column = dtw(-weights.mean(0))
    entered = np.diff(row, prepend=-1).astype(bool)  # where the path enters each row
    return (first + column[entered]) / POSITIONS_PER_SECOND


def end_of_last_word(starts: np.ndarray, pieces: list[str]) -> float:
    """Where the last word ends: ``starts`` from ``token_starts`` for tokens whose texts are
    ``pieces`` (and <|endoftext|> after them); trailing punctuation is not part of a word."""
    last = len(pieces)
    while last > 1 and set(pieces[last - 1].strip()) <= TRAILING_PUNCTUATION:
        last -= 1
    return float(starts[last])
