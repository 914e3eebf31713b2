"""Logit rules of Whisper decoding, as in the reference implementation (openai/whisper
``decoding.py``): suppressed tokens, and the timestamp rules that make the model emit
``<|t0|> text <|t1|>`` pairs in order — for a batch of sequences (beams, or best-of samples)
decoded together, each row by its own history."""

from __future__ import annotations

import zlib

import numpy as np

NEG_INF = -np.inf
MAX_INITIAL_TIMESTAMP = 50  # the first timestamp is at most 1.0 s (50 x 20 ms)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Along the last axis; rows may hold -inf (masked tokens), never only -inf."""
    return _softmax_terms(scores)[0]


def _softmax_terms(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The log-softmax, and the exponentials and row totals it was made of (unnormalised)."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    total = probs.sum(axis=-1, keepdims=True)
    return shifted - np.log(total), probs, total


def compression_ratio(text: str) -> float:
    """How much gzip shrinks the text: a decoder stuck in a loop repeats itself (ratio > 2.4)."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def apply_timestamp_rules(scores: np.ndarray, sampled: list[list[int]], eot: int, timestamp_begin: int) -> np.ndarray:
    """Mask ``scores [N, V]`` (in place) so each row's timestamps come in increasing pairs around
    text, given what that row has sampled so far; return the log-probabilities of the masked
    scores (the softmax is the costly part of a step: it is computed once)."""
    for row, tokens in zip(scores, sampled, strict=True):
        last_was_timestamp = len(tokens) >= 1 and tokens[-1] >= timestamp_begin
        penultimate_was_timestamp = len(tokens) < 2 or tokens[-2] >= timestamp_begin
        if last_was_timestamp:
            if penultimate_was_timestamp:  # a pair just closed: text (or the end) comes next
                row[timestamp_begin:] = NEG_INF
            else:  # an opening timestamp with no text yet: not the end of text
                row[:eot] = NEG_INF
        last_stamp = next((t for t in reversed(tokens) if t >= timestamp_begin), None)
        if last_stamp is not None:  # time never goes back; after a closing stamp, it moves on
            floor = last_stamp if last_was_timestamp and not penultimate_was_timestamp else last_stamp + 1
            row[timestamp_begin:floor] = NEG_INF
        if not tokens:  # start with a timestamp, and an early one
            row[:timestamp_begin] = NEG_INF
            row[timestamp_begin + MAX_INITIAL_TIMESTAMP + 1 :] = NEG_INF
    logprobs, probs, total = _softmax_terms(scores)
    with np.errstate(divide="ignore"):  # every timestamp masked: log(0) = -inf
        timestamp_logprob = np.log(probs[:, timestamp_begin:].sum(axis=-1) / total[:, 0])
    text_logprob = logprobs[:, :timestamp_begin].max(axis=-1)
    only_timestamps = timestamp_logprob > text_logprob  # timestamps together beat any text
    scores[only_timestamps, :timestamp_begin] = NEG_INF
    logprobs[only_timestamps, :timestamp_begin] = NEG_INF  # renormalised over the timestamps left
    logprobs[only_timestamps, timestamp_begin:] -= timestamp_logprob[only_timestamps, None]
    return logprobs
