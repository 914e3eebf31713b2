"""Voice activity detection with Silero VAD (its ONNX model, run by ONNX Runtime; no torch).

``speech_spans`` follows silero-vad's ``get_speech_timestamps``: hysteresis between a speech
threshold and a lower exit threshold, short bursts dropped, spans padded, and a span that would
grow past the longest allowed is cut at the longest pause inside it. ``SpeechMap`` then collects
the spans end to end, silences removed (as faster-whisper does), so Whisper decodes 30-s windows
of speech only, and maps a time in the collected speech back to the recording.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_asr.audio import SAMPLE_RATE
from edge_asr.config import Config
from edge_asr.manifest import ModelSpec, get_model
from edge_asr.runtime.onnx import open_session

FRAME = 512  # samples per VAD decision (32 ms)
CONTEXT = 64  # samples of the previous frame the model sees with each frame
STREAM_FRAMES = 938  # frames (30 s) of audio one stream runs through; streams run side by side
WARMUP_FRAMES = 16  # a stream starts this many frames (0.5 s) early, so its state has settled


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
    def __init__(self, model_path: Path, threads: int = 0):
        self.session = open_session(model_path, threads=threads)

    @classmethod
    def of(cls, spec: ModelSpec, config: Config) -> SileroVad:
        """The VAD the speech model ``spec`` names (manifest key ``vad``), prepared."""
        if spec.vad is None:
            raise ValueError(f"model {spec.id!r} names no VAD model (manifest key 'vad')")
        vad = get_model(config, spec.vad)
        if not vad.present:
            raise ValueError(f"model {vad.id!r} is not prepared; run `edge-asr models prepare`")
        return cls(vad.directory / vad.files[0], config.ort_threads)

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability of each 32-ms frame.

        The model is recurrent, so a stream of frames runs in order; but the audio is cut into
        streams of at most 30 s that run side by side as one batch, so a recording costs one ONNX
        call per frame *position* in a stream (at most ~950), not one per frame (~19 000 for ten
        minutes). Each stream but the first starts half a second early, so its state has settled
        by its first frame.
        """
        frames = -(-len(audio) // FRAME)
        streams = max(1, -(-frames // STREAM_FRAMES))
        length = -(-frames // streams)  # frames per stream
        warmup = WARMUP_FRAMES if streams > 1 else 0
        padded = np.zeros(CONTEXT + (frames + 1) * FRAME, np.float32)
        padded[CONTEXT : CONTEXT + len(audio)] = audio
        offsets = np.arange(CONTEXT + FRAME)
        first = np.arange(streams) * length - warmup  # each stream's frame at step 0
        state = np.zeros((2, streams, 128), np.float32)
        rate = np.array(SAMPLE_RATE, np.int64)
        probs = np.zeros(frames, np.float32)
        for step in range(length + warmup):
            frame = first + step
            inside = (frame >= 0) & (frame < frames)
            windows = padded[np.clip(frame, 0, frames - 1)[:, None] * FRAME + offsets]
            windows[~inside] = 0.0  # before the recording (warm-up) or after it
            out, state = self.session.run(None, {"input": windows, "state": state, "sr": rate})
            state[:, frame < 0] = 0.0  # the first stream starts fresh at the recording's start
            if step >= warmup:
                probs[frame[inside]] = out[inside, 0]
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
    if start is not None:  # open at the end: it ends where its pause began, as a closed one would
        end = silence_from or n_samples
        if end - start > min_speech:
            spans.append([start, end])

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


class SpeechMap:
    """The speech the VAD heard, collected end to end, and the way back from a time in it to the
    recording. A silence between two spans is cut to at most ``max_gap`` seconds.

    faster-whisper removes every silence. With 2-s gaps Whisper still ends its segments at the
    pauses, which keeps subtitles on their reading (10-minute recording of readings between 2-9 s
    silences, greedy: 1 of 18 readings without a segment starting within a second of it, against
    13 with the silences removed, same error rate and speed); longer gaps made it worse (espeak
    recording at beam 5: 8.1 % WER at 2 s, 11.9 % at 3 s, 15.6 % at 4 s). Ending windows at long
    silences instead, as edge-asr did before, put every reading's start in place but left short
    sentences alone in their windows, where Whisper does badly (espeak: 29-35 % WER, 3x the time).
    Windows are gathered when asked for: the collected speech is never held in memory whole.
    """

    def __init__(self, spans: list[Span], max_gap: float = 2.0):
        self.speech = tuple(spans)
        kept = [[s.start, s.end] for s in spans]
        for before, after in itertools.pairwise(kept):
            share = min(after[0] - before[1], round(max_gap * SAMPLE_RATE)) // 2
            before[1] += share
            after[0] -= share
        self.regions = tuple(Span(a, b) for a, b in kept)  # what is collected, in the recording
        self._starts = [0, *itertools.accumulate(s.end - s.start for s in self.regions)]  # ... in the collected

    @property
    def samples(self) -> int:
        """Length of the collected speech, in samples."""
        return self._starts[-1]

    def window(self, audio: np.ndarray, start: int, length: int) -> np.ndarray:
        """Samples ``start`` .. ``start + length`` of the collected speech (fewer at its end)."""
        end = min(start + length, self.samples)
        pieces = []
        for i in range(max(bisect.bisect_right(self._starts, start) - 1, 0), len(self.regions)):
            if self._starts[i] >= end:
                break
            region = self.regions[i]
            first = region.start + max(start - self._starts[i], 0)
            last = region.start + min(end - self._starts[i], region.end - region.start)
            pieces.append(audio[first:last])
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def pause_between(self, start: int, end: int) -> int | None:
        """The last pause (a boundary between two spans) in ``start`` < p <= ``end`` of the
        collected speech, or None."""
        i = bisect.bisect_right(self._starts, end, 1, len(self._starts) - 1) - 1
        return self._starts[i] if i >= 1 and self._starts[i] > start else None

    def _recording(self, sample: int, find: Callable[[list[int], int], int]) -> int:
        i = min(max(find(self._starts, sample) - 1, 0), len(self.regions) - 1)
        return self.regions[i].start + sample - self._starts[i]

    def place(self, start: float, end: float, max_pause: float = 1.0) -> tuple[float, float]:
        """Recording times (s) of a segment found ``start`` .. ``end`` seconds into the collected
        speech, kept on one stretch of speech (pauses of at most ``max_pause`` inside): the one
        the segment overlaps most, else the one after its start. So a start in a pause, or in the
        last moments of the speech before it (a window that begins there), moves to the speech
        after it, and the end stops where that speech stops (Whisper likes to end a segment at
        the next one's onset, stretching it over the silence between)."""
        first = self._recording(min(max(round(start * SAMPLE_RATE), 0), self.samples), bisect.bisect_right)
        last = self._recording(min(max(round(end * SAMPLE_RATE), 0), self.samples), bisect.bisect_left)
        islands: list[list[int]] = []
        for span in self.speech:
            if islands and span.start - islands[-1][1] < max_pause * SAMPLE_RATE:
                islands[-1][1] = span.end
            else:
                islands.append([span.start, span.end])
        overlaps = [min(last, i[1]) - max(first, i[0]) for i in islands]
        most = max(range(len(islands)), key=overlaps.__getitem__)
        island = islands[most] if overlaps[most] > 0 else next((i for i in islands if first < i[1]), islands[-1])
        first = min(max(first, island[0]), island[1])
        last = min(max(last, first), island[1])
        return first / SAMPLE_RATE, last / SAMPLE_RATE
