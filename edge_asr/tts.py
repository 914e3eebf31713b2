"""Speech synthesis with Piper voices (``piper-tts``: VITS models in ONNX, espeak-ng phonemes from
its own bundled data, no download). The voice's ONNX session is opened like every other model's
(``runtime.onnx.open_session``: the manifest's providers, the configured threads), so the
lifecycle's contract holds for it: created at load, destroyed at release.

Encoding (``encode`` and ``FORMATS``) is libsndfile's, through soundfile: what it writes here."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile
import soxr

from edge_asr.manifest import ModelSpec
from edge_asr.runtime.onnx import open_session

MAX_INPUT_CHARS = 4096  # as OpenAI's /v1/audio/speech
SPEEDS = (0.25, 4.0)
# response_format -> (libsndfile format, subtype, sample rates the codec takes or None for any)
FORMATS: dict[str, tuple[str, str, tuple[int, ...] | None]] = {
    "wav": ("WAV", "PCM_16", None),
    "flac": ("FLAC", "PCM_16", None),
    "mp3": ("MP3", "MPEG_LAYER_III", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("OGG", "OPUS", (8000, 12000, 16000, 24000, 48000)),
    "pcm": ("RAW", "PCM_16", None),  # raw little-endian 16-bit mono, as OpenAI's pcm
}
MIME_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg", "pcm": "audio/pcm"}
STREAMED = ("wav", "pcm")  # formats sent sentence by sentence as they are spoken


@dataclass(frozen=True)
class Voice:
    """What a voice is, from its ``.onnx.json`` (readable without loading the model)."""

    id: str
    model: str
    language: str
    sample_rate: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "language": self.language, "sample_rate": self.sample_rate}


def voice_of(spec: ModelSpec) -> Voice:
    config = json.loads((spec.directory / _config_file(spec)).read_text())
    language = config.get("language", {}).get("code", "")
    return Voice(config.get("dataset") or spec.id, spec.id, language, int(config["audio"]["sample_rate"]))


def _config_file(spec: ModelSpec) -> str:
    return next(f for f in spec.files if f.endswith(".onnx.json"))


class PiperSpeaker:
    """A Piper voice, loaded in a worker."""

    def __init__(self, spec: ModelSpec, threads: int = 0, gpu_mem_limit: int = 0):
        from piper.config import PiperConfig
        from piper.voice import PiperVoice

        config = json.loads((spec.directory / _config_file(spec)).read_text())
        model = spec.directory / next(f for f in spec.files if f.endswith(".onnx"))
        session = open_session(model, spec.providers, threads, gpu_mem_limit)
        self.voice = PiperVoice(config=PiperConfig.from_dict(config), session=session)
        self.sample_rate = self.voice.config.sample_rate
        self.providers = session.get_providers()

    def speak(self, text: str, speed: float = 1.0) -> Iterator[np.ndarray]:
        """16-bit samples, one array per sentence as each is synthesised."""
        from piper.config import SynthesisConfig

        options = SynthesisConfig(length_scale=(self.voice.config.length_scale or 1.0) / speed)
        for chunk in self.voice.synthesize(text, options):
            yield chunk.audio_int16_array

    def release(self) -> None:
        del self.voice


def encode(samples: np.ndarray, sample_rate: int, response_format: str) -> bytes:
    """Whole audio (int16 mono) in ``response_format``; resampled where the codec needs it."""
    fmt, subtype, rates = FORMATS[response_format]
    if rates is not None and sample_rate not in rates:
        target = min((r for r in rates if r >= sample_rate), default=max(rates))
        floats = soxr.resample(samples.astype(np.float32) / 32768, sample_rate, target, quality="HQ")
        samples, sample_rate = (np.clip(floats, -1, 1) * 32767).astype(np.int16), target
    if response_format == "pcm":
        return samples.astype("<i2").tobytes()
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, sample_rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def streaming_wav_header(sample_rate: int) -> bytes:
    """A WAV header for audio of unknown length (sizes 0xFFFFFFFF, as streaming recorders write):
    the samples follow as they are made."""
    unknown = 0xFFFFFFFF
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + sample_rate.to_bytes(4, "little")
    fmt += (sample_rate * 2).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return (
        b"RIFF" + unknown.to_bytes(4, "little") + b"WAVE"
        + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
        + b"data" + unknown.to_bytes(4, "little")
    )  # fmt: skip


def voices(specs: list[ModelSpec]) -> list[Voice]:
    """Every prepared voice among ``specs``."""
    return [voice_of(s) for s in specs if s.task == "tts" and s.present]
