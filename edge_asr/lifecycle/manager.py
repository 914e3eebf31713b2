"""The ModelManager: the one owner of every model's lifecycle state.

HTTP handlers and the supervisor ask it; they never touch workers. A request takes a *lease* on a
model (loading it if needed) and gives it back when done. Loads and unloads happen one at a time
(the lifecycle lock), so the change in available memory around each is the model's own: that is
its footprint, persisted and used to decide whether the next load fits. Before a load that would
leave less than the reserve (or exceed the budget), idle models are evicted (``policy.admit``).
Nothing is unloaded under a running request.

Every state change goes through ``_transition`` (checked against ``records.MOVES``, waking the
waiters, recording the event). Every load and unload path is exception-safe: whatever fails, the
worker is killed and the model ends ``failed`` with the reason, never left ``loading`` or
``unloading``. Disk writes (events, footprints) happen once the state is consistent and a failing
one is logged, not raised. Every wait is bounded, every deadline on the monotonic ``clock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from edge_asr import settings as model_settings
from edge_asr.config import Config
from edge_asr.engine.handle import KILL_GRACE, WorkerDied, WorkerHandle
from edge_asr.errors import (
    InsufficientMemory,
    ModelBusy,
    ModelLoadFailed,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    ServiceError,
    WorkerCrashed,
)
from edge_asr.events import EventLog
from edge_asr.lifecycle import policy
from edge_asr.lifecycle.footprints import Footprints
from edge_asr.lifecycle.monitor import Monitor
from edge_asr.lifecycle.records import SETTLED, ModelRecord, State
from edge_asr.manifest import ModelSpec, get_model, load_manifest
from edge_asr.memory import MemoryReading, MemorySource, create_memory_source, trim_heap
from edge_asr.state import StateStore
from edge_asr.units import parse_duration

log = logging.getLogger(__name__)
MB = 10**6
LIFECYCLE_BUSY_RETRY = 0.25  # seconds before the supervisor tries again behind a load or unload
Spawn = Callable[[ModelSpec, Config], WorkerHandle]


class ModelManager:
    def __init__(
        self,
        config: Config,
        memory: MemorySource,
        store: StateStore,
        events: EventLog,
        spawn: Spawn = WorkerHandle,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config, self.memory, self.store, self.events = config, memory, store, events
        self._spawn, self._clock = spawn, clock
        served = [spec for spec in load_manifest(config).values() if spec.task != "vad"]
        self._records = {spec.id: ModelRecord(spec) for spec in served}
        self.footprints = Footprints(store)
        self._cond = threading.Condition()  # guards every record; reentrant, so transitions nest
        self._lifecycle = threading.Lock()  # one load or unload at a time
        self._operation: tuple[str, float] | None = None  # the one under way, and since when
        self._stopping = False
        self.lease_returned = threading.Event()  # wakes the supervisor: an idle timer may have started
        self.monitor = Monitor(self)

    @classmethod
    def create(cls, config: Config) -> ModelManager:
        events = EventLog(config.state_dir / "events.jsonl")
        return cls(config, create_memory_source(config), StateStore(config.state_dir), events)

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
        return model_settings.defaults(spec, self.config.keep_alive) | self.store.settings(model_id)

    def _all_settings(self) -> dict[str, dict[str, Any]]:
        return {model_id: self.settings(model_id) for model_id in self._records}

    def update_settings(self, model_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(model_id)
        with self._cond:
            self.store.save_settings(model_id, model_settings.merge(spec, self.store.settings(model_id), patch))
        return self.settings(model_id)

    def _expires_at(self, rec: ModelRecord) -> float | None:
        settings = self.settings(rec.spec.id)
        return policy.expires_at(rec, parse_duration(settings["keep_alive"]), settings["pinned"])

    def status(self, model_id: str) -> dict[str, Any]:
        rec = self._record(model_id)
        current = self.settings(model_id)
        offset = time.time() - self._clock()

        def wall(t: float | None) -> float | None:
            """A time on the manager's clock as a wall-clock time, for people and the API."""
            return None if t is None else t + offset

        with self._cond:
            return {
                "id": rec.spec.id,
                "task": rec.spec.task,
                "family": rec.spec.family,
                "state": rec.state.value,
                "reason": rec.reason,
                "in_flight": rec.in_flight,
                "waiting": rec.waiting,
                "footprint_bytes": self.footprints.get(rec.spec.id),
                "loaded_at": wall(rec.loaded_at),
                "last_used": wall(rec.last_used),
                "expires_at": wall(self._expires_at(rec)),
                "last_unload_reason": rec.last_unload_reason,
                "failures": rec.failures,
                "thrashes": rec.thrashes,
                **self._runtime(rec),
                "worker_pid": rec.worker.pid if rec.worker else None,
                "prepared": rec.spec.present,
                "settings": current,
            }

    @staticmethod
    def _runtime(rec: ModelRecord) -> dict[str, Any]:
        """What runs the loaded model and why (TensorRT engines, or ONNX Runtime and why not
        TensorRT), as its worker reported; the preference alone when not loaded."""
        report = rec.worker.load_report if rec.worker else {}
        return {
            "runtime_preferred": rec.spec.runtime,
            "runtime": report.get("runtime"),
            "runtime_reason": report.get("runtime_reason"),
            "providers": report.get("providers", []),
        }

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(model_id) for model_id in self._records]

    def workers(self) -> list[tuple[ModelRecord, WorkerHandle]]:
        """Each ready model with its worker, read together under the lock (for the monitor)."""
        with self._cond:
            return [(r, r.worker) for r in self._records.values() if r.state is State.READY and r.worker]

    def overrun(self) -> str | None:
        """The lifecycle operation under way if it has run past any bound it should keep (its
        admission's evictions, then the worker's load): the supervisor then stops the watchdog's
        pings and systemd restarts the service."""
        operation = self._operation
        if operation is None:
            return None
        what, since = operation
        bound = self.config.wait_timeout + self.config.load_timeout
        bound += len(self._records) * (self.config.unload_timeout + KILL_GRACE)
        took = self._clock() - since
        return f"{what} under way for {took:.0f} s (bound {bound:.0f} s)" if took > bound else None

    # -- state changes ---------------------------------------------------------------------

    def _transition(self, rec: ModelRecord, to: State, reason: str, event: bool = True, **details: Any) -> None:
        """The one place a state changes: the move checked, the waiters woken and, for a settled
        state, the event recorded (from the settled state the operation started in)."""
        with self._cond:
            origin = rec.move(to, reason)
            self._cond.notify_all()
            if event and to in SETTLED:
                self.events.record(rec.spec.id, origin.value, to.value, reason, **details)

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

    @contextmanager
    def _exclusive(self, what: str, timeout: float) -> Iterator[bool]:
        """Hold the lifecycle lock for ``what``; yields False when it was not free within ``timeout``
        seconds (0: do not wait)."""
        held = self._lifecycle.acquire(timeout=timeout) if timeout > 0 else self._lifecycle.acquire(blocking=False)
        if not held:
            yield False
            return
        self._operation = (what, self._clock())
        try:
            yield True
        finally:
            self._operation = None
            self._lifecycle.release()

    # -- leases ----------------------------------------------------------------------------

    @contextmanager
    def lease(self, model_id: str, keep_alive: float | None = None) -> Iterator[Lease]:
        """Hold ``model_id`` loaded for the duration of a request, loading it if needed.

        ``keep_alive`` (seconds; 0 = unload once idle, negative = never) replaces the model's
        keep-alive setting from the end of this request until the next one, as in Ollama.
        """
        rec = self._record(model_id)
        deadline = self._clock() + self.config.wait_timeout
        with self._cond:
            self._check_open()
            if policy.queue_full(rec, self.config.max_queue):
                raise QueueFull(
                    f"the model {model_id!r} has {rec.queued} requests to serve (max_queue "
                    f"{self.config.max_queue}); try again",
                    retry_after=5,
                )
            rec.waiting += 1
        try:
            worker = self._acquire(rec, deadline)
        except BaseException:
            with self._cond:
                rec.waiting -= 1
                self._cond.notify_all()
            raise
        ok = False
        try:
            yield Lease(self, rec, worker)
            ok = True
        finally:
            with self._cond:
                rec.in_flight -= 1
                rec.last_used = self._clock()
                rec.keep_alive = keep_alive
                if ok:
                    rec.failures, rec.retry_at = 0, 0.0
                self._cond.notify_all()
            self.lease_returned.set()

    def _acquire(self, rec: ModelRecord, deadline: float) -> WorkerHandle:
        """(A waiting request.) The ready worker, loading the model if needed; the request moves
        from waiting to in flight."""
        while True:
            with self._cond:
                worker = self._wait_ready(rec, deadline)
                if worker is not None:
                    rec.waiting -= 1
                    rec.in_flight += 1
                    return worker
            self._load(rec, deadline, "request")

    def _check_open(self) -> None:
        if self._stopping:
            raise ModelUnavailable("the service is stopping", retry_after=10)

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
        wait = rec.retry_at - self._clock()
        if rec.failures >= 2 and wait > 0:
            raise ModelUnavailable(
                f"the model {rec.spec.id!r} failed {rec.failures} times in a row ({rec.reason}); "
                f"next attempt in {wait:.0f} s",
                retry_after=wait,
            )

    # -- loading ---------------------------------------------------------------------------

    def load(self, model_id: str, reason: str = "user") -> dict[str, Any]:
        rec = self._record(model_id)
        deadline = self._clock() + self.config.wait_timeout
        with self._cond:
            ready = self._wait_ready(rec, deadline) is not None
        if not ready:
            self._load(rec, deadline, reason)
        return self.status(model_id)

    def _load(self, rec: ModelRecord, deadline: float, reason: str) -> None:
        if not rec.spec.present:
            raise ModelUnavailable(
                f"the model {rec.spec.id!r} is not prepared (missing {', '.join(rec.spec.missing_files)}); "
                "run `edge-asr models prepare`"
            )
        with self._exclusive(f"load of {rec.spec.id}", deadline - self._clock()) as held:
            if not held:
                raise ModelUnavailable("another model is loading or unloading; try again", retry_after=2)
            with self._cond:
                self._check_open()
                if rec.state not in (State.UNLOADED, State.FAILED):
                    return  # another request loaded it meanwhile
                self._check_backoff(rec)
                thrash = policy.is_thrash(rec, self._clock(), self.config.thrash_window)
                rec.thrashes += thrash
                self._transition(rec, State.LOADING, f"loading ({reason})")
            self._load_worker(rec, deadline, reason, thrash)

    def _load_worker(self, rec: ModelRecord, deadline: float, reason: str, thrash: bool) -> None:
        """(Holding the lifecycle lock, ``rec`` LOADING.) Make room, start the worker, measure."""
        start = self._clock()
        try:
            self._make_room(rec, deadline)
        except InsufficientMemory as e:
            self._transition(rec, rec.origin, e.message, event=False)  # back where it was: nothing happened
            raise
        except BaseException as e:
            self._fail(rec, f"making room failed: {e}")
            raise
        worker = None
        try:
            before = self.memory.measure()
            worker = self._spawn(rec.spec, self.config)
            after = self.memory.measure()
            # What the system lost, or the worker's own size where that says more (GPU memory only
            # shows in the former; a VM that hands pages back lazily hides memory from it).
            footprint = max(before.available_bytes - after.available_bytes, worker.load_report["rss_loaded"])
            with self._cond:
                rec.worker, rec.loaded_at, rec.last_used = worker, self._clock(), self._clock()
                runtime = self._runtime(rec)
                self._transition(
                    rec,
                    State.READY,
                    reason,
                    **self._measured(before, after, start),
                    footprint_bytes=footprint,
                    worker_rss_bytes=worker.load_report["rss_loaded"],
                    worker_pid=worker.pid,
                    runtime=runtime["runtime"],
                    runtime_reason=runtime["runtime_reason"],
                    providers=runtime["providers"],
                    gpu=worker.load_report.get("gpu"),
                    thrash=thrash,
                )
        except BaseException as e:
            message = e.message if isinstance(e, ServiceError) else f"{type(e).__name__}: {e}"
            with self._cond:
                if rec.state is not State.FAILED:
                    self._fail(rec, message)  # drops the worker if it was recorded
            if worker is not None:
                worker.kill()
            if isinstance(e, ServiceError) and not isinstance(e, WorkerCrashed):
                raise ModelLoadFailed(message) from None
            raise
        self.footprints.learn(rec.spec.id, footprint)
        if thrash:
            log.warning(
                "model %s reloaded %.0f s after a pressure hibernation (%d times): memory is too tight",
                rec.spec.id,
                self._clock() - (rec.unloaded_at or 0),
                rec.thrashes,
            )

    def _make_room(self, rec: ModelRecord, deadline: float) -> None:
        """(Holding the lifecycle lock.) Evict idle models until ``rec`` fits, or raise."""
        need = self.footprints.predict(rec.spec)
        while True:
            available = self.memory.measure().available_bytes
            with self._cond:
                resident = [r for r in self._records.values() if r is not rec and r.state is State.READY]
                plan = policy.admit(
                    need,
                    available,
                    self.config.memory_reserve,
                    self.config.memory_budget,
                    resident,
                    self.footprints.known(),
                    self._all_settings(),
                )
                if plan.fits:
                    return
                if plan.victim is not None:
                    self._transition(plan.victim, State.UNLOADING, f"evicted for {rec.spec.id}")
                elif plan.wait and self._clock() < deadline:
                    self._cond.wait(min(1.0, deadline - self._clock()))  # a busy model may become idle
                    continue
                else:
                    raise InsufficientMemory(
                        f"the model {rec.spec.id!r} needs about {need / MB:.0f} MB but only "
                        f"{max(plan.room, 0) / MB:.0f} MB can be made available (missing "
                        f"{(need - plan.room) / MB:.0f} MB; reserve {self.config.memory_reserve / MB:.0f} MB)",
                        retry_after=10,
                    )
            self._unload(plan.victim, f"evicted-for:{rec.spec.id}")

    # -- unloading -------------------------------------------------------------------------

    def unload(self, model_id: str, wait: float | None = None, reason: str = "user") -> dict[str, Any]:
        """Unload ``model_id``. Busy: 409, or with ``wait`` seconds, first drain its requests (no
        new ones start meanwhile), then unload through the same checked path as the supervisor."""
        rec = self._record(model_id)
        with self._cond:
            if rec.state in (State.UNLOADED, State.FAILED):
                return {"model": model_id, "unloaded": False, "state": rec.state.value}
            if rec.state is not State.READY:
                raise ModelBusy(f"the model {model_id!r} is {rec.state.value}; try again", retry_after=1)
            if rec.in_flight and wait is None:
                raise ModelBusy(
                    f"the model {model_id!r} is serving {rec.in_flight} request(s); "
                    "retry later or pass ?wait=SECONDS to wait for them"
                )
            rec.draining = True
        try:
            deadline = self._clock() + min(wait or 0.0, self.config.drain_timeout)
            with self._cond:
                while rec.in_flight and rec.state is State.READY and self._clock() < deadline:
                    self._cond.wait(deadline - self._clock())
                if rec.in_flight:
                    raise ModelBusy(f"the model {model_id!r} is still serving {rec.in_flight} request(s)")
            report = self._unload_if(
                rec, reason, lambda r: r.state is State.READY and not r.in_flight, self.config.wait_timeout
            )
        finally:
            with self._cond:
                rec.draining = False
                self._cond.notify_all()
        if report is None:
            return {"model": model_id, "unloaded": False, "state": self.status(model_id)["state"]}
        return report

    def _unload_if(
        self, rec: ModelRecord, reason: str, still: Callable[[ModelRecord], bool], wait: float
    ) -> dict[str, Any] | None:
        """Unload ``rec`` if ``still(rec)`` holds once the lifecycle lock is held: checked, marked
        UNLOADING and unloaded under that one lock, so a load's admission never counts a model that
        is half gone. The unload's report, or None if ``still`` no longer holds (a request took the
        model meanwhile). The lock is awaited ``wait`` seconds: the supervisor passes 0 and never
        waits behind a load (it may take minutes); a user's unload past it gets a 503."""
        with self._exclusive(f"unload of {rec.spec.id}", wait) as held:
            if not held:
                if wait > 0:
                    raise ModelUnavailable("another model is loading or unloading; try again", retry_after=2)
                return None
            with self._cond:
                if not still(rec):
                    return None
                self._transition(rec, State.UNLOADING, f"unloading ({reason})")
            return self._unload(rec, reason)

    def _unload(self, rec: ModelRecord, reason: str) -> dict[str, Any]:
        """(Holding the lifecycle lock, ``rec`` UNLOADING.) Release the worker and measure."""
        worker = rec.worker
        assert worker is not None
        start = self._clock()
        try:
            before = self.memory.measure()
            report = worker.release(self.config.unload_timeout)
            trim_heap()
            after = self.memory.measure()
        except BaseException as e:
            worker.kill()
            self._fail(rec, f"unload failed: {type(e).__name__}: {e}")
            raise
        reclaimed = after.available_bytes - before.available_bytes
        footprint = max(self.footprints.get(rec.spec.id) or 0, report.get("rss_peak", 0))
        with self._cond:
            rec.drop_worker(reason, self._clock())
            self._transition(
                rec,
                State.UNLOADED,
                reason,
                **self._measured(before, after, start),
                reclaimed_bytes=reclaimed,
                residue_bytes=footprint - reclaimed,
                worker=report,
            )
        self.footprints.learn(rec.spec.id, footprint)
        return {"model": rec.spec.id, "unloaded": True, "reclaimed_bytes": reclaimed, "worker": report}

    def _measured(self, before: MemoryReading, after: MemoryReading, start: float) -> dict[str, Any]:
        return {
            "mem_available_before": before.available_bytes,
            "mem_available_after": after.available_bytes,
            "duration_s": round(self._clock() - start, 3),
        }

    # -- the supervisor's asks -------------------------------------------------------------

    def hibernate_expired(self) -> float | None:
        """Unload the idle models whose keep-alive has run out (reason ``idle``); return when (on
        the manager's clock) the next one runs out, or None if none is counting down. Behind a load
        or unload it does not wait: it returns and is asked again shortly."""
        while True:
            now = self._clock()
            with self._cond:
                timers = [(at, rec) for rec in self._records.values() if (at := self._expires_at(rec)) is not None]
            due = [rec for at, rec in timers if at <= now]
            if not due:
                return min((at for at, _ in timers), default=None)
            if self._unload_if(due[0], "idle", self._expired, wait=0) is None:
                return now + LIFECYCLE_BUSY_RETRY

    def _expired(self, rec: ModelRecord) -> bool:
        at = self._expires_at(rec)
        return at is not None and at <= self._clock()

    def relieve_pressure(self, available: int) -> list[str]:
        """Below the low watermark, hibernate idle models (reason ``pressure``) as
        ``policy.pressure_victims`` orders; behind a load or unload, wait for the next reading."""
        config = self.config
        with self._cond:
            victims = policy.pressure_victims(
                available,
                config.memory_low_watermark,
                config.memory_high_watermark,
                config.memory_reserve,
                config.min_residency,
                self._records.values(),
                self.footprints.known(),
                self._all_settings(),
                self._clock(),
            )
        hibernated: list[str] = []
        for rec in victims:
            if self._unload_if(rec, "pressure", self._evictable, wait=0) is None:
                break
            hibernated.append(rec.spec.id)
        return hibernated

    def _evictable(self, rec: ModelRecord) -> bool:
        return policy.evictable(rec, {rec.spec.id: self.settings(rec.spec.id)})

    def free(self) -> dict[str, Any]:
        """Unload every idle model that is not pinned."""
        wait = self.config.wait_timeout
        reports = [self._unload_if(rec, "free", self._evictable, wait) for rec in self._records.values()]
        done = [report for report in reports if report is not None]
        return {"unloaded": [r["model"] for r in done], "reclaimed_bytes": sum(r["reclaimed_bytes"] for r in done)}

    def shutdown(self) -> None:
        """Refuse new work, release every worker, busy or not (service stop), stop reading memory."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.monitor.stop()
        for rec in self._records.values():
            try:
                self._unload_if(rec, "shutdown", lambda r: r.state is State.READY, self.config.unload_timeout)
            except ModelUnavailable:
                log.warning("model %s: a load still runs at shutdown; its worker ends with the service", rec.spec.id)
        self.memory.stop()


class Lease:
    """A request's hold on a loaded model."""

    def __init__(self, manager: ModelManager, record: ModelRecord, worker: WorkerHandle):
        self._manager, self._record, self._worker = manager, record, worker

    def note(self, reason: str, **details: Any) -> None:
        """Record in the model's events what it found while serving (a detected language)."""
        ready = State.READY.value
        self._manager.events.record(self._record.spec.id, ready, ready, reason, **details)

    def call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self._worker.call(method, **kwargs)
        except WorkerDied as e:
            self._manager.crashed(self._record, self._worker, e.message)
            raise

    def stream(self, method: str, **kwargs: Any) -> Generator[Any, None, Any]:
        try:
            return (yield from self._worker.stream(method, **kwargs))
        except WorkerDied as e:
            self._manager.crashed(self._record, self._worker, e.message)
            raise
