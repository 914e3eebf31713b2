"""Logit rules of Whisper decoding, as in the reference implementation (openai/whisper
``decoding.py``): suppressed tokens, and the timestamp rules that make the model emit
``<|t0|> text <|t1|>`` pairs in order."""

from __future__ import annotations

import zlib

import numpy as np

NEG_INF = -np.inf
MAX_INITIAL_TIMESTAMP = 50  # the first timestamp is at most 1.0 s (50 x 20 ms)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    finite_max = scores[np.isfinite(scores)].max()
    shifted = scores - finite_max
    return shifted - np.log(np.exp(shifted).sum())


def compression_ratio(text: str) -> float:
    """How much gzip shrinks the text: a decoder stuck in a loop repeats itself (ratio > 2.4)."""
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def apply_timestamp_rules(scores: np.ndarray, sampled: list[int], eot: int, timestamp_begin: int) -> None:
    """Mask ``scores`` (in place) so timestamps come in increasing pairs around text."""
    last_was_timestamp = len(sampled) >= 1 and sampled[-1] >= timestamp_begin
    penultimate_was_timestamp = len(sampled) < 2 or sampled[-2] >= timestamp_begin
    if last_was_timestamp:
        if penultimate_was_timestamp:  # a pair just closed: text (or the end) comes next
            scores[timestamp_begin:] = NEG_INF
        else:  # an opening timestamp with no text yet: not the end of text
            scores[:eot] = NEG_INF
    stamps = [t for t in sampled if t >= timestamp_begin]
    if stamps:  # time never goes back; after a closing stamp, it moves on
        floor = stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
        scores[timestamp_begin:floor] = NEG_INF
    if not sampled:  # start with a timestamp, and an early one
        scores[:timestamp_begin] = NEG_INF
        scores[timestamp_begin + MAX_INITIAL_TIMESTAMP + 1 :] = NEG_INF
    logprobs = log_softmax(scores)
    timestamp_logprob = np.logaddexp.reduce(logprobs[timestamp_begin:])
    if timestamp_logprob > logprobs[:timestamp_begin].max():  # timestamps together beat any text token
        scores[:timestamp_begin] = NEG_INF
