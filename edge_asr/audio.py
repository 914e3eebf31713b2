"""Audio decoding: any file libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...) at any sample rate
and channel count, to the 16 kHz mono float32 the speech models take."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
MAX_SAMPLE_RATE = 768_000  # the highest rate libsndfile writes; anything above is a corrupt header
MAX_CHANNELS = 32  # more is not a speech recording (and 64 channels of an hour would be 15 GB)
MIN_SECONDS = 0.1  # Whisper needs a syllable; shorter input is a mistake
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming recorders write when they cannot know the size


class AudioError(ValueError):
    """The input is not audio edge-asr can use; the message says why, for the caller."""


def decode_audio(source: str | Path | bytes | BinaryIO) -> np.ndarray:
    """Decode ``source`` (a path, the file's bytes or a binary file object) to 16 kHz mono float32."""
    if isinstance(source, bytes):
        if not source:
            raise AudioError("the audio file is empty")
        check_wav_sizes(source)
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise AudioError("the audio file is empty")
    try:
        with soundfile.SoundFile(source) as f:
            rate = f.samplerate
            if not 0 < rate <= MAX_SAMPLE_RATE:
                raise AudioError(f"the audio header gives an impossible sample rate ({rate} Hz)")
            if f.channels > MAX_CHANNELS:
                raise AudioError(f"{f.channels} channels is more than the {MAX_CHANNELS} a recording may have")
            samples = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, EOFError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(f"not a readable audio file (WAV, FLAC, OGG, MP3): {reason}") from None
    if samples.size == 0:
        raise AudioError("the audio file contains no samples")
    if len(samples) < MIN_SECONDS * rate:
        raise AudioError(f"the audio is {1000 * len(samples) / rate:.0f} ms long; at least {MIN_SECONDS * 1000:.0f} ms")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono


def check_wav_sizes(data: bytes) -> None:
    """A WAV whose ``data`` chunk claims more bytes than the file holds was cut short (a broken
    upload); one whose chunk ends before audio-like bytes that are no chunk claims too little.
    libsndfile would quietly decode what fits either way; the caller should know instead."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = offset + 8
        if chunk_id != b"data":
            offset = body + size + (size & 1)
            continue
        if size in UNKNOWN_SIZES:
            return
        present = len(data) - body
        if size > present:
            raise AudioError(
                f"the WAV file is truncated: its header promises {size} bytes of audio, {present} are there"
            )
        rest = data[body + size + (size & 1) : body + size + (size & 1) + 4]
        if len(rest) == 4 and not all(32 <= b < 127 for b in rest):
            raise AudioError(f"the WAV header says {size} bytes of audio, but more audio follows them")
        return
