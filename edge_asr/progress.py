"""Numbered progress lines for a multi-step job on one model (preparing it, building its
engines): each step timed, and a failure re-raised naming the step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("edge_asr")


class Steps:
    def __init__(self, model_id: str, total: int, error: type[Exception]):
        self.model_id, self.total, self.done, self.error = model_id, total, 0, error

    def __call__(self, title: str, action: Callable[[], T]) -> T:
        """Run ``action`` as the next step; its result."""
        self.done += 1
        log.info("[%s] %d/%d %s ...", self.model_id, self.done, self.total, title)
        start = time.monotonic()
        try:
            result = action()
        except self.error as e:
            raise self.error(f"[{self.model_id}] step {self.done}/{self.total} ({title}) failed: {e}") from None
        log.info("[%s] %d/%d %s done in %.1f s", self.model_id, self.done, self.total, title, time.monotonic() - start)
        return result
