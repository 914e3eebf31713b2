"""Audio of any length to timestamped segments: the reference implementation's long-form
algorithm (openai/whisper ``transcribe.py``, faster-whisper's ``generate_segments``) on the
speech the VAD heard.

Silero VAD finds the speech; it is collected end to end with the silences removed (``SpeechMap``)
and decoded in 30-s windows with seek. After a window, decoding goes on from where its last
complete segment ended, so speech after an early end-of-text is decoded in the next window,
never dropped; a segment the window cut off is decoded again, whole, in the next one. (The
reference moves on to the next window after a complete segment and an end-of-text, losing what
followed in that window: a sentence, in a test recording.) Where Whisper put that end after a
pause the segment's last word precedes (the word aligned on the audio: ``alignment.py``), the next
window starts at the pause instead: such an end timestamp is a few hundred ms into the next
sentence, whose first word the next window would lose (what it changes on the benchmark's
recordings: ``bench/RESULTS.md``).
Segment times map back onto the recording's speech.

Each window is decoded by beam search (``beam_size``; 1 = greedy); a decode that looks wrong (gzip
compression ratio above 2.4: a loop; average log-probability below -1) is retried at higher
temperatures with the best of ``best_of`` samples, and a window the model believes silent
(no-speech probability above 0.6 with low confidence) yields no segment. By default every window
is decoded after the same initial prompt (the user's prompt or hotwords), so one error cannot
propagate; ``condition_on_previous_text`` adds the previous windows' text, as the reference does.
Memory per request is the decoded PCM plus one window's work, whatever the length.

A multilingual model told no language detects it on the first window of speech, as the reference
does, and decodes every window in it; ``task="translate"`` decodes into English.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from edge_asr.vad import SAMPLE_RATE, SileroVad, SpeechMap, VadOptions
from edge_asr.whisper.alignment import POSITIONS_PER_SECOND, end_of_last_word, token_starts
from edge_asr.whisper.decoding import compression_ratio
from edge_asr.whisper.model import SECONDS_PER_TIMESTAMP, WhisperModel, WindowResult

log = logging.getLogger(__name__)

WINDOW_SAMPLES = 30 * SAMPLE_RATE
TEMPERATURE_STEP = 0.2
COMPRESSION_RATIO_THRESHOLD = 2.4
LOGPROB_THRESHOLD = -1.0
NO_SPEECH_THRESHOLD = 0.6
PROMPT_RESET_TEMPERATURE = 0.5  # a window decoded this hot is not context for the next
CONTEXT_SEGMENTS = 30  # previous segments kept as context (more than the prompt's 223 tokens hold)
TAIL_SECONDS = 0.5  # what is left of a window after its last segment, at most, to move on anyway
ALIGN_MARGIN = 1.0  # audio aligned before the last segment's start timestamp, seconds


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
class Language:
    code: str  # "en", "de", ...
    probability: float | None = None  # how sure the detection was; None when the language was given


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float  # seconds of audio
    segments: list[Segment]
    language: Language

    speech_start: float | None  # where the first speech the VAD heard starts, seconds (None: no speech)
    speech_end: float | None  # where the last speech the VAD heard ends, seconds (None: no speech)
    beam_size: int  # the beam the windows were decoded with (``SearchOptions.within``)

    @classmethod
    def of(cls, segments: list[Segment], audio: np.ndarray, decoding: Decoding) -> Transcript:
        heard = decoding.speech.speech
        start, end = (heard[0].start / SAMPLE_RATE, heard[-1].end / SAMPLE_RATE) if heard else (None, None)
        text, duration = " ".join(s.text for s in segments), len(audio) / SAMPLE_RATE
        return cls(text, duration, segments, decoding.language, start, end, decoding.search.beam_size)

    def as_dict(self) -> dict:
        """The form the formats (``edge_asr.formats``) and the worker protocol use."""
        return {
            "text": self.text,
            "duration": self.duration,
            "segments": [s.as_dict() for s in self.segments],
            "language": self.language.code,
            "language_probability": self.language.probability,
            "speech_start": self.speech_start,
            "speech_end": self.speech_end,
            "beam_size": self.beam_size,
        }


@dataclass(frozen=True)
class SearchOptions:
    beam_size: int = 5  # at temperature 0; 1 = greedy
    best_of: int = 5  # samples at a fallback temperature
    patience: float = 1.0
    length_penalty: float | None = None

    def within(self, max_batch: int | None) -> SearchOptions:
        """These options with no more sequences than a decoding step of the model's runtime takes
        (``WhisperGraphs.max_batch``: TensorRT engines built with a smaller ``--max-batch``): the
        request is served with the beam the engines hold, with a warning, rather than refused;
        fewer fallback samples (``best_of``) go unsaid."""
        if max_batch is None or max(self.beam_size, self.best_of) <= max_batch:
            return self
        if self.beam_size > max_batch:
            log.warning(
                "the engines take %d sequences a step: beam %d asked, %d used", max_batch, self.beam_size, max_batch
            )
        return replace(self, beam_size=min(self.beam_size, max_batch), best_of=min(self.best_of, max_batch))


class Decoding(NamedTuple):
    """What ``transcribe_windows`` found before decoding, and the windows' segments to come."""

    language: Language
    speech: SpeechMap
    search: SearchOptions
    windows: Iterator[list[Segment]]


