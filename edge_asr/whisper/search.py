"""How the next token of each sequence is chosen, as the reference implementation does it
(openai/whisper ``decoding.py``): greedy, sampling at a temperature (best-of: several samples,
the best kept), and beam search with patience. The sequences of a window are the rows of one
batch through the KV-cached decoder; a strategy says, each step, which rows go on, from which row
each continues (beam search reorders the cache: it never recomputes it) and with which token.

Rows are scored by the sum of their tokens' log-probabilities (``<|endoftext|>`` included), and
candidates ranked by that sum over a length penalty: the length itself by default, or the
Google NMT paper's ``((5 + length) / 6) ** length_penalty``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edge_asr.whisper.decoding import log_softmax

# How far below a row's best ``top_tokens`` looks, in turn. Measured on tiny.en at beam 5: within
# e^10 of the best lie a median of 28 tokens (fewer than 6 in 6 % of the rows), within e^20 29 000.
NEAR = (10.0, 14.0, 20.0, np.inf)


@dataclass(frozen=True)
class Step:
    """The rows that go on: each one's next token and the row it continues."""

    tokens: list[int]
    sources: list[int]


def rank(candidates: Iterable[tuple[tuple[int, ...], float]], length_penalty: float | None) -> tuple[list[int], float]:
    """The best (tokens, sum of log-probabilities) of ``candidates``."""

    def score(candidate: tuple[tuple[int, ...], float]) -> float:
        length = max(len(candidate[0]), 1)
        penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
        return candidate[1] / penalty

    tokens, total = max(candidates, key=score)
    return list(tokens), total


def top_tokens(logprobs: np.ndarray, k: int) -> list[list[int]]:
    """The ``k`` likeliest tokens of each row (in no order; all the possible ones where fewer are
    possible). A partition of the whole vocabulary costs more than a decoding step's softmax: the
    tokens are looked for near the row's best first, and further only when fewer than ``k`` are
    that near."""
    found = []
    for row in logprobs:
        best = row.max()
        for margin in NEAR:
            near = np.flatnonzero(row > best - margin)
            if len(near) >= k:
                break
        found.append((near[np.argpartition(row[near], -k)[-k:]] if len(near) > k else near).tolist())
    return found


class Sampling:
    """Greedy (temperature 0, one row) or ``n`` independent samples at ``temperature``; a row
    that ends leaves the batch."""

    def __init__(self, n: int, temperature: float, eot: int, rng: np.random.Generator):
        self.width, self.temperature, self.eot, self.rng = n, temperature, eot, rng
        self.sums = [0.0] * n
        self.finished: list[tuple[tuple[int, ...], float]] = []

    def step(self, sampled: list[list[int]], scores: np.ndarray, logprobs: np.ndarray) -> Step:
        if self.temperature == 0:
            chosen = scores.argmax(axis=-1).tolist()
        else:
            probs = np.exp(log_softmax(scores / self.temperature).astype(np.float64))
            chosen = [int(self.rng.choice(len(p), p=p / p.sum())) for p in probs]
        step, sums = Step([], []), []
        for row, token in enumerate(chosen):
            total = self.sums[row] + float(logprobs[row, token])
            if token == self.eot:
                self.finished.append((tuple(sampled[row]), total))
            else:
                step.tokens.append(token)
                step.sources.append(row)
                sums.append(total)
        self.sums = sums
        return step

    def best(self, sampled: list[list[int]], length_penalty: float | None) -> tuple[list[int], float]:
        """The best sample: finished ones, and those the length limit cut."""
        unfinished = [(tuple(tokens), total) for tokens, total in zip(sampled, self.sums, strict=True)]
        return rank(self.finished + unfinished, length_penalty)


class BeamSearch:
    """``beam_size`` beams; each step the best ``beam_size`` continuations of all beams go on, and
    those that end are kept until ``round(beam_size * patience)`` have ended."""

    def __init__(self, beam_size: int, patience: float, eot: int):
        self.width, self.eot = beam_size, eot
        self.max_finished = round(beam_size * patience)
        self.sums = [0.0] * beam_size
        self.finished: dict[tuple[int, ...], float] = {}

    def step(self, sampled: list[list[int]], scores: np.ndarray, logprobs: np.ndarray) -> Step:
        candidates: dict[tuple[int, ...], tuple[float, int, int]] = {}  # sequence -> (sum, row, token)
        for row, tokens in enumerate(top_tokens(logprobs, self.width + 1)):
            for token in tokens:
                logprob = float(logprobs[row, token])
                if logprob > -np.inf:
                    candidates[(*sampled[row], token)] = (self.sums[row] + logprob, row, token)
        step, sums, ended = Step([], []), [], {}
        for sequence, (total, row, token) in sorted(candidates.items(), key=lambda c: -c[1][0]):
            if token == self.eot:
                ended[sequence[:-1]] = total
                continue
            step.tokens.append(token)
            step.sources.append(row)
            sums.append(total)
            if len(sums) == self.width:
                break
        for sequence, total in sorted(ended.items(), key=lambda e: -e[1]):
            if len(self.finished) >= self.max_finished:
                break
            self.finished[sequence] = total
        if len(self.finished) >= self.max_finished:  # done: no row goes on
            step, sums = Step([], []), []
        self.sums = sums
        return step

    def best(self, sampled: list[list[int]], length_penalty: float | None) -> tuple[list[int], float]:
        """The best finished beam; while fewer than ``beam_size`` have finished (the length limit
        stopped them), the best unfinished ones count too."""
        candidates = dict(self.finished)
        for row in np.argsort(self.sums)[::-1]:
            if len(candidates) >= self.width:
                break
            candidates.setdefault(tuple(sampled[row]), self.sums[row])
        return rank(candidates.items(), length_penalty)
