"""Runners: a loaded model inside a worker process, one per model family.

The contract every runtime keeps (ONNX Runtime now; native TensorRT later): construction loads,
the methods in ``methods`` run whole requests (a method may be a generator: what it yields
streams to the client as it comes, what it returns is the result), ``release()`` destroys what
construction created, in order (I/O bindings and buffers -> sessions/engines -> runtime).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec, get_model


class Runner:
    methods: ClassVar[frozenset[str]] = frozenset()

    def providers(self) -> list[str]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class WhisperRunner(Runner):
    methods = frozenset({"transcribe"})

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.vad import SileroVad
        from edge_asr.whisper.model import WhisperModel

        if spec.vad is None:
            raise ValueError(f"model {spec.id!r} names no VAD model (manifest key 'vad')")
        vad = get_model(config, spec.vad)
        self.vad = SileroVad(vad.directory / vad.files[0])
        self.model = WhisperModel(spec.directory, spec.providers, config.ort_threads, config.gpu_mem_limit)

    def providers(self) -> list[str]:
        return self.model.providers

    def transcribe(self, audio: np.ndarray, **options: Any) -> Iterator[dict[str, Any]]:
        """Yields each chunk's segments as it is decoded; returns the whole transcript."""
        from edge_asr.whisper.transcribe import transcribe_chunks

        segments = []
        for chunk in transcribe_chunks(self.model, self.vad, audio, **options):
            segments += chunk
            yield {"segments": [s.as_dict() for s in chunk]}
        return {
            "text": " ".join(s.text for s in segments),
            "duration": len(audio) / 16000,
            "segments": [s.as_dict() for s in segments],
        }

    def release(self) -> None:
        self.model.close()
        del self.model
        del self.vad


RUNNERS: dict[str, type[Runner]] = {"whisper": WhisperRunner}


def create_runner(spec: ModelSpec, config: Config) -> Runner:
    try:
        runner = RUNNERS[spec.family]
    except KeyError:
        raise ValueError(f"no runner for model family {spec.family!r} (known: {sorted(RUNNERS)})") from None
    return runner(spec, config)
