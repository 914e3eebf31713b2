"""Named, timed steps: one helper for the two jobs that run in steps.

A *job* (preparing a model, building its engines) logs numbered progress lines and stops at the
first failure, re-raised naming the step. A *release* (destroying what a load created) records
each step with its time and error in a report and goes on: a release must reach its last step
(for TensorRT, detaching the CUDA context) whatever happened before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("edge_asr")


class Steps:
    """``Steps(model_id, total, error)`` for a job: a failing step raises ``error`` naming it.
    ``Steps()`` for a release: a failing step is recorded and logged, and ``steps`` is the report."""

    def __init__(self, model_id: str | None = None, total: int = 0, error: type[Exception] | None = None):
        self.model_id, self.total, self.error = model_id, total, error
        self.steps: list[dict[str, Any]] = []

    def __call__(self, title: str, action: Callable[[], T]) -> T | None:
        """Run ``action`` as the next step; its result (None for a release step that failed)."""
        number = len(self.steps) + 1
        if self.model_id is not None:
            log.info("[%s] %d/%d %s ...", self.model_id, number, self.total, title)
        step: dict[str, Any] = {"step": title}
        self.steps.append(step)
        start = time.perf_counter()
        try:
            result = action()
        except Exception as e:
            if self.error is not None and isinstance(e, self.error):
                raise self.error(f"[{self.model_id}] step {number}/{self.total} ({title}) failed: {e}") from None
            if self.error is not None:
                raise
            step["error"] = f"{type(e).__name__}: {e}"
            log.error("release step %r failed: %s", title, step["error"])
            result = None
        step["seconds"] = round(time.perf_counter() - start, 6)
        if self.model_id is not None:
            log.info("[%s] %d/%d %s done in %.1f s", self.model_id, number, self.total, title, step["seconds"])
        return result
