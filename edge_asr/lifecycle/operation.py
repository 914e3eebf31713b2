"""One load or unload at a time: the lifecycle lock, and which operation holds it since when (so
the supervisor can tell one that has run past its bound)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class OperationLock:
    def __init__(self, clock: Callable[[], float]):
        self._lock = threading.Lock()
        self._clock = clock
        self._held: tuple[str, float] | None = None  # the operation under way, and since when

    @contextmanager
    def hold(self, what: str, timeout: float) -> Iterator[bool]:
        """Hold the lock for ``what``; yields False when it was not free within ``timeout`` seconds
        (0: do not wait)."""
        held = self._lock.acquire(timeout=timeout) if timeout > 0 else self._lock.acquire(blocking=False)
        if not held:
            yield False
            return
        self._held = (what, self._clock())
        try:
            yield True
        finally:
            self._held = None
            self._lock.release()

    def overrun(self, bound: float) -> str | None:
        """The operation under way if it has held the lock for more than ``bound`` seconds."""
        held = self._held
        if held is None:
            return None
        what, since = held
        took = self._clock() - since
        return f"{what} under way for {took:.0f} s (bound {bound:.0f} s)" if took > bound else None
