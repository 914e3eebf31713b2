"""What an engine is built from: the recipe a model family gives ``trt.build`` (Whisper's is in
``whisper/trt_graphs.py``), in a module of its own so the family depends on the builder's types
and the builder reaches the family only to ask for its recipes."""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int, int]  # min, opt, max of one dimension


@dataclass(frozen=True)
class EngineRecipe:
    """One engine to build: its file, the ONNX file it comes from, and the (min, opt, max) range
    of every dynamic axis, by input name and axis."""

    engine: str
    onnx: str
    axes: dict[str, dict[int, Range]]
