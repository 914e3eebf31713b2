"""Audio of any length to text: windows of at most 30 s, cut at the quietest moment."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_asr.whisper.features import N_SAMPLES, SAMPLE_RATE
from edge_asr.whisper.model import WhisperModel

MIN_WINDOW = 20 * SAMPLE_RATE  # a cut falls between 20 and 30 s into the remaining audio
FRAME = SAMPLE_RATE // 10  # cuts are searched on a 100-ms energy grid


@dataclass(frozen=True)
class Transcript:
    text: str
    duration: float  # seconds of audio
    windows: int  # encoder windows decoded


def split_windows(audio: np.ndarray) -> list[np.ndarray]:
    """Cut audio longer than one window at the quietest 100-ms frame between 20 and 30 s, so that
    words are rarely split."""
    windows, start = [], 0
    while len(audio) - start > N_SAMPLES:
        search = audio[start + MIN_WINDOW : start + N_SAMPLES]
        usable = len(search) // FRAME * FRAME
        energy = (search[:usable].reshape(-1, FRAME) ** 2).mean(axis=1)
        cut = start + MIN_WINDOW + int(energy.argmin()) * FRAME + FRAME // 2
        windows.append(audio[start:cut])
        start = cut
    windows.append(audio[start:])
    return windows


def transcribe(
    model: WhisperModel, audio: np.ndarray, language: str | None = None, prompt: str | None = None
) -> Transcript:
    """Transcribe 16 kHz mono float32 audio; ``prompt`` (e.g. hotwords) biases every window."""
    windows = split_windows(audio)
    texts = [model.tokenizer.decode(model.decode_window(w, language, prompt)).strip() for w in windows]
    return Transcript(text=" ".join(t for t in texts if t), duration=len(audio) / SAMPLE_RATE, windows=len(windows))
