"""A request's hold on a loaded model, and the typed calls of its worker's methods.

The ``ModelManager`` hands one out (``ModelManager.lease``) and takes it back when the request
ends; nothing is unloaded under it. Each method sends one request of the worker protocol
(``workers.protocol``) and returns a *reply*: a generator of the method's partial results whose
return value is its result (``result`` runs one to its end).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np

from edge_asr.workers.handle import WorkerDied, WorkerHandle
from edge_asr.workers.protocol import (
    AudioPart,
    Chat,
    ChatDelta,
    ChatOptions,
    ChatResult,
    DiarizationResult,
    Diarize,
    EmbedVoice,
    P,
    R,
    Request,
    SynthesisResult,
    Synthesize,
    Transcribe,
    TranscriptionOptions,
    TranscriptPart,
    TranscriptResult,
    VoiceResult,
)

Reply = Generator[P, None, R]


class Lease:
    """``note`` records what the model found while serving in its events; ``crashed`` tells the
    manager that the worker died under this request."""

    def __init__(
        self,
        model_id: str,
        worker: WorkerHandle,
        note: Callable[..., None],
        crashed: Callable[[WorkerHandle, str], None],
    ):
        self.model_id, self.note = model_id, note
        self._worker, self._crashed = worker, crashed

    def transcribe(
        self, audio: np.ndarray, options: TranscriptionOptions, noted: bool = True
    ) -> Reply[TranscriptPart, TranscriptResult]:
        """Each window's segments as it is decoded; the whole transcript, its detected language (if
        it was detected) noted in the model's events unless not ``noted`` (a partial decode of
        live audio: its final decode's language is noted)."""
        transcript = yield from self._run(Transcribe(audio, options))
        if noted and transcript["language_probability"] is not None:
            self.note(
                "language detected", language=transcript["language"], probability=transcript["language_probability"]
            )
        return transcript

    def chat(self, messages: list[dict[str, str]], options: ChatOptions) -> Reply[ChatDelta, ChatResult]:
        """Text deltas as tokens are generated; the answer with its usage."""
        return self._run(Chat(messages, options))

    def synthesize(self, text: str, speed: float = 1.0) -> Reply[AudioPart, SynthesisResult]:
        """Each sentence's samples as it is spoken; the sample rate and the totals."""
        return self._run(Synthesize(text, speed))

    def diarize(
        self, audio: np.ndarray, speakers: int | None, threshold: float, voices: bool
    ) -> Reply[None, DiarizationResult]:
        """Who spoke when, and each speaker's voice where ``voices``."""
        return self._run(Diarize(audio, speakers, threshold, voices))

    def embed_voice(self, audio: np.ndarray) -> Reply[None, VoiceResult]:
        """The voice in a known speaker's reference clip."""
        return self._run(EmbedVoice(audio))

    def _run(self, request: Request[P, R]) -> Reply[P, R]:
        try:
            return (yield from self._worker.run(request))
        except WorkerDied as e:
            self._crashed(self._worker, e.message)
            raise


def result(reply: Generator[Any, None, R]) -> R:
    """Run ``reply`` to its end, dropping its partial results; its result."""
    while True:
        try:
            next(reply)
        except StopIteration as done:
            return done.value
