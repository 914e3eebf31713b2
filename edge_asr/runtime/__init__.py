"""The runtimes models run on inside a worker: ONNX Runtime (``onnx``); native TensorRT is in
``edge_asr.trt``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class TimedSteps:
    """The steps of a release in the order they ran, each timed: the worker's release report
    shows that the destruction happened, in which order, and what each step cost."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def __call__(self, name: str, action: Callable[[], object]) -> None:
        start = time.perf_counter()
        action()
        self.steps.append({"step": name, "seconds": round(time.perf_counter() - start, 6)})
