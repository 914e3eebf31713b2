"""Audio decoding: any file libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...) at any sample rate
and channel count, to the 16 kHz mono float32 the speech models take."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000
MAX_SAMPLE_RATE = 768_000  # the highest rate libsndfile writes; anything above is a corrupt header


class AudioError(ValueError):
    """The input is not audio edge-asr can use; the message says why, for the caller."""


def decode_audio(source: str | Path | bytes | BinaryIO) -> np.ndarray:
    """Decode ``source`` (a path, the file's bytes or a binary file object) to 16 kHz mono float32."""
    if isinstance(source, bytes):
        if not source:
            raise AudioError("the audio file is empty")
        source = io.BytesIO(source)
    elif isinstance(source, (str, Path)) and Path(source).is_file() and Path(source).stat().st_size == 0:
        raise AudioError("the audio file is empty")
    try:
        with soundfile.SoundFile(source) as f:
            rate = f.samplerate
            if not 0 < rate <= MAX_SAMPLE_RATE:
                raise AudioError(f"the audio header gives an impossible sample rate ({rate} Hz)")
            samples = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, EOFError) as e:
        reason = getattr(e, "error_string", None) or str(e)
        raise AudioError(f"not a readable audio file (WAV, FLAC, OGG, MP3): {reason}") from None
    if samples.size == 0:
        raise AudioError("the audio file contains no samples")
    mono = samples.mean(axis=1, dtype=np.float32) if samples.shape[1] > 1 else samples[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono
