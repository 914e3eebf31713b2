"""The supervisor: one thread that decides when models sleep.

Every memory interval (and at once when a request gives its lease back: a keep-alive of 0 means
"unload now") it asks the ModelManager for a memory sample (the history the page charts), to
relieve memory pressure (below the low watermark: hibernate idle models until the high watermark),
to kill workers that hang mid-request (``stall_timeout``), to hibernate the idle models whose
keep-alive has run out and to keep a spare worker ready when memory allows (a wake's process,
``workers.spare``), then pings systemd's watchdog. It never touches a worker itself:
the manager owns every lifecycle change. A loop that hangs, or a load or unload that runs past its
bound (``ModelManager.overrun``), stops the pings, and systemd restarts the service (an unload
waits at most ``unload_timeout`` for its worker, so a frozen worker alone does not).
"""

from __future__ import annotations

import logging
import threading
import time

from edge_asr.config import Config
from edge_asr.lifecycle import ModelManager
from edge_asr.loops import LoopErrors
from edge_asr.systemd import Watchdog
from edge_asr.units import format_size

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, manager: ModelManager, config: Config, watchdog: Watchdog | None = None):
        self.manager = manager
        self.low_watermark = config.memory_low_watermark
        self.interval = config.memory_interval_ms / 1000
        self.watchdog = watchdog or Watchdog()
        self.ticks = 0
        self.cpu_seconds = 0.0  # the loop's own CPU time, unloads included
        self.pressure_hibernations = 0
        self.errors = LoopErrors("supervisor")
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-asr-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.manager.lease_returned.set()
        self._thread.join(10)

    def check(self) -> float | None:
        """One look at memory and the models; returns when the next keep-alive runs out, if one is
        counting down."""
        reading = self.manager.sample_memory()
        hibernated = self.manager.relieve_pressure(reading.available_bytes)
        if hibernated:
            self.pressure_hibernations += len(hibernated)
            log.warning(
                "memory pressure: %s available (low watermark %s); hibernated %s",
                format_size(reading.available_bytes),
                format_size(self.low_watermark),
                ", ".join(hibernated),
            )
        self.manager.kill_stalled()
        next_expiry = self.manager.hibernate_expired()
        self.manager.keep_spare()
        return next_expiry

    def _run(self) -> None:
        overrunning = False
        while not self._stopping.is_set():
            self.manager.lease_returned.clear()
            started = time.thread_time()
            next_expiry = None
            with self.errors.guard():  # a bad moment must not end supervision; no pings while it lasts
                next_expiry = self.check()
            if not self.errors.failing:
                overrun = self.manager.overrun()
                if overrun is None:
                    self.watchdog.ping()
                elif not overrunning:
                    log.error("%s: no watchdog pings until it ends", overrun)
                overrunning = overrun is not None
            self.ticks += 1
            self.cpu_seconds += time.thread_time() - started
            timeout = self.interval if next_expiry is None else min(self.interval, next_expiry - time.monotonic())
            self.manager.lease_returned.wait(max(0.0, timeout))
