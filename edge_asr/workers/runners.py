"""Runners: a loaded model inside a worker process, one per model family.

The contract every runtime keeps (ONNX Runtime, onnxruntime-genai, llama.cpp, native TensorRT):
construction loads, ``describe()`` says what runs it and why (and what loading measured), a
method serves each request type in ``requests`` (``protocol``: the request names its method; a
method may be a generator: what it yields streams to the client as it comes, what it returns is
the result), ``release()`` destroys what construction
created, in order (buffers -> execution contexts -> sessions/engines -> runtime -> stream ->
CUDA context), and reports the steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.steps import Steps
from edge_asr.whisper import CPU_DECODER
from edge_asr.workers.protocol import (
    AudioPart,
    Chat,
    ChatDelta,
    ChatResult,
    DiarizationResult,
    Diarize,
    EmbedVoice,
    Request,
    SynthesisResult,
    Synthesize,
    Transcribe,
    TranscriptPart,
    TranscriptResult,
    VoiceResult,
)

if TYPE_CHECKING:
    from edge_asr.llm.answer import ChatModel


class Runner:
    requests: ClassVar[frozenset[type[Request]]] = frozenset()
    modules: ClassVar[tuple[str, ...]] = ()  # what a load imports (a spare worker imports them ahead)

    @classmethod
    def files_loaded(cls, spec: ModelSpec) -> list[str]:
        """The model's files a load reads (a footprint is predicted from them before a first load)."""
        return list(spec.files)

    def describe(self) -> dict[str, Any]:
        """``runtime``, ``runtime_reason``, ``providers``, and what the runtime measured loading."""
        raise NotImplementedError

    def release(self) -> dict[str, Any]:
        raise NotImplementedError


class WhisperRunner(Runner):
    requests = frozenset({Transcribe})
    modules = ("edge_asr.vad", "edge_asr.whisper.model", "edge_asr.whisper.transcribe")

    @classmethod
    def files_loaded(cls, spec: ModelSpec) -> list[str]:
        """A Whisper folder holds a decoder for each runtime and a load reads the one for the
        providers this onnxruntime build has (``graphs.decoder_file``)."""
        from edge_asr.runtime.onnx import provider_chain
        from edge_asr.whisper.graphs import decoder_file

        decoder = decoder_file(spec.directory, provider_chain(spec.providers))
        return [f for f in spec.files if f not in (CPU_DECODER, "decoder.onnx") or f == decoder]

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.vad import SileroVad
        from edge_asr.whisper.model import WhisperModel

        self.vad = SileroVad.of(spec, config)
        self.model = WhisperModel.open(spec, config)

    def describe(self) -> dict[str, Any]:
        graphs = self.model.graphs
        return {
            "runtime": graphs.runtime,
            "runtime_reason": graphs.reason,
            "providers": graphs.providers,
            **graphs.load_report,
        }

    def transcribe(self, request: Transcribe) -> Generator[TranscriptPart, None, TranscriptResult]:
        """Yields each window's segments as it is decoded; returns the whole transcript."""
        from edge_asr.whisper.transcribe import Transcript, transcribe_windows

        options = dataclasses.asdict(request.options)
        decoding = transcribe_windows(self.model, self.vad, request.audio, **options)
        segments = []
        for window in decoding.windows:
            segments += window
            yield {"segments": [s.as_dict() for s in window]}
        return Transcript.of(segments, request.audio, decoding).as_dict()

    def release(self) -> dict[str, Any]:
        report = self.model.release()
        del self.model
        del self.vad
        return report


class ChatRunner(Runner):
    """An LLM; its runtime (``edge_asr.llm``) generates, ``llm.answer`` makes the chat answer of
    it the same way for every runtime. ``chat`` streams text deltas as tokens are generated."""

    requests = frozenset({Chat})

    def __init__(self, model: ChatModel):
        self.model = model

    def describe(self) -> dict[str, Any]:
        return self.model.describe()

    def chat(self, request: Chat) -> Generator[ChatDelta, None, ChatResult]:
        from edge_asr.llm.answer import answer

        return answer(self.model, request)

    def release(self) -> dict[str, Any]:
        report = self.model.release()
        del self.model
        return report


