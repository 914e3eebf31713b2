"""The token search strategies as plain functions (no model): greedy, beam search with patience,
best-of sampling, and the ranking with its length penalty, on hand-made log-probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from edge_asr.whisper.decoding import log_softmax
from edge_asr.whisper.search import BeamSearch, Sampling, rank, top_tokens

EOT = 3  # a vocabulary of four: three words and the end of text


@pytest.fixture(autouse=True)
def _log_of_zero_is_minus_infinity():
    with np.errstate(divide="ignore"):
        yield


def run(search: Sampling | BeamSearch, table: dict[tuple[int, ...], list[float]]) -> tuple[list[int], float, int]:
    """Drive ``search`` as WhisperModel.decode does, the next-token probabilities after each
    prefix from ``table``; the best sequence, its log-probability, and the steps taken."""
    sampled: list[list[int]] = [[] for _ in range(search.width)]
    steps = 0
    while sampled and steps < 10:
        scores = np.log(np.array([table[tuple(s)] for s in sampled], np.float32))
        chosen = search.step(sampled, scores, log_softmax(scores))
        sampled = [[*sampled[row], token] for row, token in zip(chosen.sources, chosen.tokens, strict=True)]
        steps += 1
    tokens, total = search.best(sampled, None)
    return tokens, total, steps


# After "0" the model is unsure how to go on; after "1" it is sure: the likelier first word leads
# to the less likely sentence of the same length.
TABLE = {
    (): [0.6, 0.4, 0.0, 0.0],
    (0,): [0.3, 0.3, 0.3, 0.1],
    (1,): [0.95, 0.05, 0.0, 0.0],
    (0, 0): [0.0, 0.0, 0.0, 1.0],
    (0, 1): [0.0, 0.0, 0.0, 1.0],
    (0, 2): [0.0, 0.0, 0.0, 1.0],
    (1, 0): [0.0, 0.0, 0.0, 1.0],
    (1, 1): [0.0, 0.0, 0.0, 1.0],
}


def test_greedy_takes_the_likeliest_token_each_step():
    tokens, total, _ = run(Sampling(1, 0.0, EOT, np.random.default_rng(0)), TABLE)
    assert tokens == [0, 0] and total == pytest.approx(np.log(0.6 * 0.3 * 1.0), abs=1e-5)


def test_beam_search_finds_the_likelier_sentence_greedy_misses():
    tokens, total, _ = run(BeamSearch(2, 1.0, EOT), TABLE)
    assert tokens == [1, 0] and total == pytest.approx(np.log(0.4 * 0.95), abs=1e-5)  # 0.38 > 0.18


def test_patience_waits_for_more_finished_beams():
    scores = np.log(np.array([[0.4, 0.0, 0.0, 0.6], [0.0, 0.4, 0.0, 0.6]], np.float32))
    for patience, goes_on in ((1.0, []), (2.0, [0, 1])):
        search = BeamSearch(2, patience, EOT)
        chosen = search.step([[2], [0]], scores, log_softmax(scores))
        assert len(search.finished) == 2 and chosen.sources == goes_on  # two ended: enough at patience 1


def test_beams_continue_from_their_rows():
    search = BeamSearch(2, 1.0, EOT)
    scores = np.log(np.array([[0.1, 0.8, 0.1, 0.0], [0.7, 0.1, 0.2, 0.0]], np.float32))
    chosen = search.step([[0], [1]], scores, log_softmax(scores))
    assert (chosen.tokens, chosen.sources) == ([1, 0], [0, 1])  # "0 1" from row 0, "1 0" from row 1


def test_best_of_keeps_the_likeliest_sample():
    table = {(): [0.5, 0.5, 0.0, 0.0], (0,): [0.0, 0.0, 0.0, 1.0], (1,): [0.0, 0.0, 0.0, 1.0]}
    search = Sampling(5, 1.0, EOT, np.random.default_rng(3))
    tokens, total, _ = run(search, table)
    assert len(search.finished) == 5 and {t for t, _ in search.finished} == {(0,), (1,)}
    assert tokens in ([0], [1]) and total == pytest.approx(np.log(0.5), abs=1e-5)


def test_the_length_penalty_ranks_long_and_short_candidates():
    candidates = [((1, 2, 3), -3.0), ((1,), -1.5)]
    assert rank(candidates, None) == ([1, 2, 3], -3.0)  # -1.0 per token beats -1.5
    assert rank(candidates, 1.0) == ([1], -1.5)  # ((5 + 3) / 6) = 1.33: -2.25 against -1.5


def test_top_tokens_are_the_likeliest_however_peaked_the_row():
    rng = np.random.default_rng(0)
    flat = rng.normal(0, 1, 5000)
    peaked = np.where(np.arange(5000) == 7, 0.0, -30.0 - rng.random(5000) * 40)  # one token, the rest e^30 less likely
    masked = np.full(5000, -np.inf)
    masked[[3, 11, 400]] = [-0.1, -2.0, -5.0]  # fewer possible tokens than asked for
    rows = log_softmax(np.stack([flat, peaked, masked]).astype(np.float32))
    found = top_tokens(rows, 6)
    assert sorted(found[0]) == sorted(np.argsort(rows[0])[-6:].tolist())
    assert sorted(found[1]) == sorted(np.argsort(rows[1])[-6:].tolist()) and 7 in found[1]
    assert sorted(found[2]) == [3, 11, 400]