def _decode_with_fallback(
    model: WhisperModel,
    encoded: Any,
    prompt: list[int],
    temperature: float,
    search: SearchOptions,
    prefix: list[int] | None = None,
) -> tuple[WindowResult, float] | None:
    """The first acceptable decode of an encoded window at rising temperatures, or None if it is
    silence (``prefix``: forced tokens, ``WhisperModel.decode``)."""
    rng = np.random.default_rng(0)
    temperatures = np.arange(temperature, 1.0 + 1e-6, TEMPERATURE_STEP) if temperature < 1 else [temperature]
    for t in temperatures:
        result = model.decode(
            encoded,
            prompt,
            float(round(t, 2)),
            timestamps=True,
            beam_size=search.beam_size,
            best_of=search.best_of,
            patience=search.patience,
            length_penalty=search.length_penalty,
            rng=rng,
            prefix=prefix,
        )
        ratio = compression_ratio(model.tokenizer.decode(result.tokens))
        confident = result.avg_logprob >= LOGPROB_THRESHOLD
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and not confident:
            return None
        if ratio <= COMPRESSION_RATIO_THRESHOLD and confident:
            break
    return result, ratio


Piece = tuple[float, float, list[int]]  # start, end (seconds into a window), text tokens


def split_window(tokens: list[int], timestamp_begin: int, length: float) -> tuple[list[Piece], float]:
    """The segments of a window's tokens, as (start, end, text tokens) in seconds into the window,
    and where the next window starts: the end of the last complete segment; the start of a
    segment cut off at the window's end (it is decoded again, whole); the window's end when the
    model said no timestamp, or when only ``TAIL_SECONDS`` would be left."""

    def seconds(token: int) -> float:
        return min((token - timestamp_begin) * SECONDS_PER_TIMESTAMP, length)

    found: list[Piece] = []
    start: float | None = None
    resume = 0.0
    text: list[int] = []
    for token in tokens:
        if token < timestamp_begin:
            text.append(token)
        elif text:  # a closing timestamp: the segment is complete
            found.append((start if start is not None else resume, seconds(token), text))
            start, resume, text = None, seconds(token), []
        else:  # an opening timestamp
            start = seconds(token)
    if text:  # cut off before a closing timestamp (or none came): decoded again, whole, next
        unfinished = start if start is not None else resume
        if 0 < unfinished < length - TAIL_SECONDS:
            return found, unfinished
        found.append((unfinished, length, text))  # it starts the window: keep it as it is
        return found, length
    if resume <= 0 or length - resume < TAIL_SECONDS:
        resume = length
    return found, resume


def last_word_end(
    model: WhisperModel, encoded: Any, found: list[Piece], samples: int, language: str, task: str
) -> float | None:
    """Where the last word of a window's complete segments (``found``) ends, in seconds into the
    window of ``samples``; None when the graphs cannot align. The window's text is read whole (the
    decoder's attention as in the reference); the last segment's tokens are aligned on the audio
    from ``ALIGN_MARGIN`` before its start timestamp (a fraction of the whole window's cost)."""
    text = [token for _, _, tokens in found for token in tokens]
    qk = model.cross_attention(encoded, text, language, task)
    if qk is None:
        return None
    start, _, last = found[-1]
    first = max(round((start - ALIGN_MARGIN) * POSITIONS_PER_SECOND), 0)
    positions = samples * POSITIONS_PER_SECOND // SAMPLE_RATE
    starts = token_starts(qk[:, len(text) - len(last) :], positions, first)
    return end_of_last_word(starts, [model.tokenizer.decode([token]) for token in last])


def pause_after_last_word(
    model: WhisperModel,
    speech: SpeechMap,
    encoded: Any,
    found: list[Piece],
    seek: int,
    resume: float,
    samples: int,
    language: str,
    task: str,
) -> int | None:
    """The pause (a sample of the collected speech) between the last word of the complete segments
    ``found`` in the window of ``samples`` at ``seek`` and ``resume`` (seconds into it), where
    Whisper's end timestamp ran past it; None if there is none. The word is aligned only when a
    pause follows the last segment's start: the alignment can move the next window back to
    nothing else."""
    stop = seek + round(resume * SAMPLE_RATE)
    if speech.pause_between(seek + round(found[-1][0] * SAMPLE_RATE), stop) is None:
        return None
    end = last_word_end(model, encoded, found, samples, language, task)
    if end is None or end <= found[-1][0]:
        return None
    return speech.pause_between(seek + round(end * SAMPLE_RATE), stop)


