"""Audio decoding: formats, rates, channels, and bad input with a clear AudioError."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile

from edge_asr.audio import SAMPLE_RATE, AudioError, decode_audio


def encode(samples: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio))
    return float(np.fft.rfftfreq(len(audio), 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_any_rate_is_resampled_to_16k_keeping_duration_and_pitch(rate):
    audio = decode_audio(encode(tone(440, rate, 2.0), rate))
    assert audio.dtype == np.float32
    assert abs(len(audio) - 2 * SAMPLE_RATE) <= 2
    assert abs(peak_hz(audio) - 440) < 1.0


@pytest.mark.parametrize(
    ("fmt", "subtype"),
    [
        ("WAV", "PCM_U8"),
        ("WAV", "PCM_16"),
        ("WAV", "PCM_24"),
        ("WAV", "PCM_32"),
        ("WAV", "FLOAT"),
        ("FLAC", None),
        ("OGG", "VORBIS"),
        ("MP3", "MPEG_LAYER_III"),
    ],
)
def test_formats_decode(fmt, subtype):
    audio = decode_audio(encode(tone(1000, 44100), 44100, fmt, subtype))
    assert abs(len(audio) - SAMPLE_RATE) < 0.1 * SAMPLE_RATE  # lossy codecs pad a little
    assert abs(peak_hz(audio) - 1000) < 2.0


def test_channels_are_mixed_to_mono():
    left, right = tone(300, 16000), tone(700, 16000)
    audio = decode_audio(encode(np.stack([left, right], axis=1), 16000))
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-4)


def test_32_channels_decode_64_do_not():
    samples = np.tile(tone(500, 16000)[:, None], (1, 32))
    assert abs(peak_hz(decode_audio(encode(samples, 16000))) - 500) < 1.0
    with pytest.raises(AudioError, match="64 channels is more than the 32"):
        decode_audio(encode(np.tile(samples, (1, 2)), 16000))


def test_reads_paths_and_file_objects(tmp_path):
    data = encode(tone(440, 16000), 16000, "FLAC")
    path = tmp_path / "a.flac"
    path.write_bytes(data)
    np.testing.assert_array_equal(decode_audio(path), decode_audio(io.BytesIO(data)))


def wav_header(rate: int, channels: int = 1, data_bytes: int = 0) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def test_wav_sizes_streaming_recorders_leave_unknown_are_accepted():
    data = bytearray(encode(tone(440, 16000, 2.0), 16000, subtype="PCM_16"))
    data[40:44] = struct.pack("<I", 0xFFFFFFFF)  # data size "unknown", as written by a live recorder
    data[4:8] = struct.pack("<I", 0xFFFFFFFF)
    assert len(decode_audio(bytes(data))) == 32000


def lying_wav(data_size: int) -> bytes:
    data = bytearray(encode(tone(440, 16000, 2.0), 16000, subtype="PCM_16"))
    data[40:44] = struct.pack("<I", data_size)
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00" * 1000, "not a readable audio file"),
        (np.random.default_rng(0).bytes(50_000), "not a readable audio file"),
        (b"hello, this is a text file\n" * 100, "not a readable audio file"),
        (wav_header(16000), "no samples"),  # header only
        (wav_header(0, data_bytes=3200) + b"\x00" * 3200, "not a readable audio file"),
        (wav_header(4_000_000, data_bytes=3200) + b"\x00" * 3200, "impossible sample rate"),
        (encode(np.array([0.0, np.nan, 0.1] * 1000, np.float32), 16000, subtype="FLOAT"), "NaN"),
        (encode(np.array([0.0, np.inf, 0.1] * 1000, np.float32), 16000, subtype="FLOAT"), "NaN or infinite"),
        (encode(tone(440, 16000, 0.01), 16000), "10 ms long; at least 100 ms"),
        (encode(tone(440, 16000, 2.0), 16000, subtype="PCM_16")[: 44 + 16000], "truncated"),
        (lying_wav(10_000), "but more audio follows"),
    ],
    ids=[
        "empty",
        "zeros",
        "random",
        "text",
        "header-only",
        "zero-rate",
        "absurd-rate",
        "nan",
        "inf",
        "10ms",
        "truncated",
        "header-too-small",
    ],
)
def test_bad_input_raises_audio_error(data, message):
    with pytest.raises(AudioError, match=message):
        decode_audio(data)


def test_empty_file_on_disk(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        decode_audio(tmp_path / "empty.wav")
