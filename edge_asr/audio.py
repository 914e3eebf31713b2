"""Audio decoding: any file libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, ...) at any sample rate
and channel count, to the 16 kHz mono float32 the speech models take."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

from edge_asr.errors import RequestError
from edge_asr.whisper.features import SAMPLE_RATE

MAX_SAMPLE_RATE = 768_000  # the highest rate libsndfile writes; anything above is a corrupt header
MAX_CHANNELS = 32  # more is not a speech recording (and 64 channels of an hour would be 15 GB)
MIN_SECONDS = 0.1  # Whisper needs a syllable; shorter input is a mistake
UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # what streaming recorders write when they cannot know the size


class AudioError(RequestError):
    """The input is not audio edge-asr can use; the message says why, for the caller."""


BLOCK_FRAMES = 1 << 18  # decoded at a time: a long multichannel file never sits in memory whole


def decode_audio(source: str | Path | bytes | BinaryIO) -> np.ndarray:
    """Decode ``source`` (a path, the file's bytes or a seekable binary file) to 16 kHz mono
    float32. Read block by block and mixed down as it goes: the peak is the mono signal at the
    file's rate, plus the resampled one (``decoding_peak_bytes``)."""
    with _opened(source) as f:
        mono = np.empty(f.frames, np.float32)
        filled = 0
        try:
            for block in f.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True):
                if filled + len(block) > mono.size:  # a header that undercounts (some MP3s)
                    mono = np.concatenate([mono[:filled], np.empty(max(len(block), mono.size), np.float32)])
                mono[filled : filled + len(block)] = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                filled += len(block)
        except (soundfile.LibsndfileError, RuntimeError, EOFError) as e:
            raise _unreadable(e) from None
        rate = f.samplerate
    return to_model_rate(mono[:filled], rate)


def check_pcm(width: int, channels: int) -> None:
    """Raw PCM edge-asr reads: 8-bit unsigned, 16- or 32-bit signed samples (as Wyoming's audio
    chunks carry them), 1 to ``MAX_CHANNELS`` channels."""
    if width not in (1, 2, 4) or not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"audio of {width}-byte samples in {channels} channels is not PCM edge-asr reads")


def check_rate(rate: int) -> None:
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"a sample rate of {rate} Hz is not audio")


def pcm_to_mono(pcm: bytes, width: int, channels: int) -> np.ndarray:
    """Raw little-endian PCM (``check_pcm``) mixed to mono float32 at its own rate."""
    check_pcm(width, channels)
    frame = width * channels
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % frame], {1: "u1", 2: "<i2", 4: "<i4"}[width])
    scaled = (samples.astype(np.float32) - (128 if width == 1 else 0)) / float(1 << (8 * width - 1))
    return scaled.reshape(-1, channels).mean(axis=1) if channels > 1 else scaled


def to_model_rate(mono: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at ``rate``, checked and resampled to the models' 16 kHz (soxr, high quality)."""
    check_rate(rate)
    if mono.size == 0:
        raise AudioError("the audio contains no samples")
    if len(mono) < MIN_SECONDS * rate:
        raise AudioError(f"the audio is {1000 * len(mono) / rate:.0f} ms long; at least {MIN_SECONDS * 1000:.0f} ms")
    if not np.isfinite(mono).all():
        raise AudioError("the audio contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32, copy=False)
    return mono


def decoding_peak_bytes(source: BinaryIO) -> int:
    """The memory ``decode_audio`` will hold for this seekable file at its peak (the mono signal at
    the file's rate, plus the 16-kHz one when it must be resampled), read from the header alone;
    the file is left at its start. A file that is no audio raises ``AudioError`` here already."""
    with _opened(source) as f:
        frames, rate = f.frames, f.samplerate
    source.seek(0)
    resampled = 0 if rate == SAMPLE_RATE else frames * SAMPLE_RATE // rate
    return 4 * (frames + resampled)


@contextmanager
def _opened(source: str | Path | bytes | BinaryIO) -> Iterator[soundfile.SoundFile]:
    """The source as an open, checked ``SoundFile``; anything unusable is an ``AudioError``."""
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    if isinstance(source, (str, Path)):
        if Path(source).is_file() and Path(source).stat().st_size == 0:
            raise AudioError("the audio file is empty")
    else:
        if source.read(1) == b"":
            raise AudioError("the audio file is empty")
        source.seek(0)
        check_wav_sizes(source)
    try:
        f = soundfile.SoundFile(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, EOFError) as e:
        raise _unreadable(e) from None
    with f:
        if not 0 < f.samplerate <= MAX_SAMPLE_RATE:
            raise AudioError(f"the audio header gives an impossible sample rate ({f.samplerate} Hz)")
        if f.channels > MAX_CHANNELS:
            raise AudioError(f"{f.channels} channels is more than the {MAX_CHANNELS} a recording may have")
        yield f


def _unreadable(e: Exception) -> AudioError:
    reason = getattr(e, "error_string", None) or str(e)
    return AudioError(f"not a readable audio file (WAV, FLAC, OGG, MP3): {reason}")


def check_wav_sizes(f: BinaryIO) -> None:
    """A WAV whose ``data`` chunk claims more bytes than the file holds was cut short (a broken
    upload); one whose chunk ends before audio-like bytes that are no chunk claims too little.
    libsndfile would quietly decode what fits either way; the caller should know instead. Reads
    the chunk headers of the seekable file ``f`` only, and leaves it at its start."""
    try:
        length = f.seek(0, io.SEEK_END)
        f.seek(0)
        header = f.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return
        offset = 12
        while offset + 8 <= length:
            f.seek(offset)
            chunk = f.read(8)
            chunk_id, size = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
            body = offset + 8
            if chunk_id != b"data":
                offset = body + size + (size & 1)
                continue
            if size in UNKNOWN_SIZES:
                return
            present = length - body
            if size > present:
                raise AudioError(
                    f"the WAV file is truncated: its header promises {size} bytes of audio, {present} are there"
                )
            f.seek(body + size + (size & 1))
            rest = f.read(4)
            if len(rest) == 4 and not all(32 <= b < 127 for b in rest):
                raise AudioError(f"the WAV header says {size} bytes of audio, but more audio follows them")
            return
    finally:
        f.seek(0)
