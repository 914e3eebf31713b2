"""Whisper on ONNX Runtime against published texts, across sample rates, channels and codecs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile
import soxr

from edge_asr.audio import SAMPLE_RATE, decode_audio
from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from edge_asr.whisper.transcribe import split_windows, transcribe


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_public_domain_readings_under_5_percent_wer(whisper, speech, name):
    result = transcribe(whisper, speech[name])
    assert word_error_rate(REFERENCES[name], result.text) < 0.05, result.text


def test_audio_longer_than_30s_is_decoded_in_windows(whisper, speech):
    audio = speech["two_cities"]  # 44 s
    result = transcribe(whisper, audio)
    assert result.windows == 2
    assert result.duration == pytest.approx(len(audio) / SAMPLE_RATE)
    # the end of the reading comes from the second window
    assert result.text.rstrip(".").endswith("superlative degree of comparison only")


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
    ],
)
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_other_rates_channels_and_codecs_transcribe_as_well(whisper, speech, name, rate, channels, fmt, subtype):
    audio = decode_audio(reencode(speech[name], rate, channels, fmt, subtype))
    assert word_error_rate(REFERENCES[name], transcribe(whisper, audio).text) < 0.05


def test_decoded_tokens_are_text_only(whisper, speech):
    tokens = whisper.decode_window(speech["beckett"])
    assert tokens and max(tokens) < whisper.tokenizer.eot


def test_english_only_model_refuses_other_languages(whisper, speech):
    with pytest.raises(ValueError, match="English-only"):
        whisper.decode_window(speech["beckett"], language="de")


def test_windows_are_cut_in_the_quietest_place():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(50 * SAMPLE_RATE).astype(np.float32)
    audio[27 * SAMPLE_RATE : 27 * SAMPLE_RATE + SAMPLE_RATE // 5] = 0  # 200 ms pause at 27 s
    first, second = split_windows(audio)
    assert 27 * SAMPLE_RATE <= len(first) <= 27.2 * SAMPLE_RATE
    assert len(first) + len(second) == len(audio)


@pytest.mark.parametrize("seconds", [0.01, 1.0, 29.9, 30.0])
def test_short_and_boundary_lengths_make_one_window(seconds):
    assert len(split_windows(np.zeros(int(seconds * SAMPLE_RATE), np.float32))) == 1
