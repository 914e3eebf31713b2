"""Runners: a loaded model inside a worker process, one per model family.

The contract every runtime keeps (ONNX Runtime now; native TensorRT later): construction loads,
the methods in ``methods`` run whole requests, ``release()`` destroys what construction created,
in order (I/O bindings and buffers -> sessions/engines -> runtime), and reports what it freed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec


class Runner:
    methods: ClassVar[frozenset[str]] = frozenset()

    def providers(self) -> list[str]:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class WhisperRunner(Runner):
    methods = frozenset({"transcribe"})

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.whisper.model import WhisperModel

        self.model = WhisperModel(spec.directory, spec.providers, config.ort_threads, config.gpu_mem_limit)

    def providers(self) -> list[str]:
        return self.model.providers

    def transcribe(self, audio: np.ndarray, language: str | None = None, prompt: str | None = None) -> dict[str, Any]:
        from edge_asr.whisper.transcribe import transcribe

        result = transcribe(self.model, audio, language, prompt)
        return {"text": result.text, "duration": result.duration, "windows": result.windows}

    def release(self) -> None:
        self.model.close()
        del self.model


RUNNERS: dict[str, type[Runner]] = {"whisper": WhisperRunner}


def create_runner(spec: ModelSpec, config: Config) -> Runner:
    try:
        runner = RUNNERS[spec.family]
    except KeyError:
        raise ValueError(f"no runner for model family {spec.family!r} (known: {sorted(RUNNERS)})") from None
    return runner(spec, config)
