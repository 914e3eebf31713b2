"""Voice activity detection with Silero VAD (its ONNX model, run by ONNX Runtime; no torch).

``speech_spans`` follows silero-vad's ``get_speech_timestamps``: hysteresis between a speech
threshold and a lower exit threshold, short bursts dropped, spans padded, and a span that would
grow past the longest allowed is cut at the longest pause inside it. ``chunk_spans`` then groups
consecutive spans into chunks of at most 30 s for Whisper, so memory and work stay bounded per
chunk and long silences are never decoded. Pauses inside a chunk stay in it: Whisper uses them to
end sentences, and joining speech across them makes it run segments over the joins.
``Chunk.place`` puts a segment Whisper found on the speech the VAD heard.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.runtime.onnx import open_session

SAMPLE_RATE = 16000
FRAME = 512  # samples per VAD decision (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees with each frame


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5
    min_speech_ms: int = 250  # shorter bursts are noise
    min_silence_ms: int = 500  # a pause this long ends a span
    speech_pad_ms: int = 200  # kept around each span, so word edges are not clipped
    max_span_s: float = 29.0  # a longer span is cut at its longest pause (>= 98 ms)


@dataclass(frozen=True)
class Span:
    start: int  # sample index, inclusive
    end: int  # sample index, exclusive


class SileroVad:
    def __init__(self, model_path: Path):
        self.session = open_session(model_path, threads=1)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32-ms frame (the model is recurrent: frames run in order)."""
        frames = -(-len(audio) // FRAME)
        padded = np.zeros(CONTEXT + frames * FRAME, np.float32)
        padded[CONTEXT : CONTEXT + len(audio)] = audio
        state = np.zeros((2, 1, 128), np.float32)
        rate = np.array(SAMPLE_RATE, np.int64)
        probs = np.empty(frames, np.float32)
        for i in range(frames):
            window = padded[i * FRAME : i * FRAME + CONTEXT + FRAME][None]
            out, state = self.session.run(None, {"input": window, "state": state, "sr": rate})
            probs[i] = out[0, 0]
        return probs

    def speech_spans(self, audio: np.ndarray, options: VadOptions = VadOptions()) -> list[Span]:
        return spans_from_probabilities(self.probabilities(audio), len(audio), options)


def spans_from_probabilities(probs: np.ndarray, n_samples: int, options: VadOptions = VadOptions()) -> list[Span]:
    ms = SAMPLE_RATE // 1000
    pad = options.speech_pad_ms * ms
    min_silence, min_speech = options.min_silence_ms * ms, options.min_speech_ms * ms
    max_span = options.max_span_s * SAMPLE_RATE - FRAME - 2 * pad
    exit_threshold = max(options.threshold - 0.15, 0.01)
    spans: list[list[int]] = []
    start: int | None = None
    silence_from = 0  # where the current pause began (0: not in a pause)
    pauses: list[tuple[int, int]] = []  # (begin, length) of pauses inside the current span

    for i, p in enumerate(probs):
        sample = i * FRAME
        if p >= options.threshold and silence_from:
            if sample - silence_from > 98 * ms:
                pauses.append((silence_from, sample - silence_from))
            silence_from = 0
        if start is None:
            if p >= options.threshold:
                start = sample
            continue
        if sample - start > max_span:  # too long: cut at the longest pause, or here
            if pauses:
                begin, length = max(pauses, key=lambda pause: pause[1])
                spans.append([start, begin])
                start = begin + length if begin + length < sample else None
            else:
                spans.append([start, sample])
                start = None
            silence_from, pauses = 0, []
            if start is None:
                continue
        if p < exit_threshold:
            silence_from = silence_from or sample
            if sample - silence_from >= min_silence:
                if silence_from - start > min_speech:
                    spans.append([start, silence_from])
                start, silence_from, pauses = None, 0, []
    if start is not None and n_samples - start > min_speech:
        spans.append([start, n_samples])

    for i, span in enumerate(spans):  # pad, splitting a short gap between neighbours
        if i == 0:
            span[0] = max(0, span[0] - pad)
        if i + 1 < len(spans):
            gap = spans[i + 1][0] - span[1]
            share = gap // 2 if gap < 2 * pad else pad
            span[1] += share
            spans[i + 1][0] -= share
        else:
            span[1] = min(n_samples, span[1] + pad)
    return [Span(s, e) for s, e in spans]


@dataclass(frozen=True)
class Chunk:
    spans: tuple[Span, ...]

    @property
    def start(self) -> int:
        return self.spans[0].start

    @property
    def end(self) -> int:
        return self.spans[-1].end

    def samples(self, audio: np.ndarray) -> np.ndarray:
        return audio[self.start : self.end]

    def place(self, start: float, end: float, max_pause: float = 1.0) -> tuple[float, float]:
        """Recording times (s) of a segment found ``start``..``end`` seconds into the chunk, kept
        off pauses longer than ``max_pause``: a start inside one moves to the speech after it, and
        the end stops where the speech it started in stops (Whisper likes to end a segment at
        the next one's onset, stretching it over the silence between)."""
        islands: list[list[int]] = []
        for span in self.spans:
            if islands and span.start - islands[-1][1] < max_pause * SAMPLE_RATE:
                islands[-1][1] = span.end
            else:
                islands.append([span.start, span.end])
        first = self.start + start * SAMPLE_RATE
        last = self.start + end * SAMPLE_RATE
        island = next((i for i in islands if first < i[1]), islands[-1])
        first = min(max(first, island[0]), island[1])
        last = min(max(last, first), island[1])
        return first / SAMPLE_RATE, last / SAMPLE_RATE


def chunk_spans(spans: list[Span], max_chunk: int = 30 * SAMPLE_RATE, max_gap: float = 3.0) -> list[Chunk]:
    """Group consecutive spans into chunks spanning at most ``max_chunk`` samples, never across a
    silence longer than ``max_gap`` seconds: Whisper tends to stop at one and drop what follows.
    (A span longer than a chunk, which the VAD does not produce, is split.)"""
    chunks: list[list[Span]] = []
    for span in spans:
        for start in range(span.start, span.end, max_chunk):
            piece = Span(start, min(span.end, start + max_chunk))
            if (
                chunks
                and piece.end - chunks[-1][0].start <= max_chunk
                and piece.start - chunks[-1][-1].end <= max_gap * SAMPLE_RATE
            ):
                chunks[-1].append(piece)
            else:
                chunks.append([piece])
    return [Chunk(tuple(c)) for c in chunks]
