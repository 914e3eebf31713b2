"""What an engine is built from: the recipe a model family gives ``trt.build`` (Whisper's is in
``whisper/trt_graphs.py``), in a module of its own so the family depends on the builder's types
and the builder reaches the family only to ask for its recipes."""

from __future__ import annotations

from dataclasses import dataclass

Range = tuple[int, int, int]  # min, opt, max of one dimension
Profile = dict[str, dict[int, Range]]  # input name -> axis -> range


@dataclass(frozen=True)
class EngineRecipe:
    """One engine to build: its file, the ONNX file it comes from, and its optimisation profiles,
    each the (min, opt, max) range of every dynamic axis. TensorRT sizes an engine's working
    memory for the largest shapes of its profiles, so a profile per kind of call the engine gets
    costs less than one covering every combination; a call runs in the first profile that takes
    its shapes (``trt.engine.Engine``)."""

    engine: str
    onnx: str
    profiles: tuple[Profile, ...]
