"""The monitor: watches the workers of the ready models. A worker that dies while idle is noticed
at once (a request notices its own); one that stays silent mid-request (or mid-cancel) for
``stall_timeout`` is hung, not dead, and is killed, so its requests fail with 503 and the next
one loads the model again. It reads the (record, worker) pairs the manager read together under its
lock (``workers``) and reports deaths to the manager (``crashed``), which owns every state change.
An iteration that raises is logged and counted (``errors``); the watch goes on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for_sentinels

from edge_asr.lifecycle.records import ModelRecord
from edge_asr.loops import LoopErrors
from edge_asr.workers.handle import WorkerHandle

log = logging.getLogger(__name__)
POLL = 0.5  # seconds between looks at which workers to watch
Workers = Callable[[], list[tuple[ModelRecord, WorkerHandle]]]
Crashed = Callable[[ModelRecord, WorkerHandle, str], None]


class Monitor:
    def __init__(self, workers: Workers, crashed: Crashed, stall_timeout: float):
        self._workers, self._crashed, self._stall_timeout = workers, crashed, stall_timeout
        self._stopping = threading.Event()
        self.errors = LoopErrors("worker monitor")
        self._thread = threading.Thread(target=self._watch, name="edge-asr-worker-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(2 * POLL)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self.errors.guard():
                self._look()
            if self.errors.failing:
                self._stopping.wait(POLL)  # not a busy loop while the failure lasts

    def _look(self) -> None:
        """Wait up to ``POLL`` for a watched worker to end; report the ones that did."""
        watched = {worker.sentinel: (rec, worker) for rec, worker in self._workers()}
        if not watched:
            self._stopping.wait(POLL)
            return
        for sentinel in wait_for_sentinels(list(watched), timeout=POLL):
            rec, worker = watched[sentinel]
            if not worker.alive():
                self._crashed(rec, worker, worker.exit_description())

    def kill_stalled(self) -> list[str]:
        """Kill the workers silent for ``stall_timeout`` mid-request; the ids of their models."""
        timeout = self._stall_timeout
        stalled = [(rec, worker) for rec, worker in self._workers() if worker.silent_for() > timeout]
        for rec, worker in stalled:
            log.error("model %s: no answer from its worker for %.0f s mid-request; killing it", rec.spec.id, timeout)
            worker.abort(f"stalled: no answer for {timeout:.0f} s mid-request")
        return [rec.spec.id for rec, _ in stalled]
