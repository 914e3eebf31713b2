"""The two networks of a Whisper model behind one small interface, so that decoding (features,
tokenizer, timestamp rules, fallback, VAD: ``model.py``, ``transcribe.py``) is the same code on
every runtime:

- ``encode(mel)``: the cross-attention keys and values of one window, kept where the runtime
  keeps them (numpy arrays for ONNX Runtime, device memory for TensorRT);
- ``decode(tokens, cache, encoded)``: the logits of the last position of each sequence (the rows
  of ``tokens``) and the grown KV cache (``cache`` None on the first step; opaque to the caller);
  the window's encoding is shared by all rows;
- ``reorder(cache, rows)``: the cache of sequences continuing ``rows`` (beam search picks its
  beams; a row may be taken several times, or dropped);
- ``align(tokens, encoded)``: the alignment heads' cross-attention logits ``[A, T, 1500]`` of one
  sequence ``tokens [1, T]`` read from the start (word alignment: ``alignment.py``), or None
  where the graphs have no such output (the fp32 decoder, TensorRT's engines);
- ``release()``: destroy what the constructor made, in order, and report each step.

What ``encode`` returns and ``decode``'s cache may live in the runtime's buffers (TensorRT): an
encoding is valid until the next ``encode``, a cache until the second ``decode`` after the one that
made it. Decoding uses each once, in order; keeping one longer needs a copy. The logits are a new
host array each step, the caller's to mask in place.

The graphs' contract is in ``edge_asr/prepare/convert/whisper_to_onnx.py``. ``open_graphs`` picks
the runtime the manifest prefers and falls back to ONNX Runtime, with the reason, when TensorRT
cannot run the model here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edge_asr.config import Config
from edge_asr.manifest import ModelSpec
from edge_asr.runtime.onnx import CPU, open_session
from edge_asr.steps import Steps
from edge_asr.whisper import ALIGNMENT, CPU_DECODER
from edge_asr.whisper.kv_cache import KvCacheLayout

log = logging.getLogger(__name__)


class WhisperGraphs(Protocol):
    runtime: str  # "onnxruntime" | "tensorrt"
    reason: str  # why this runtime: the engines in use, or why TensorRT is not
    providers: list[str]
    load_report: dict[str, Any]  # what the runtime measured while loading (GPU memory)
    max_batch: int | None  # the most sequences one decoding step takes; None: any

    def encode(self, mel: np.ndarray) -> Any: ...

    def decode(self, tokens: np.ndarray, cache: Any, encoded: Any) -> tuple[np.ndarray, Any]: ...

    def reorder(self, cache: Any, rows: list[int]) -> Any: ...

    def align(self, tokens: np.ndarray, encoded: Any) -> np.ndarray | None: ...

    def release(self) -> dict[str, Any]: ...


def decoder_file(directory: Path, providers: Sequence[str]) -> str:
    """The CPU decoder (made for the CPU's costs: ``CpuDecoder`` in the export) when the model runs
    on the CPU alone (``providers``: what the sessions got) and has one; else the fp32 decoder,
    which the GPU providers take."""
    if list(providers) == [CPU] and (directory / CPU_DECODER).is_file():
        return CPU_DECODER
    return "decoder.onnx"


class OnnxWhisperGraphs:
    runtime = "onnxruntime"
    max_batch = None

    def __init__(
        self,
        directory: Path,
        providers: Sequence[str] = (CPU,),
        threads: int = 0,
        gpu_mem_limit: int = 0,
        reason: str = "the manifest prefers ONNX Runtime",
        decoder: str | None = None,
    ):
        """``decoder``: the decoder graph's file, by default the one for the providers the encoder's
        session got (``decoder_file``). A CPU decoder this ONNX Runtime cannot run (8-bit
        ``MatMulNBits`` on the CPU is recent) gives way to the fp32 one, with a warning."""
        self.reason = reason
        self.encoder = open_session(directory / "encoder.onnx", providers, threads, gpu_mem_limit)
        self.providers: list[str] = self.encoder.get_providers()
        self.decoder_file = decoder or decoder_file(directory, self.providers)
        try:
            self.decoder = open_session(directory / self.decoder_file, providers, threads, gpu_mem_limit)
        except Exception as e:  # any session failure of the CPU decoder: the fp32 one still runs here
            if self.decoder_file != CPU_DECODER or decoder:
                raise
            log.warning("%s not usable (%s); decoding with decoder.onnx", CPU_DECODER, e)
            self.decoder_file = "decoder.onnx"
            self.decoder = open_session(directory / self.decoder_file, providers, threads, gpu_mem_limit)
        self.load_report: dict[str, Any] = {}
        self._cross_names = [o.name for o in self.encoder.get_outputs()]
        self._cache = KvCacheLayout([(i.name, i.shape) for i in self.decoder.get_inputs()])
        self._aligns = ALIGNMENT in {o.name for o in self.decoder.get_outputs()}

    def encode(self, mel: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self._cross_names, self.encoder.run(None, {"mel": mel}), strict=True))

    def decode(
        self, tokens: np.ndarray, cache: tuple[np.ndarray, ...] | None, encoded: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        if cache is None:
            cache = self._cache.empty(len(tokens))
        logits, *grown = self.decoder.run(
            self._cache.outputs, {"tokens": tokens, **self._cache.feeds(cache), **encoded}
        )
        return logits, tuple(grown)

    def reorder(self, cache: tuple[np.ndarray, ...], rows: list[int]) -> tuple[np.ndarray, ...]:
        return self._cache.reorder(cache, rows)

    def align(self, tokens: np.ndarray, encoded: dict[str, np.ndarray]) -> np.ndarray | None:
        if not self._aligns:
            return None
        (qk,) = self.decoder.run([ALIGNMENT], {"tokens": tokens, **self._cache.feeds(self._cache.empty(1)), **encoded})
        return qk

    def release(self) -> dict[str, Any]:
        """Destroy the sessions, decoder then encoder (the runtime's memory goes with them)."""
        step = Steps()
        step("destroy decoder session", partial(delattr, self, "decoder"))
        step("destroy encoder session", partial(delattr, self, "encoder"))
        return {"steps": step.steps}


def open_graphs(spec: ModelSpec, config: Config) -> WhisperGraphs:
    """``spec``'s graphs on the runtime its manifest entry prefers, or on ONNX Runtime with the
    reason when TensorRT cannot run it here (no TensorRT, no GPU, no engines built for this
    device, an engine that fails to load). A failed TensorRT load has released what it made."""
    reason = "the manifest prefers ONNX Runtime"
    if spec.runtime == "tensorrt":
        from edge_asr.whisper.trt_graphs import TensorRTWhisperGraphs

        try:
            return TensorRTWhisperGraphs.open(spec.directory)
        except Exception as e:  # any TensorRT failure: the model still serves, on ONNX Runtime
            reason = f"TensorRT not used: {e}"
            log.warning("model %s runs on ONNX Runtime: %s", spec.id, reason)
    return OnnxWhisperGraphs(spec.directory, spec.providers, config.ort_threads, config.gpu_mem_limit, reason)