class GenaiRunner(ChatRunner):
    """An ONNX folder run by onnxruntime-genai."""

    modules = ("onnxruntime_genai", "edge_asr.llm.genai", "edge_asr.llm.answer")

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.llm.genai import GenaiModel

        super().__init__(GenaiModel(spec, config.llm_context))


class LlamaCppRunner(ChatRunner):
    """A GGUF file run by llama.cpp; the manifest's ``files`` name it."""

    modules = ("llama_cpp", "edge_asr.llm.llamacpp", "edge_asr.llm.answer")

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.llm.llamacpp import LlamaCppModel

        gguf = spec.directory / spec.files[0]
        super().__init__(LlamaCppModel(gguf, config.ort_threads, config.llm_context))


class PiperRunner(Runner):
    """A Piper voice. ``synthesize`` streams each sentence's samples as it is made."""

    requests = frozenset({Synthesize})
    modules = ("edge_asr.tts",)

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.tts import PiperSpeaker

        self.speaker = PiperSpeaker(spec, config.ort_threads, config.gpu_mem_limit)

    def describe(self) -> dict[str, Any]:
        reason = "Piper voices run on ONNX Runtime (the voice's own ONNX graph)"
        return {"runtime": "onnxruntime", "runtime_reason": reason, "providers": self.speaker.providers}

    def synthesize(self, request: Synthesize) -> Generator[AudioPart, None, SynthesisResult]:
        """Yields ``{"audio": int16 bytes}`` per sentence; returns the sample rate and the totals."""
        samples = sentences = 0
        for audio in self.speaker.speak(request.text, request.speed):
            yield {"audio": audio.astype("<i2").tobytes()}
            samples, sentences = samples + len(audio), sentences + 1
        return {"sample_rate": self.speaker.sample_rate, "samples": samples, "sentences": sentences}

    def release(self) -> dict[str, Any]:
        step = Steps()
        step("destroy voice session", self.speaker.release)
        step("destroy speaker", partial(delattr, self, "speaker"))
        return {"steps": step.steps}


class DiarizationRunner(Runner):
    """Speaker diarization (``edge_asr.diarization.model``): who spoke when, and the voice in a
    known speaker's reference clip."""

    requests = frozenset({Diarize, EmbedVoice})
    modules = ("sherpa_onnx", "edge_asr.diarization.model")

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.diarization.model import SpeakerDiarizer
        from edge_asr.runtime.cores import physical_cores

        self.diarizer = SpeakerDiarizer(spec.directory, config.ort_threads or physical_cores())

    def describe(self) -> dict[str, Any]:
        reason = "sherpa-onnx runs the segmentation and voice models (on its own onnxruntime, CPU only)"
        return {"runtime": "sherpa-onnx", "runtime_reason": reason, "providers": ["CPUExecutionProvider"]}

    def diarize(self, request: Diarize) -> DiarizationResult:
        return self.diarizer.diarize(request.audio, request.speakers, request.threshold, request.voices)

    def embed_voice(self, request: EmbedVoice) -> VoiceResult:
        return self.diarizer.embed_voice(request.audio)

    def release(self) -> dict[str, Any]:
        report = self.diarizer.release()
        del self.diarizer
        return report


RUNNERS: dict[str, type[Runner]] = {
    "whisper": WhisperRunner,
    "onnxruntime-genai": GenaiRunner,
    "llama.cpp": LlamaCppRunner,
    "piper": PiperRunner,
    "sherpa-onnx": DiarizationRunner,
}


def create_runner(spec: ModelSpec, config: Config) -> Runner:
    try:
        runner = RUNNERS[spec.family]
    except KeyError:
        raise ValueError(f"no runner for model family {spec.family!r} (known: {sorted(RUNNERS)})") from None
    return runner(spec, config)


def files_loaded(spec: ModelSpec) -> list[str]:
    """The files a load of ``spec`` reads, as its family's runner says."""
    return RUNNERS.get(spec.family, Runner).files_loaded(spec)
