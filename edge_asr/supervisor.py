"""The supervisor: one thread that decides when models sleep.

It wakes every memory interval, and at once when a request gives its lease back (a keep-alive of 0
means "unload now"), and asks the ModelManager to hibernate the idle models whose keep-alive has
run out. It never touches a worker itself: the manager owns every lifecycle change.
"""

from __future__ import annotations

import logging
import threading
import time

from edge_asr.config import Config
from edge_asr.manager import ModelManager

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, manager: ModelManager, config: Config):
        self.manager = manager
        self.interval = config.memory_interval_ms / 1000
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-asr-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.manager.lease_returned.set()
        self._thread.join(10)

    def check(self) -> float | None:
        """One look at the models; returns when the next keep-alive runs out, if one is counting."""
        return self.manager.hibernate_expired()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.manager.lease_returned.clear()
            try:
                next_expiry = self.check()
            except Exception:  # a bad moment must not end supervision
                log.exception("supervisor check failed")
                next_expiry = None
            timeout = self.interval if next_expiry is None else min(self.interval, next_expiry - time.time())
            self.manager.lease_returned.wait(max(0.0, timeout))
