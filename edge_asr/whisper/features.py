"""Whisper's log-mel spectrogram in numpy, numerically the reference implementation's
(periodic Hann window, n_fft 400, hop 160, Slaney mel filters, log10 clamped 8 below the peak)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# The rate every speech model here takes (audio.py decodes to it). Defined here, not in audio.py:
# this module also runs in the conversion environment, which has numpy but not soundfile.
SAMPLE_RATE = 16000

N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # one encoder window
N_FRAMES = N_SAMPLES // HOP_LENGTH


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    """Triangular Slaney-normalised filters, shape (n_mels, n_fft/2 + 1)."""
    fft_freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(0)), _hz_to_mel(np.float64(SAMPLE_RATE / 2)), n_mels + 2))
    ramps = edges[:, None] - fft_freqs[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _hann() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Features of one encoder window: ``audio`` (16 kHz mono, at most 30 s) zero-padded to 30 s,
    returned as float32 (n_mels, 3000)."""
    if len(audio) > N_SAMPLES:
        raise ValueError(f"a window holds at most {CHUNK_SECONDS} s of audio")
    padded = np.zeros(N_SAMPLES + N_FFT, np.float32)  # reflect-padding of n_fft/2 on both sides
    padded[N_FFT // 2 : N_FFT // 2 + len(audio)] = audio
    padded[: N_FFT // 2] = padded[N_FFT : N_FFT // 2 : -1]
    padded[-(N_FFT // 2) :] = padded[-(N_FFT // 2) - 2 : -N_FFT - 2 : -1]
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:N_FRAMES]
    power = np.abs(np.fft.rfft(frames * _hann(), axis=1)) ** 2
    mel = mel_filters(n_mels) @ power.T.astype(np.float32)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