def transcribe_windows(
    model: WhisperModel,
    vad: SileroVad,
    audio: np.ndarray,
    language: str | None = None,
    task: str = "transcribe",
    prompt: str | None = None,
    temperature: float = 0.0,
    beam_size: int = 5,
    best_of: int = 5,
    patience: float = 1.0,
    length_penalty: float | None = None,
    condition_on_previous_text: bool = False,
    prefix: str | None = None,
    live: bool = False,
    vad_threshold: float = 0.5,
) -> Decoding:
    """The language of 16 kHz mono float32 ``audio`` (detected on the first window of speech when
    a multilingual model is given none; English when there is no speech), the speech the VAD
    heard, the search, and the segments, one list per 30-s window, as each is decoded. The VAD
    and the detection run now; the windows as the segments are read.

    ``prefix``: text the transcript is known to begin with (words live decoding has committed):
    forced at the start of the first window, not decoded again. ``live``: a decode of audio still
    arriving (``WhisperModel.encode``'s ``reuse``). ``vad_threshold``: the VAD's speech threshold."""
    model.tokenizer.prompt(language, None, task=task)  # an unsupported language or task fails before any work
    speech = SpeechMap(vad.speech_spans(audio, VadOptions(threshold=vad_threshold)))
    encoded = None
    if language is None and model.tokenizer.multilingual and speech.samples:
        encoded = model.encode(speech.window(audio, 0, WINDOW_SAMPLES), live)
        found = Language(*model.detect_language(encoded))
    else:
        found = Language(language or "en")
    search = SearchOptions(beam_size, best_of, patience, length_penalty).within(model.graphs.max_batch)
    decoding = (prompt, temperature, search, condition_on_previous_text, prefix, live)
    return Decoding(found, speech, search, _windows(model, speech, audio, found.code, task, encoded, *decoding))


def _windows(
    model: WhisperModel,
    speech: SpeechMap,
    audio: np.ndarray,
    language: str,
    task: str,
    encoded: Any,
    prompt: str | None,
    temperature: float,
    search: SearchOptions,
    condition_on_previous_text: bool,
    prefix: str | None,
    live: bool,
) -> Iterator[list[Segment]]:
    """The windows with seek (``encoded``: the first window's encoding, when detection made it)."""
    max_previous = model.max_new_tokens - 1
    seek, next_id, context = 0, 0, []
    while seek < speech.samples:
        window = speech.window(audio, seek, WINDOW_SAMPLES)
        length = len(window) / SAMPLE_RATE
        previous = " ".join([prompt or "", *context]).strip() or None
        start_tokens = model.tokenizer.prompt(language, previous, True, max_previous, task)
        encoding = model.encode(window, live) if encoded is None else encoded
        forced = [model.timestamp_begin, *model.tokenizer.text_tokens(prefix)] if prefix and seek == 0 else None
        encoded = None
        decoded = _decode_with_fallback(model, encoding, start_tokens, temperature, search, forced)
        if decoded is None:
            seek += len(window)
            yield []
            continue
        result, ratio = decoded
        found, resume = split_window(result.tokens, model.timestamp_begin, length)
        if found and resume < length:  # goes on in this window: at a pause the last word precedes, if any
            pause = pause_after_last_word(model, speech, encoding, found, seek, resume, len(window), language, task)
            if pause is not None:  # the segment ends there too: the next one starts after it
                resume = (pause - seek) / SAMPLE_RATE
                found[-1] = (found[-1][0], min(found[-1][1], resume), found[-1][2])
        offset = seek / SAMPLE_RATE
        segments = []
        for start, end, text_tokens in found:
            text = model.tokenizer.decode(text_tokens).strip()
            if not text:
                continue
            first, last = speech.place(offset + start, offset + end)
            segments.append(
                Segment(
                    id=next_id,
                    start=round(first, 3),
                    end=round(last, 3),
                    text=text,
                    tokens=text_tokens,
                    temperature=result.temperature,
                    avg_logprob=round(result.avg_logprob, 4),
                    compression_ratio=round(ratio, 4),
                    no_speech_prob=round(result.no_speech_prob, 4),
                )
            )
            next_id += 1
        if condition_on_previous_text:  # the prompt keeps the last tokens of it: a few segments are enough
            hot = result.temperature > PROMPT_RESET_TEMPERATURE
            context = [] if hot else [*context, *(s.text for s in segments)][-CONTEXT_SEGMENTS:]
        seek += max(round(resume * SAMPLE_RATE), 1)
        yield segments


def transcribe(model: WhisperModel, vad: SileroVad, audio: np.ndarray, **options) -> Transcript:
    """The whole transcript (``options`` as for ``transcribe_windows``)."""
    decoding = transcribe_windows(model, vad, audio, **options)
    return Transcript.of([s for window in decoding.windows for s in window], audio, decoding)
