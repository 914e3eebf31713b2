"""The ModelRegistry: every model's lifecycle record, and the one condition that guards them.

It answers what the API, the page and the supervisor read (a model's spec, settings and status,
the memory readings, the lifecycle events) and makes every state change: ``_transition`` checks
the move against ``records.MOVES``, wakes the waiters and stages the event, which is delivered
(written, logged, given to the listeners) once the condition is released (``events``). It starts and stops
nothing: the ``ModelManager`` (its subclass) adds the operations that do (leases, load, unload,
hibernation), as Flask's ``Flask`` adds serving to its ``App``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from edge_asr import settings as model_settings
from edge_asr.config import Config
from edge_asr.errors import BackingOff, ModelNotFound, ModelUnavailable, ShuttingDown
from edge_asr.events import EventLog
from edge_asr.lifecycle import policy
from edge_asr.lifecycle.footprints import Footprints
from edge_asr.lifecycle.records import SETTLED, ModelRecord, State
from edge_asr.lifecycle.status import model_status
from edge_asr.manifest import ModelSpec, get_model, load_manifest
from edge_asr.memory import MemoryReading, MemorySource
from edge_asr.state import StateStore
from edge_asr.units import parse_duration
from edge_asr.workers.handle import WorkerHandle


class _Condition(threading.Condition):
    """The registry's condition (reentrant, so transitions nest): when the thread that holds it
    releases it for the last time, it calls ``released`` (delivers the events staged under it)."""

    def __init__(self, released: Callable[[], None]):
        super().__init__(threading.RLock())
        self._released = released
        self._depth = threading.local()

    def __enter__(self) -> bool:
        entered = super().__enter__()
        self._depth.n = getattr(self._depth, "n", 0) + 1
        return entered

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        super().__exit__(*exc)
        if self._depth.n == 0:
            self._released()


class ModelRegistry:
    def __init__(
        self,
        config: Config,
        memory: MemorySource,
        store: StateStore,
        events: EventLog,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._memory, self._store, self._events, self._clock = memory, store, events, clock
        served = [spec for spec in load_manifest(config).values() if spec.task != "vad"]
        self._records = {spec.id: ModelRecord(spec) for spec in served}
        self.footprints = Footprints(store)
        self._cond = _Condition(events.deliver)  # guards every record
        self._stopping = False  # the service stops: no new work
        self._drained_at: float | None = None  # when the unit was drained (``ModelManager.drain``); None: it is not
        self.moves = 0  # lifecycle moves so far (state changes, spare starts): memory moved with each

    # -- queries ---------------------------------------------------------------------------

    def _record(self, model_id: str) -> ModelRecord:
        try:
            return self._records[model_id]
        except KeyError:
            get_model(self.config, model_id)  # the manifest's "does not exist"...
            raise ModelNotFound(f"the model {model_id!r} is not served (a VAD runs inside speech models)") from None

    def spec(self, model_id: str) -> ModelSpec:
        return self._record(model_id).spec

    def specs(self) -> list[ModelSpec]:
        return [r.spec for r in self._records.values()]

    def settings(self, model_id: str) -> dict[str, Any]:
        spec = self.spec(model_id)
        return model_settings.defaults(spec, self.config.keep_alive) | self._store.settings(model_id)

    def _all_settings(self) -> dict[str, dict[str, Any]]:
        return {model_id: self.settings(model_id) for model_id in self._records}

    def update_settings(self, model_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(model_id)
        self._store.update_settings(model_id, partial(model_settings.merge, spec, patch=patch))
        return self.settings(model_id)

    def _expires_at(self, rec: ModelRecord) -> float | None:
        settings = self.settings(rec.spec.id)
        return policy.expires_at(rec, parse_duration(settings["keep_alive"]), settings["pinned"])

    def _keeps(self, rec: ModelRecord) -> bool:
        """Whether ``rec``, loaded now, would stay loaded while idle (its last request's keep-alive,
        else its setting's, is not 0): a model loaded ahead of a request must still be there."""
        keep = (
            rec.keep_alive if rec.keep_alive is not None else parse_duration(self.settings(rec.spec.id)["keep_alive"])
        )
        return keep != 0

    def _expired(self, rec: ModelRecord) -> bool:
        at = self._expires_at(rec)
        return at is not None and at <= self._clock()

    def _evictable(self, rec: ModelRecord) -> bool:
        return policy.evictable(rec, {rec.spec.id: self.settings(rec.spec.id)})

    def status(self, model_id: str) -> dict[str, Any]:
        """The model as the API shows it (``status.model_status``)."""
        rec = self._record(model_id)
        settings = self.settings(model_id)
        with self._cond:
            expires_at = self._expires_at(rec)
            return model_status(rec, settings, self.footprints.get(model_id), expires_at, time.time() - self._clock())

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(model_id) for model_id in self._records]

    # -- what the supervisor, the API and the page read -------------------------------------

    def memory_now(self) -> MemoryReading:
        """The memory source's latest reading (not kept in the history the page charts)."""
        return self._memory.read()

    def sample_memory(self) -> MemoryReading:
        """(The supervisor, once per interval.) The latest reading, kept in the history."""
        return self._memory.sample()

    def memory_history(self, since: float = 0.0) -> list[MemoryReading]:
        return self._memory.history(since)

    def memory_source_info(self) -> dict[str, Any]:
        """The memory source's name (``source``) and what it counts (tegrastats' lines, restarts)."""
        return self._memory.info()

    def recent_events(self, since: float = 0.0, model: str | None = None) -> list[dict[str, Any]]:
        return self._events.recent(since, model)

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every lifecycle event (the metrics count them)."""
        self._events.listeners.append(listener)

    def workers(self) -> list[tuple[ModelRecord, WorkerHandle]]:
        """Each ready model with its worker, read together under the lock (for the monitor)."""
        with self._cond:
            return [(r, r.worker) for r in self._records.values() if r.state is State.READY and r.worker]

    # -- state changes ---------------------------------------------------------------------

    def _transition(self, rec: ModelRecord, to: State, reason: str, event: bool = True, **details: Any) -> None:
        """The one place a state changes: the move checked, the waiters woken and, for a settled
        state, the event recorded (from the settled state the operation started in)."""
        with self._cond:
            origin = rec.move(to, reason)
            self.moves += 1
            self._cond.notify_all()
            if event and to in SETTLED:
                self._events.stage(rec.spec.id, origin.value, to.value, reason, **details)

    def _fail(self, rec: ModelRecord, reason: str, **details: Any) -> None:
        """The model's worker is gone or never came: ``failed``, counted for the back-off."""
        with self._cond:
            if rec.worker is not None:
                rec.drop_worker("crashed", self._clock())
            rec.failures += 1
            rec.retry_at = policy.backoff_until(rec.failures, self.config.failure_backoff, self._clock())
            self._transition(rec, State.FAILED, reason, **details)

    def crashed(self, rec: ModelRecord, worker: WorkerHandle, reason: str) -> None:
        """``worker`` died or was killed (a request or the monitor noticed)."""
        with self._cond:
            if rec.worker is not worker or rec.state is not State.READY:
                return  # already handled, or the exit of an unload
            self._fail(rec, f"crashed: {reason}")
        worker.kill()

    def _note(self, rec: ModelRecord, reason: str, **details: Any) -> None:
        """Record in ``rec``'s events what it found while serving (a detected language)."""
        self._events.record(rec.spec.id, State.READY.value, State.READY.value, reason, **details)

    # -- waiting for a state -----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._stopping:
            raise ShuttingDown("the service is stopping", retry_after=policy.STOP_RETRY)

    def _wait_ready(self, rec: ModelRecord, deadline: float) -> WorkerHandle | None:
        """(Under the lock.) The worker once ``rec`` is ready, or None if the caller must load it."""
        while True:
            self._check_open()
            if rec.state is State.READY and not rec.draining:
                return rec.worker
            if rec.state in (State.UNLOADED, State.FAILED):
                self._check_backoff(rec)
                return None
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ModelUnavailable(f"the model {rec.spec.id!r} is {rec.state.value}; try again", retry_after=1)
            self._cond.wait(remaining)

    def _check_backoff(self, rec: ModelRecord) -> None:
        if wait := policy.backoff_left(rec, self._clock()):
            raise BackingOff(
                f"the model {rec.spec.id!r} failed {rec.failures} times in a row ({rec.reason}); "
                f"next attempt in {wait:.0f} s",
                retry_after=wait,
            )
