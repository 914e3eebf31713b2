"""Whisper with VAD on ONNX Runtime against published texts: rates, channels, codecs, timestamps,
silence, prompts, and a long recording in bounded pieces."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import soxr

from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from edge_asr.vad import Span, chunk_spans, spans_from_probabilities
from edge_asr.whisper.decoding import compression_ratio
from edge_asr.whisper.transcribe import transcribe


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_public_domain_readings_under_5_percent_wer(whisper, vad, speech, name):
    result = transcribe(whisper, vad, speech[name])
    assert word_error_rate(REFERENCES[name], result.text) < 0.05, result.text


def test_segments_are_ordered_within_the_audio_and_carry_scores(whisper, vad, speech):
    audio = speech["two_cities"]  # 44 s: two chunks
    result = transcribe(whisper, vad, audio)
    assert len(result.segments) >= 6
    assert [s.id for s in result.segments] == list(range(len(result.segments)))
    times = [t for s in result.segments for t in (s.start, s.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= result.duration
    assert all(s.end > s.start and s.text for s in result.segments)
    assert all(-1 < s.avg_logprob <= 0 and 0 <= s.no_speech_prob < 0.6 and s.temperature == 0 for s in result.segments)
    assert result.segments[0].text == "It was the best of times, it was the worst of times."
    assert result.text.rstrip(".").endswith("superlative degree of comparison only")


def test_silence_and_noise_give_no_words(whisper, vad):
    rng = np.random.default_rng(1)
    for audio in (
        np.zeros(20 * SAMPLE_RATE, np.float32),
        (0.01 * rng.standard_normal(10 * SAMPLE_RATE)).astype(np.float32),
    ):
        result = transcribe(whisper, vad, audio)
        assert result.text == "" and result.segments == []


def test_timestamps_follow_the_speech(whisper, vad, speech):
    silence = np.zeros(7 * SAMPLE_RATE, np.float32)
    audio = np.concatenate([silence, speech["beckett"], silence])
    segments = transcribe(whisper, vad, audio).segments
    assert abs(segments[0].start - 7.0) < 1.0 and abs(segments[-1].end - (7.0 + 9.96)) < 1.5


def reencode(audio: np.ndarray, rate: int, channels: int, fmt: str, subtype: str | None = None) -> bytes:
    resampled = soxr.resample(audio, SAMPLE_RATE, rate)
    samples = np.stack([resampled, 0.5 * resampled], axis=1) if channels == 2 else resampled
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "subtype"),
    [
        (8000, 1, "WAV", "PCM_16"),
        (44100, 2, "WAV", "PCM_24"),
        (48000, 2, "FLAC", None),
        (22050, 1, "OGG", "VORBIS"),
        (48000, 1, "WAV", "FLOAT"),
        (44100, 2, "MP3", "MPEG_LAYER_III"),
    ],
)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_other_rates_channels_and_codecs_transcribe_as_well(whisper, vad, speech, name, rate, channels, fmt, subtype):
    audio = decode_audio(reencode(speech[name], rate, channels, fmt, subtype))
    assert word_error_rate(REFERENCES[name], transcribe(whisper, vad, audio).text) < 0.05


def test_a_prompt_steers_the_style(whisper, vad, speech):
    plain = transcribe(whisper, vad, speech["beckett"]).text
    prompted = transcribe(
        whisper, vad, speech["beckett"], prompt="um so yeah we just went there and uh it was fine i guess"
    ).text
    assert plain.startswith("Ever tried, ever failed.")
    assert prompted == prompted.lower() and "." not in prompted and "," not in prompted
    assert word_error_rate(REFERENCES["beckett"], prompted) < 0.05


def test_english_only_model_refuses_other_languages(whisper, vad, speech):
    with pytest.raises(ValueError, match="English-only"):
        transcribe(whisper, vad, speech["beckett"], language="de")


def test_compression_ratio_spots_loops():
    assert compression_ratio("It was the best of times, it was the worst of times.") < 2.4
    assert compression_ratio("Thank you. " * 30) > 2.4


def test_vad_cuts_long_speech_at_its_longest_pause():
    probs = np.ones(60 * SAMPLE_RATE // 512, np.float32)  # a minute of speech
    probs[700:712] = 0.0  # a 384-ms pause at 22.4 s, the longest in the first 29 s
    probs[800:804] = 0.0  # a 128-ms pause at 25.6 s
    spans = spans_from_probabilities(probs, 60 * SAMPLE_RATE)
    assert 22.3 < spans[0].end / SAMPLE_RATE < 22.8
    assert all(s.end - s.start <= 29 * SAMPLE_RATE for s in spans)
    assert sum(s.end - s.start for s in spans) >= 59 * SAMPLE_RATE


def test_chunks_span_up_to_30_seconds_break_at_long_silence_and_keep_segments_on_speech():
    second = SAMPLE_RATE
    spans = [
        Span(0, 10 * second),
        Span(12 * second, 25 * second),
        Span(26 * second, 35 * second),
        Span(37 * second, 41 * second),
        Span(45 * second, 50 * second),
    ]
    first, second_chunk, third = chunk_spans(spans)
    assert first.spans == tuple(spans[:2]) and (first.start, first.end) == (0, 25 * second)  # 30-s limit
    assert second_chunk.spans == tuple(spans[2:4])
    assert third.spans == (spans[4],)  # after a 4-s silence
    assert len(second_chunk.samples(np.zeros(60 * second, np.float32))) == 15 * second
    # times are seconds into the chunk; pauses of 1 s or more are not speech
    assert first.place(1.0, 5.0) == (1.0, 5.0)
    assert first.place(5.0, 11.5) == (5.0, 10.0)  # an end over the 2-s pause goes back to 10 s
    assert first.place(10.5, 14.0) == (12.0, 14.0)  # a start in the pause moves to the speech after it
    short_pause = chunk_spans([Span(0, 10 * second), Span(int(10.5 * second), 20 * second)])[0]
    assert short_pause.place(8.0, 12.0) == (8.0, 12.0)  # a 0.5-s pause may be crossed
