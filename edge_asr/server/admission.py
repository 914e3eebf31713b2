"""What the front process admits, so that no client (or crowd of them) can exhaust it:

- ``RequestSlots``: at most ``threads - READ_THREADS`` requests that are not reads run at once;
  beyond that a 503 with ``Retry-After`` at once; a drained unit refuses new model work. Reads
  (``GET``: ``/healthz``, statuses, metrics) always find a thread, however busy the models are;
  the page's event stream, a read that holds its thread for minutes, takes a slot like a write.
- ``AudioBudget``: the decoded audio held by all requests together stays under
  ``request_memory_budget``; a request waits (up to ``wait_timeout``) for room, then gets a 503.
  One request larger than the whole budget runs when it is alone (refusing it would make the
  upload limit a lie).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.wsgi import ClosingIterator

from edge_asr.errors import Draining, QueueFull, ServiceError
from edge_asr.lifecycle.policy import DRAIN_RETRY, DRAINED
from edge_asr.server.errors import error_response
from edge_asr.units import format_size

READ_METHODS = ("GET", "HEAD", "OPTIONS")
READ_THREADS = 2  # handler threads only reads may use
LONG_READS = ("/api/stream",)  # reads that hold a thread for minutes (web.py): they take a slot
BUSY_RETRY = 2  # seconds a client is told to wait when every slot is taken
UNIT_HEADER = "X-Edge-Asr-Unit"
MODEL_WORK = ("/v1/", "/api/pipeline", "/api/speakers")  # what a drained unit refuses (not its management API)


def request_slots(threads: int) -> int:
    """Requests that are not reads may run at once: every handler thread but ``READ_THREADS``."""
    return max(1, threads - READ_THREADS)


class RequestSlots:
    """WSGI middleware around the Flask app; a slot is held until the response is closed (a
    stream holds its slot until it ends or its client leaves). It counts the requests under way
    (``busy``) and refuses new model work while the unit is ``drained`` (``ModelManager.drain``):
    decided once a request, so one that runs several models (a pipeline) is never cut off."""

    def __init__(self, app: Callable, threads: int, drained: Callable[[], bool]):
        self.app, self.drained = app, drained
        self.slots = request_slots(threads)
        self._free = threading.BoundedSemaphore(self.slots)
        self._lock = threading.Lock()
        self.busy = 0  # requests holding a slot

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] in READ_METHODS and path not in LONG_READS:
            return self.app(environ, start_response)
        if path.startswith(MODEL_WORK) and self.drained():
            return _refuse(Draining(DRAINED, retry_after=DRAIN_RETRY), environ, start_response)
        if not self._free.acquire(blocking=False):
            busy = QueueFull(f"all {self.slots} request slots are busy; try again", retry_after=BUSY_RETRY)
            return _refuse(busy, environ, start_response)
        self._count(+1)
        try:
            return ClosingIterator(self.app(environ, start_response), self._release)
        except BaseException:
            self._release()
            raise

    def _count(self, step: int) -> None:
        with self._lock:
            self.busy += step

    def _release(self) -> None:
        self._count(-1)
        self._free.release()


def _refuse(error: ServiceError, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """An error the app never sees, made as the app makes every other (``server.errors``)."""
    response = error_response(error.status, error.message, error.type, error.code, error.retry_after)
    return response(environ, start_response)


class UnitHeader:
    """WSGI middleware: every response says which unit answered (``UNIT_HEADER``), so that behind
    a router the client, the router's log and a test can tell (a WebSocket's acceptance too:
    ``front``)."""

    def __init__(self, app: Callable, unit: str):
        self.app, self.header = app, (UNIT_HEADER, unit)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Callable:
            return start_response(status, [*headers, self.header], *exc_info)

        return self.app(environ, start)


class AudioBudget:
    def __init__(self, budget: int, wait_timeout: float):
        self.budget, self.wait_timeout = budget, wait_timeout
        self.held = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, size: int) -> Iterator[None]:
        """Hold ``size`` bytes of the budget for the block, waiting for room up to ``wait_timeout``."""
        deadline = time.monotonic() + self.wait_timeout
        with self._cond:
            while self.held and self.held + size > self.budget:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QueueFull(
                        f"the service holds {format_size(self.held)} of other requests' audio and this one "
                        f"needs {format_size(size)} (request_memory_budget {format_size(self.budget)}); try again",
                        retry_after=5,
                    )
                self._cond.wait(remaining)
            self.held += size
        try:
            yield
        finally:
            with self._cond:
                self.held -= size
                self._cond.notify_all()
