"""The guard of the lifecycle's own threads (the supervisor, the worker monitor, the tegrastats
reader): an exception in one iteration is logged with its traceback and counted, and the loop goes
on. A thread that died on one bad moment would leave the unit blind for months (crashed workers no
longer noticed, memory no longer read) with nothing to show for it but a line in the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class LoopErrors:
    """One loop's failed iterations: ``count`` for ``edge_asr_loop_errors_total``, ``failing``
    while the last one failed. The same failure every iteration is logged once."""

    def __init__(self, loop: str):
        self.loop = loop
        self.count = 0
        self._last: str | None = None

    @property
    def failing(self) -> bool:
        return self._last is not None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run one iteration; what it raises (an ``Exception``) is logged, counted and swallowed."""
        try:
            yield
        except Exception as e:
            self.count += 1
            if repr(e) != self._last:
                log.exception("%s: an iteration failed; the loop goes on", self.loop)
            self._last = repr(e)
        else:
            self._last = None
