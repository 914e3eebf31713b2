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
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("edge_asr")


@dataclass(frozen=True)
class Job:
    """What a job's steps say and raise: ``[model_id] n/total title``, and ``error`` naming the step."""

    model_id: str
    total: int
    error: type[Exception]


class Steps:
    """``Steps(Job(...))`` runs a job's steps; ``Steps()`` a release's, whose report is ``steps``."""

    def __init__(self, job: Job | None = None):
        self.job = job
        self.steps: list[dict[str, Any]] = []

    def __call__(self, title: str, action: Callable[[], T]) -> T | None:
        """Run ``action`` as the next step; its result (None for a release step that failed)."""
        job, number = self.job, len(self.steps) + 1
        if job is not None:
            log.info("[%s] %d/%d %s ...", job.model_id, number, job.total, title)
        step: dict[str, Any] = {"step": title}
        self.steps.append(step)
        start = time.perf_counter()
        try:
            result = action()
        except Exception as e:
            if job is None:
                step["error"] = f"{type(e).__name__}: {e}"
                log.error("release step %r failed: %s", title, step["error"])
                result = None
            elif isinstance(e, job.error):
                raise job.error(f"[{job.model_id}] step {number}/{job.total} ({title}) failed: {e}") from None
            else:
                raise
        step["seconds"] = round(time.perf_counter() - start, 6)
        if job is not None:
            log.info("[%s] %d/%d %s done in %.1f s", job.model_id, number, job.total, title, step["seconds"])
        return result
