"""Whisper on native TensorRT: the engines ``build_engines.py`` builds for it (``engine_recipes``)
and the ``WhisperGraphs`` that run them (see ``graphs.py``).

Nothing of a window leaves the GPU but the logits of each step: the encoder's cross-attention
keys and values stay in its output buffers for the whole window (shared by every beam), and the
decoder's KV cache alternates between two buffer pairs (step n reads pair a and writes pair b,
step n+1 the reverse), so no step copies the cache. Choosing beams gathers the chosen rows into
the other pair with device-to-device copies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edge_asr.trt.engine import DeviceTensor, TensorRTSession
from edge_asr.trt.engine_set import DeviceInfo, EngineSet, select_engine_set
from edge_asr.trt.recipe import EngineRecipe

ENGINES = ("encoder.engine", "decoder.engine")


def engine_recipes(directory: Path, max_batch: int) -> list[EngineRecipe]:
    """One window of 30 s through the encoder. The decoder in two profiles shaped like the calls
    ``WhisperModel.decode`` makes: first the steps, one new token for each of up to ``max_batch``
    sequences (the beams) over a cache of any length; then one sequence's prompt, any number of
    tokens (previous text, a prefix) over an empty or short cache."""
    meta = json.loads((directory / "whisper.json").read_text())
    context = meta["n_text_ctx"]
    beams, one = (1, max_batch, max_batch), (1, 1, 1)
    steps, prompt = (1, context // 4, context - 1), (0, 0, context - 1)  # cache lengths
    return [
        EngineRecipe("encoder.engine", "encoder.onnx", ({"mel": {0: one}},)),
        EngineRecipe(
            "decoder.engine",
            "decoder.onnx",
            (
                {"tokens": {0: beams, 1: one}, "self_k": {1: beams, 2: steps}, "self_v": {1: beams, 2: steps}},
                {"tokens": {0: one, 1: (1, 3, context)}, "self_k": {1: one, 2: prompt}, "self_v": {1: one, 2: prompt}},
            ),
        ),
    ]


class KvCache(NamedTuple):
    k: DeviceTensor
    v: DeviceTensor
    pair: int  # which buffer pair holds it


class TensorRTWhisperGraphs:
    runtime = "tensorrt"

    def __init__(self, engine_set: EngineSet):
        self.reason = engine_set.describe()
        self.providers: list[str] = []  # ONNX Runtime's; none here
        self.session = TensorRTSession(engine_set.directory, ENGINES)
        self.load_report: dict[str, Any] = {"gpu": dict(self.session.gpu), "engines": engine_set.directory.name}
        try:
            decoder = self.session["decoder"]
            layers, _, _, width = decoder.declared_shape("self_k")  # [L, B, P, D]
            self.max_batch: int | None = decoder.max_shape("tokens")[0]
        except BaseException:
            self.session.release()
            raise
        self._cache_layout = (layers, width, decoder.dtypes["self_k"])

    @classmethod
    def open(cls, model_dir: Path) -> TensorRTWhisperGraphs:
        return cls(select_engine_set(model_dir, DeviceInfo.detect()))

    def encode(self, mel: np.ndarray) -> dict[str, DeviceTensor]:
        with self.session.active():
            return self.session["encoder"].run({"mel": mel})

    def decode(
        self, tokens: np.ndarray, cache: KvCache | None, encoded: dict[str, DeviceTensor]
    ) -> tuple[np.ndarray, KvCache]:
        with self.session.active():
            if cache is None:
                cache = self._empty_cache(len(tokens))
            pair = 1 - cache.pair
            out = self.session["decoder"].run(
                {"tokens": tokens, "self_k": cache.k, "self_v": cache.v, **encoded},
                into={"new_self_k": f"kv{pair}.k", "new_self_v": f"kv{pair}.v"},
            )
            logits = self.session.to_host(out["logits"])
        return logits, KvCache(out["new_self_k"], out["new_self_v"], pair)

    def reorder(self, cache: KvCache, rows: list[int]) -> KvCache:
        """The rows of ``cache`` in the other buffer pair, in the order ``rows`` names them."""
        pair = 1 - cache.pair
        with self.session.active():
            k = self.session.gather_rows(cache.k, rows, f"kv{pair}.k")
            v = self.session.gather_rows(cache.v, rows, f"kv{pair}.v")
        return KvCache(k, v, pair)

    def align(self, tokens: np.ndarray, encoded: dict[str, DeviceTensor]) -> None:
        """None: the decoder engine has no alignment output (``decoder.onnx`` has none), so windows
        resume at Whisper's timestamps."""
        return None

    def _empty_cache(self, batch: int) -> KvCache:
        """A cache of length 0 for the first step, in pair 1 (so that step writes pair 0). Its
        buffer holds nothing, but TensorRT wants an address for every input."""
        layers, width, dtype = self._cache_layout
        assert self.session.buffers is not None
        empty = DeviceTensor(self.session.buffers.device("kv-empty", 0), (layers, batch, 0, width), dtype)
        return KvCache(empty, empty, 1)

    def release(self) -> dict[str, Any]:
        return self.session.release()
