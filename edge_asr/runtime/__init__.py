"""The runtimes models run on inside a worker: ONNX Runtime (``onnx``); native TensorRT is in
``edge_asr.trt``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class TimedSteps:
    """The steps of a release in the order they ran, each timed: the worker's release report
    shows that the destruction happened, in which order, and what each step cost.

    A step that fails is recorded with its error and the next steps still run: a release must
    reach its last step (for TensorRT, detaching the CUDA context) whatever happened before.
    """

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []

    def __call__(self, name: str, action: Callable[[], object]) -> None:
        start = time.perf_counter()
        step: dict[str, Any] = {"step": name}
        try:
            action()
        except Exception as e:
            step["error"] = f"{type(e).__name__}: {e}"
            log.error("release step %r failed: %s", name, step["error"])
        step["seconds"] = round(time.perf_counter() - start, 6)
        self.steps.append(step)
