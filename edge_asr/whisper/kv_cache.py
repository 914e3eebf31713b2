"""The decoder's KV cache as an ONNX graph lays it out, read from the graph itself: the inputs
named ``self_*`` (each comes back grown as the output ``new_`` + its name), each with the sequences
on its axis named ``batch`` and the tokens so far on the one named ``past``. ``decoder.onnx`` keeps
one tensor per side, ``[L, B, P, D]``; the CPU decoder one per layer and side, in the layouts its
attention multiplies with. Numpy only: the export checks its graphs with it in the conversion
environment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Shape = Sequence[int | str | None]


class KvCacheLayout:
    def __init__(self, inputs: Sequence[tuple[str, Shape]]):
        """``inputs``: the graph's (name, declared shape), as ONNX Runtime lists them."""
        cache = [(name, list(shape)) for name, shape in inputs if name.startswith("self_")]
        self.names = [name for name, _ in cache]
        self.outputs = ["logits", *(f"new_{name}" for name in self.names)]  # to ask a step for, in this order
        self._batch_axes = [shape.index("batch") for _, shape in cache]
        self._empty = [
            np.zeros([1 if d == "batch" else 0 if d == "past" else d for d in shape], np.float32) for _, shape in cache
        ]

    def empty(self, batch: int) -> tuple[np.ndarray, ...]:
        """The cache of ``batch`` sequences before any token."""
        return tuple(np.repeat(e, batch, axis=a) for e, a in zip(self._empty, self._batch_axes, strict=True))

    def feeds(self, cache: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.names, cache, strict=True))

    def reorder(self, cache: Sequence[np.ndarray], rows: list[int]) -> tuple[np.ndarray, ...]:
        """The cache of sequences continuing ``rows``."""
        return tuple(np.take(c, rows, axis=a) for c, a in zip(cache, self._batch_axes, strict=True))
