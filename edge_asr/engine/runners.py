"""Runners: a loaded model inside a worker process, one per model family.

The contract every runtime keeps (ONNX Runtime, onnxruntime-genai, native TensorRT):
construction loads, ``describe()`` says what runs it and why (and what loading measured), the
methods in ``methods`` run whole requests (a method may be a generator: what it yields streams to
the client as it comes, what it returns is the result), ``release()`` destroys what construction
created, in order (buffers -> execution contexts -> sessions/engines -> runtime -> stream ->
CUDA context), and reports the steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any, ClassVar

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.runtime import TimedSteps


class Runner:
    methods: ClassVar[frozenset[str]] = frozenset()

    def describe(self) -> dict[str, Any]:
        """``runtime``, ``runtime_reason``, ``providers``, and what the runtime measured loading."""
        raise NotImplementedError

    def release(self) -> dict[str, Any]:
        raise NotImplementedError


class WhisperRunner(Runner):
    methods = frozenset({"transcribe"})

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

    def transcribe(self, audio: np.ndarray, **options: Any) -> Iterator[dict[str, Any]]:
        """Yields each window's segments as it is decoded; returns the whole transcript."""
        from edge_asr.whisper.transcribe import Transcript, transcribe_windows

        language, windows = transcribe_windows(self.model, self.vad, audio, **options)
        segments = []
        for window in windows:
            segments += window
            yield {"segments": [s.as_dict() for s in window]}
        return Transcript.of(segments, audio, language).as_dict()

    def release(self) -> dict[str, Any]:
        report = self.model.release()
        del self.model
        del self.vad
        return report


class GenaiRunner(Runner):
    """A decoder-only chat model run by onnxruntime-genai (KV cache, sampling and search are its
    job). ``chat`` streams text deltas as tokens are generated."""

    methods = frozenset({"chat"})

    def __init__(self, spec: ModelSpec, config: Config):
        import onnxruntime_genai as og

        from edge_asr.runtime.onnx import CUDA, provider_chain

        self._og = og
        genai_config = og.Config(str(spec.directory))
        genai_config.clear_providers()
        self._providers = provider_chain(spec.providers)
        if CUDA in self._providers:
            genai_config.append_provider("cuda")
        self.model = og.Model(genai_config)
        self.tokenizer = og.Tokenizer(self.model)
        meta = json.loads((spec.directory / "genai_config.json").read_text())
        self.context_length: int = meta["model"]["context_length"]

    def describe(self) -> dict[str, Any]:
        reason = "LLMs run on onnxruntime-genai (TensorRT-LLM does not support Jetson; see the README)"
        return {"runtime": "onnxruntime-genai", "runtime_reason": reason, "providers": self._providers}

    def chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Yields ``{"delta": text}`` as text is generated; returns the answer with its usage."""
        prompt = self.tokenizer.encode(
            self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        )
        room = self.context_length - len(prompt)
        if room < 1:
            raise ValueError(f"the prompt is {len(prompt)} tokens; this model's context holds {self.context_length}")
        limit = min(max_tokens or room, room)
        params = self._og.GeneratorParams(self.model)
        options: dict[str, Any] = {"max_length": len(prompt) + limit, "do_sample": temperature > 0}
        if temperature > 0:
            options |= {"temperature": temperature, "top_p": top_p}
        if seed is not None:
            options["random_seed"] = seed
        params.set_search_options(**options)
        generator = self._og.Generator(self.model, params)
        generator.append_tokens(prompt)
        stream = self.tokenizer.create_stream()
        text, sent, produced, finish = "", 0, 0, "length"
        while not generator.is_done():
            generator.generate_next_token()
            token = generator.get_next_tokens()[0]
            produced += 1
            if token in self.tokenizer.eos_token_ids:
                finish = "stop"
                break
            text += stream.decode(token)
            hit = [text.index(s) for s in stop or () if s in text]
            if hit:
                text, finish = text[: min(hit)], "stop"
                break
            # hold back what could be the start of a stop sequence
            safe = len(text) - max((len(s) - 1 for s in stop or ()), default=0)
            if safe > sent:
                yield {"delta": text[sent:safe]}
                sent = safe
        del generator
        if len(text) > sent:
            yield {"delta": text[sent:]}
        return {"text": text, "finish_reason": finish, "prompt_tokens": len(prompt), "completion_tokens": produced}

    def release(self) -> dict[str, Any]:
        step = TimedSteps()
        step("destroy tokenizer", partial(delattr, self, "tokenizer"))
        step("destroy model", partial(delattr, self, "model"))
        return {"steps": step.steps}


class PiperRunner(Runner):
    """A Piper voice. ``speak`` streams each sentence's samples as it is synthesised."""

    methods = frozenset({"speak"})

    def __init__(self, spec: ModelSpec, config: Config):
        from edge_asr.speech import PiperSpeaker

        self.speaker = PiperSpeaker(spec, config.ort_threads, config.gpu_mem_limit)

    def describe(self) -> dict[str, Any]:
        reason = "Piper voices run on ONNX Runtime (the voice's own ONNX graph)"
        return {"runtime": "onnxruntime", "runtime_reason": reason, "providers": self.speaker.providers}

    def speak(self, text: str, speed: float = 1.0) -> Iterator[dict[str, Any]]:
        """Yields ``{"audio": int16 bytes}`` per sentence; returns the sample rate and the totals."""
        samples = sentences = 0
        for audio in self.speaker.speak(text, speed):
            yield {"audio": audio.astype("<i2").tobytes()}
            samples, sentences = samples + len(audio), sentences + 1
        return {"sample_rate": self.speaker.sample_rate, "samples": samples, "sentences": sentences}

    def release(self) -> dict[str, Any]:
        step = TimedSteps()
        step("destroy voice session", self.speaker.release)
        step("destroy speaker", partial(delattr, self, "speaker"))
        return {"steps": step.steps}


RUNNERS: dict[str, type[Runner]] = {"whisper": WhisperRunner, "onnxruntime-genai": GenaiRunner, "piper": PiperRunner}


def create_runner(spec: ModelSpec, config: Config) -> Runner:
    try:
        runner = RUNNERS[spec.family]
    except KeyError:
        raise ValueError(f"no runner for model family {spec.family!r} (known: {sorted(RUNNERS)})") from None
    return runner(spec, config)
