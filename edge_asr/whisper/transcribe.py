"""Audio of any length to timestamped segments.

Silero VAD finds the speech; consecutive speech spans are grouped into chunks of at most 30 s
(one encoder window each), so memory stays bounded whatever the length and long silence costs
nothing. Segment times are placed on the speech the VAD heard (``Chunk.place``).
Each chunk is decoded with timestamps; a decode that looks wrong (gzip compression ratio above
2.4: a loop; average log-probability below -1) is retried at higher temperatures, and a chunk the
model believes silent (no-speech probability above 0.6 with low confidence) yields no segment —
the reference implementation's rules. Every chunk is decoded after the same initial prompt (the
user's prompt or hotwords), not after the previous chunk's text, so one error cannot propagate.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from edge_asr.vad import SAMPLE_RATE, SileroVad, chunk_spans
from edge_asr.whisper.decoding import compression_ratio
from edge_asr.whisper.model import SECONDS_PER_TIMESTAMP, WhisperModel, WindowResult

TEMPERATURE_STEP = 0.2
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6


@dataclass(frozen=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float  # seconds of audio
    segments: list[Segment]

    @classmethod
    def of(cls, segments: list[Segment], audio: np.ndarray) -> Transcript:
        return cls(" ".join(s.text for s in segments), len(audio) / SAMPLE_RATE, segments)

    def as_dict(self) -> dict:
        """The form the formats (``edge_asr.formats``) and the worker protocol use."""
        return {"text": self.text, "duration": self.duration, "segments": [s.as_dict() for s in self.segments]}


def _decode_with_fallback(
    model: WhisperModel, audio: np.ndarray, prompt: list[int], temperature: float
) -> tuple[WindowResult, float] | None:
    """The first acceptable decode of ``audio`` at rising temperatures, or None if it is silence."""
    encoded = model.encode(audio)
    rng = np.random.default_rng(0)
    temperatures = np.arange(temperature, 1.0 + 1e-6, TEMPERATURE_STEP) if temperature < 1 else [temperature]
    for t in temperatures:
        result = model.decode(encoded, prompt, float(round(t, 2)), timestamps=True, rng=rng)
        ratio = compression_ratio(model.tokenizer.decode(result.tokens))
        confident = result.avg_logprob >= LOGPROB_THRESHOLD
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and not confident:
            return None
        if ratio <= COMPRESSION_RATIO_THRESHOLD and confident:
            break
    return result, ratio


def _segments(model: WhisperModel, tokens: list[int], length: float) -> list[tuple[float, float, list[int]]]:
    """Split ``<|t0|> text <|t1|><|t1|> text <|t2|>`` into (start, end, text tokens), in seconds."""
    begin = model.timestamp_begin
    found: list[tuple[float, float, list[int]]] = []
    start: float | None = None
    previous_end, text = 0.0, []
    for token in tokens:
        if token < begin:
            text.append(token)
            continue
        time = min((token - begin) * SECONDS_PER_TIMESTAMP, length)
        if text:
            found.append((start if start is not None else previous_end, time, text))
            start, previous_end, text = None, time, []
        else:
            start = time
    if text:  # cut off before its closing timestamp: it runs to the end of the chunk
        found.append((start if start is not None else previous_end, length, text))
    return found


def transcribe_chunks(
    model: WhisperModel,
    vad: SileroVad,
    audio: np.ndarray,
    language: str | None = None,
    prompt: str | None = None,
    temperature: float = 0.0,
) -> Iterator[list[Segment]]:
    """Segments of 16 kHz mono float32 ``audio``, one list per chunk, as each is decoded."""
    start_tokens = model.tokenizer.prompt(language, prompt, timestamps=True, max_previous=model.max_new_tokens - 1)
    next_id = 0
    for chunk in chunk_spans(vad.speech_spans(audio)):
        speech = chunk.samples(audio)
        decoded = _decode_with_fallback(model, speech, start_tokens, temperature)
        if decoded is None:
            yield []
            continue
        result, ratio = decoded
        segments = []
        for start, end, text_tokens in _segments(model, result.tokens, len(speech) / SAMPLE_RATE):
            text = model.tokenizer.decode(text_tokens).strip()
            if not text:
                continue
            placed = chunk.place(start, end)
            segments.append(
                Segment(
                    id=next_id,
                    start=round(placed[0], 3),
                    end=round(placed[1], 3),
                    text=text,
                    tokens=text_tokens,
                    temperature=result.temperature,
                    avg_logprob=round(result.avg_logprob, 4),
                    compression_ratio=round(ratio, 4),
                    no_speech_prob=round(result.no_speech_prob, 4),
                )
            )
            next_id += 1
        yield segments


def transcribe(model: WhisperModel, vad: SileroVad, audio: np.ndarray, **options) -> Transcript:
    """The whole transcript (``options`` as for ``transcribe_chunks``)."""
    return Transcript.of([s for chunk in transcribe_chunks(model, vad, audio, **options) for s in chunk], audio)
