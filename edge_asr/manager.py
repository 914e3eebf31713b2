"""The ModelManager: the one owner of every model's lifecycle state.

HTTP handlers and the supervisor ask it; they never touch workers. A request takes a *lease* on a
model (loading it if needed) and gives it back when done. Loads and unloads happen one at a time
(the lifecycle lock), so the change in available memory around each is the model's own: that is
its footprint, persisted and used to decide whether the next load fits. Before a load that would
leave less than the reserve (or exceed the budget), idle models are evicted — lowest priority
first, then least recently used; pinned models never. Nothing is unloaded under a running
request: an unload of a busy model is refused (409) or waits for its leases to drain.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_sentinels
from typing import Any

from edge_asr import settings as model_settings
from edge_asr.config import Config
from edge_asr.engine.handle import WorkerDied, WorkerHandle
from edge_asr.errors import (
    InsufficientMemory,
    ModelBusy,
    ModelLoadFailed,
    ModelNotFound,
    ModelUnavailable,
    ServiceError,
)
from edge_asr.events import EventLog
from edge_asr.manifest import ModelSpec, load_manifest
from edge_asr.memory import MemoryReading, MemorySource, create_memory_source, trim_heap
from edge_asr.state import StateStore
from edge_asr.units import parse_duration

log = logging.getLogger(__name__)
MB = 10**6
MAX_BACKOFF = 300.0
LIFECYCLE_BUSY_RETRY = 0.25  # seconds before the supervisor tries again behind a load or unload


class State(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass
class ModelRecord:
    spec: ModelSpec
    state: State = State.UNLOADED
    reason: str = "not loaded since start"
    worker: WorkerHandle | None = None
    in_flight: int = 0
    draining: bool = False  # an unload is waiting for the leases to come back: no new ones
    loaded_at: float | None = None
    last_used: float | None = None
    last_unload_reason: str | None = None
    unloaded_at: float | None = None
    thrashes: int = 0  # reloads soon after a pressure hibernation: memory is too tight for the work
    keep_alive: float | None = None  # the last request's keep_alive, overriding the setting until the next
    failures: int = 0  # crashes and failed loads in a row
    retry_at: float = 0.0

    def drop_worker(self, why: str) -> None:
        """(Under the manager's lock.) The worker is gone: unloaded, or crashed."""
        self.worker, self.loaded_at = None, None
        self.last_unload_reason, self.unloaded_at = why, time.time()


class ModelManager:
    def __init__(self, config: Config, memory: MemorySource, store: StateStore, events: EventLog):
        self.config = config
        self.memory = memory
        self.store = store
        self.events = events
        served = [spec for spec in load_manifest(config).values() if spec.task != "vad"]
        self._records = {spec.id: ModelRecord(spec) for spec in served}
        self._footprints = store.footprints()
        self._cond = threading.Condition()
        self._lifecycle = threading.RLock()  # one load or unload at a time
        self._closed = threading.Event()
        self.lease_returned = threading.Event()  # wakes the supervisor: an idle timer may have started
        self._watcher = threading.Thread(target=self._watch_workers, name="edge-asr-worker-watch", daemon=True)
        self._watcher.start()

    @classmethod
    def create(cls, config: Config) -> ModelManager:
        events = EventLog(config.state_dir / "events.jsonl")
        return cls(config, create_memory_source(config), StateStore(config.state_dir), events)

    # -- queries ---------------------------------------------------------------------------

    def _record(self, model_id: str) -> ModelRecord:
        try:
            return self._records[model_id]
        except KeyError:
            raise ModelNotFound(f"the model {model_id!r} does not exist") from None

    def spec(self, model_id: str) -> ModelSpec:
        return self._record(model_id).spec

    def specs(self) -> list[ModelSpec]:
        return [r.spec for r in self._records.values()]

    def settings(self, model_id: str) -> dict[str, Any]:
        spec = self.spec(model_id)
        return model_settings.defaults(spec, self.config.keep_alive) | self.store.settings(model_id)

    def update_settings(self, model_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec(model_id)
        with self._cond:
            self.store.save_settings(model_id, model_settings.merge(spec, self.store.settings(model_id), patch))
        return self.settings(model_id)

    def _expires_at(self, rec: ModelRecord, settings: dict[str, Any]) -> float | None:
        """(Under the lock.) When ``rec`` hibernates if it stays idle; None if it is not idle or
        never does (pinned, or keep_alive negative)."""
        keep_alive = parse_duration(settings["keep_alive"]) if rec.keep_alive is None else rec.keep_alive
        if not self._is_idle(rec) or rec.last_used is None or keep_alive < 0 or settings["pinned"]:
            return None
        return rec.last_used + keep_alive

    def status(self, model_id: str) -> dict[str, Any]:
        rec = self._record(model_id)
        current = self.settings(model_id)
        with self._cond:
            return {
                "id": rec.spec.id,
                "task": rec.spec.task,
                "family": rec.spec.family,
                "state": rec.state.value,
                "reason": rec.reason,
                "in_flight": rec.in_flight,
                "footprint_bytes": self._footprints.get(rec.spec.id),
                "loaded_at": rec.loaded_at,
                "last_used": rec.last_used,
                "expires_at": self._expires_at(rec, current),
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
        """(Under the lock.) What runs the loaded model and why (TensorRT engines, or ONNX Runtime
        and why not TensorRT), as its worker reported; the preference alone when not loaded."""
        report = rec.worker.load_report if rec.worker else {}
        return {
            "runtime_preferred": rec.spec.runtime,
            "runtime": report.get("runtime"),
            "runtime_reason": report.get("runtime_reason"),
            "providers": report.get("providers", []),
        }

    def statuses(self) -> list[dict[str, Any]]:
        return [self.status(model_id) for model_id in self._records]

    # -- leases ----------------------------------------------------------------------------

    @contextmanager
    def lease(self, model_id: str, keep_alive: float | None = None) -> Iterator[Lease]:
        """Hold ``model_id`` loaded for the duration of a request, loading it if needed.

        ``keep_alive`` (seconds; 0 = unload once idle, negative = never) replaces the model's
        keep-alive setting from the end of this request until the next one, as in Ollama.
        """
        rec = self._record(model_id)
        deadline = time.monotonic() + self.config.wait_timeout
        while True:
            with self._cond:
                worker = self._wait_ready(rec, deadline)
                if worker is not None:
                    rec.in_flight += 1
                    break
            self._load(rec, deadline, "request")
        ok = False
        try:
            yield Lease(self, rec, worker)
            ok = True
        finally:
            with self._cond:
                rec.in_flight -= 1
                rec.last_used = time.time()
                rec.keep_alive = keep_alive
                if ok:
                    rec.failures = 0
                self._cond.notify_all()
            self.lease_returned.set()

    def _wait_ready(self, rec: ModelRecord, deadline: float) -> WorkerHandle | None:
        """(Under the lock.) The worker once ``rec`` is ready, or None if the caller must load it."""
        while True:
            if rec.state is State.READY and not rec.draining:
                return rec.worker
            if rec.state in (State.UNLOADED, State.FAILED):
                self._check_backoff(rec)
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ModelUnavailable(f"the model {rec.spec.id!r} is {rec.state.value}; try again", retry_after=1)
            self._cond.wait(remaining)

    def _check_backoff(self, rec: ModelRecord) -> None:
        wait = rec.retry_at - time.time()
        if rec.failures >= 2 and wait > 0:
            raise ModelUnavailable(
                f"the model {rec.spec.id!r} failed {rec.failures} times in a row ({rec.reason}); "
                f"next attempt in {wait:.0f} s",
                retry_after=wait,
            )

    def _crashed(self, rec: ModelRecord, worker: WorkerHandle, reason: str) -> None:
        with self._cond:
            if rec.worker is not worker or rec.state is not State.READY:
                return  # already handled, or the exit of an unload
            worker.kill()
            self._fail(rec, f"crashed: {reason}")
            rec.drop_worker("crashed")
            self._cond.notify_all()
        self.events.record(rec.spec.id, State.READY.value, State.FAILED.value, f"crashed: {reason}")

    def _fail(self, rec: ModelRecord, reason: str) -> None:
        rec.state, rec.reason = State.FAILED, reason
        rec.failures += 1
        if rec.failures >= 2:
            rec.retry_at = time.time() + min(MAX_BACKOFF, self.config.failure_backoff * 2 ** (rec.failures - 2))

    def _watch_workers(self) -> None:
        """Notice a worker that dies while idle (a request in flight notices its own)."""
        while not self._closed.is_set():
            with self._cond:
                watched = {r.worker.sentinel: r for r in self._records.values() if r.state is State.READY and r.worker}
            if not watched:
                self._closed.wait(0.5)
                continue
            for sentinel in wait_for_sentinels(list(watched), timeout=0.5):
                rec = watched[sentinel]
                worker = rec.worker
                if worker is not None and not worker.alive():
                    self._crashed(rec, worker, worker.exit_description())

    # -- loading ---------------------------------------------------------------------------

    def load(self, model_id: str, reason: str = "user") -> dict[str, Any]:
        rec = self._record(model_id)
        deadline = time.monotonic() + self.config.wait_timeout
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
        if not self._lifecycle.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise ModelUnavailable("another model is loading or unloading; try again", retry_after=2)
        try:
            with self._cond:
                if rec.state not in (State.UNLOADED, State.FAILED):
                    return  # another request loaded it meanwhile
                self._check_backoff(rec)
                previous, rec.state, rec.reason = rec.state, State.LOADING, f"loading ({reason})"
                thrash = (
                    rec.last_unload_reason == "pressure"
                    and rec.unloaded_at is not None
                    and time.time() - rec.unloaded_at < self.config.thrash_window
                )
                if thrash:
                    rec.thrashes += 1
                self._cond.notify_all()
            start = time.monotonic()
            try:
                self._admit(rec, deadline)
                before = self.memory.measure()
                worker = WorkerHandle(rec.spec, self.config)
                after = self.memory.measure()
            except InsufficientMemory as e:
                with self._cond:
                    rec.state, rec.reason = previous, e.message
                    self._cond.notify_all()
                raise
            except ServiceError as e:
                with self._cond:
                    self._fail(rec, e.message)
                    self._cond.notify_all()
                self.events.record(rec.spec.id, State.LOADING.value, State.FAILED.value, e.message)
                raise ModelLoadFailed(e.message) from None
            # What the system lost, or the worker's own size where that says more (GPU memory only
            # shows in the former; a VM that hands pages back lazily hides memory from it).
            footprint = max(before.available_bytes - after.available_bytes, worker.load_report["rss_loaded"])
            # Admission keeps the peak a served request reached (learnt at unloads): an idle worker
            # holds on to it (Whisper tiny loads at 332 MB, idles at 564 MB after a 44-s clip).
            self._remember_footprint(rec.spec.id, max(footprint, self._footprints.get(rec.spec.id, 0)))
            with self._cond:
                rec.state, rec.reason, rec.worker = State.READY, f"loaded ({reason})", worker
                rec.loaded_at = rec.last_used = time.time()
                runtime = self._runtime(rec)
                self._cond.notify_all()
            self._record_transition(
                rec,
                previous,
                State.READY,
                reason,
                before,
                after,
                start,
                footprint_bytes=footprint,
                worker_rss_bytes=worker.load_report["rss_loaded"],
                worker_pid=worker.pid,
                runtime=runtime["runtime"],
                runtime_reason=runtime["runtime_reason"],
                providers=runtime["providers"],
                gpu=worker.load_report.get("gpu"),
                thrash=thrash,
            )
            if thrash:
                log.warning(
                    "model %s reloaded %.0f s after a pressure hibernation (%d times): memory is too tight",
                    rec.spec.id,
                    time.time() - (rec.unloaded_at or 0),
                    rec.thrashes,
                )
        finally:
            self._lifecycle.release()

    def _remember_footprint(self, model_id: str, footprint: int) -> None:
        self._footprints[model_id] = footprint
        self.store.save_footprint(model_id, footprint)

    def _predicted_footprint(self, spec: ModelSpec) -> int:
        """The last measured footprint or, before any load, 3x the model's files (weights, runtime
        arenas and a request's working memory: at their peak on ONNX Runtime CPU, Whisper tiny
        measured 2.6x (595 MB for 233 MB of files), SmolLM2-135M 2.8x)."""
        if spec.id in self._footprints:
            return self._footprints[spec.id]
        return 3 * sum((spec.directory / f).stat().st_size for f in spec.files)

    def _admit(self, rec: ModelRecord, deadline: float) -> None:
        """(Holding the lifecycle lock.) Evict idle models until ``rec`` fits, or raise."""
        need = self._predicted_footprint(rec.spec)
        while True:
            available = self.memory.measure().available_bytes
            with self._cond:
                resident = [r for r in self._records.values() if r is not rec and r.state is State.READY]
                room = available - self.config.memory_reserve
                if self.config.memory_budget:
                    used = sum(self._footprints.get(r.spec.id, 0) for r in resident)
                    room = min(room, self.config.memory_budget - used)
                if need <= room:
                    return
                evictable = [r for r in resident if not self.settings(r.spec.id)["pinned"]]
                idle = [r for r in evictable if r.in_flight == 0]
                if idle:
                    victim = self._least_wanted(idle)
                    victim.state, victim.reason = State.UNLOADING, f"evicted for {rec.spec.id}"
                elif any(r.in_flight for r in evictable) and time.monotonic() < deadline:
                    self._cond.wait(min(1.0, deadline - time.monotonic()))  # a busy model may become idle
                    continue
                else:
                    raise InsufficientMemory(
                        f"the model {rec.spec.id!r} needs about {need / MB:.0f} MB but only {max(room, 0) / MB:.0f} MB "
                        f"can be made available (missing {(need - room) / MB:.0f} MB; reserve "
                        f"{self.config.memory_reserve / MB:.0f} MB)",
                        retry_after=10,
                    )
            self._unload(victim, f"evicted-for:{rec.spec.id}")

    # -- unloading -------------------------------------------------------------------------

    def unload(self, model_id: str, wait: float | None = None, reason: str = "user") -> dict[str, Any]:
        """Unload ``model_id``. Busy: 409, or with ``wait`` seconds, wait for its requests to end."""
        rec = self._record(model_id)
        with self._cond:
            if rec.state in (State.UNLOADED, State.FAILED):
                return {"model": model_id, "unloaded": False, "state": rec.state.value}
            if rec.state is not State.READY:
                raise ModelBusy(f"the model {model_id!r} is {rec.state.value}; try again", retry_after=1)
            if rec.in_flight:
                if wait is None:
                    raise ModelBusy(
                        f"the model {model_id!r} is serving {rec.in_flight} request(s); "
                        "retry later or pass ?wait=SECONDS to wait for them"
                    )
                rec.draining = True
                deadline = time.monotonic() + min(wait, self.config.drain_timeout)
                while rec.in_flight and rec.state is State.READY and time.monotonic() < deadline:
                    self._cond.wait(deadline - time.monotonic())
                rec.draining = False
                self._cond.notify_all()
                if rec.state is not State.READY:
                    return {"model": model_id, "unloaded": False, "state": rec.state.value}
                if rec.in_flight:
                    raise ModelBusy(f"the model {model_id!r} is still serving {rec.in_flight} request(s)")
            rec.state, rec.reason = State.UNLOADING, f"unloading ({reason})"
        with self._lifecycle:
            return self._unload(rec, reason)

    def _unload(self, rec: ModelRecord, reason: str) -> dict[str, Any]:
        """(Holding the lifecycle lock, ``rec`` marked UNLOADING.) Release the worker and measure."""
        worker = rec.worker
        assert worker is not None
        before = self.memory.measure()
        start = time.monotonic()
        report = worker.release(self.config.unload_timeout)
        trim_heap()
        after = self.memory.measure()
        reclaimed = after.available_bytes - before.available_bytes
        footprint = max(self._footprints.get(rec.spec.id, 0), report.get("rss_peak", 0))
        self._remember_footprint(rec.spec.id, footprint)
        with self._cond:
            rec.state, rec.reason = State.UNLOADED, f"unloaded ({reason})"
            rec.drop_worker(reason)
            self._cond.notify_all()
        self._record_transition(
            rec,
            State.READY,
            State.UNLOADED,
            reason,
            before,
            after,
            start,
            reclaimed_bytes=reclaimed,
            residue_bytes=footprint - reclaimed,
            worker=report,
        )
        return {"model": rec.spec.id, "unloaded": True, "reclaimed_bytes": reclaimed, "worker": report}

    def _record_transition(
        self,
        rec: ModelRecord,
        from_state: State,
        to_state: State,
        reason: str,
        before: MemoryReading,
        after: MemoryReading,
        start: float,
        **details: Any,
    ) -> None:
        self.events.record(
            rec.spec.id,
            from_state.value,
            to_state.value,
            reason,
            mem_available_before=before.available_bytes,
            mem_available_after=after.available_bytes,
            duration_s=round(time.monotonic() - start, 3),
            **details,
        )

    def hibernate_expired(self) -> float | None:
        """Unload the idle models whose keep-alive has run out (reason ``idle``); return when the
        next one runs out, or None if no model is counting down. While a load or unload is under
        way (a load may take minutes) it does not wait: it returns and is asked again shortly."""
        while True:
            with self._cond:
                timers = [
                    (at, rec)
                    for rec in self._records.values()
                    if (at := self._expires_at(rec, self.settings(rec.spec.id))) is not None
                ]
            due = [rec for at, rec in timers if at <= time.time()]
            if not due:
                return min((at for at, _ in timers), default=None)
            if self._unload_if(due[0], "idle", self._expired, wait=False) is None:
                return time.time() + LIFECYCLE_BUSY_RETRY

    def relieve_pressure(self, available: int) -> list[str]:
        """Below the low watermark, hibernate idle models (lowest priority, then least recently
        used; reason ``pressure``) until their footprints bring ``available`` to the high watermark.
        Busy, pinned and freshly loaded (under ``min_residency``) models stay; while a load or
        unload is under way, it waits for the next reading."""
        hibernated: list[str] = []
        if available >= self.config.memory_low_watermark:
            return hibernated
        while available < self.config.memory_high_watermark:
            with self._cond:
                idle = [r for r in self._records.values() if self._pressure_evictable(r)]
            if not idle:
                break
            rec = self._least_wanted(idle)
            if self._unload_if(rec, "pressure", self._pressure_evictable, wait=False) is None:
                break
            available += self._footprints.get(rec.spec.id, 0)
            hibernated.append(rec.spec.id)
        return hibernated

    @staticmethod
    def _is_idle(rec: ModelRecord) -> bool:
        return rec.state is State.READY and not rec.in_flight and not rec.draining

    def _least_wanted(self, candidates: list[ModelRecord]) -> ModelRecord:
        """The model to unload first: lowest priority, then least recently used."""
        return min(candidates, key=lambda r: (self.settings(r.spec.id)["priority"], r.last_used or 0))

    def _expired(self, rec: ModelRecord) -> bool:
        at = self._expires_at(rec, self.settings(rec.spec.id))
        return at is not None and at <= time.time()

    def _pressure_evictable(self, rec: ModelRecord) -> bool:
        settled = (rec.loaded_at or 0) <= time.time() - self.config.min_residency
        return self._is_idle(rec) and not self.settings(rec.spec.id)["pinned"] and settled

    def _unload_if(
        self, rec: ModelRecord, reason: str, still: Callable[[ModelRecord], bool], wait: bool = True
    ) -> dict[str, Any] | None:
        """Unload ``rec`` if ``still(rec)`` holds once the lifecycle lock is held: checked, marked
        UNLOADING and unloaded under that one lock, so a load's admission never counts a model that
        is half gone. The unload's report, or None if ``still`` no longer holds (a request took the
        model meanwhile) or, with ``wait=False``, a load or unload holds the lock: the supervisor
        never waits behind one (a load may take minutes)."""
        if not self._lifecycle.acquire(blocking=wait):
            return None
        try:
            with self._cond:
                if not still(rec):
                    return None
                rec.state, rec.reason = State.UNLOADING, f"unloading ({reason})"
            return self._unload(rec, reason)
        finally:
            self._lifecycle.release()

    def kill_stalled(self) -> list[str]:
        """Kill the workers that have said nothing for ``stall_timeout`` in the middle of a request
        (hung, not dead): their requests fail with 503 and the next request loads the model again."""
        with self._cond:
            stalled = [
                r
                for r in self._records.values()
                if r.state is State.READY and r.worker and r.worker.silent_for() > self.config.stall_timeout
            ]
        for rec in stalled:
            assert rec.worker is not None
            log.error(
                "model %s: no answer from its worker for %.0f s mid-request; killing it",
                rec.spec.id,
                rec.worker.silent_for(),
            )
            rec.worker.abort(f"stalled: no answer for {self.config.stall_timeout:.0f} s mid-request")
        return [r.spec.id for r in stalled]

    def free(self) -> dict[str, Any]:
        """Unload every idle model that is not pinned."""
        reports = [self._unload_if(rec, "free", self._freeable) for rec in self._records.values()]
        done = [report for report in reports if report is not None]
        return {"unloaded": [r["model"] for r in done], "reclaimed_bytes": sum(r["reclaimed_bytes"] for r in done)}

    def _freeable(self, rec: ModelRecord) -> bool:
        return rec.state is State.READY and not rec.in_flight and not self.settings(rec.spec.id)["pinned"]

    def shutdown(self) -> None:
        """Release every worker, busy or not (service stop), and stop reading memory."""
        self._closed.set()
        for rec in self._records.values():
            self._unload_if(rec, "shutdown", lambda r: r.state is State.READY and r.worker is not None)
        self.memory.stop()


class Lease:
    """A request's hold on a loaded model."""

    def __init__(self, manager: ModelManager, record: ModelRecord, worker: WorkerHandle):
        self._manager, self._record, self._worker = manager, record, worker

    @property
    def settings(self) -> dict[str, Any]:
        return self._manager.settings(self._record.spec.id)

    def call(self, method: str, **kwargs: Any) -> Any:
        try:
            return self._worker.call(method, **kwargs)
        except WorkerDied as e:
            self._manager._crashed(self._record, self._worker, e.message)
            raise

    def stream(self, method: str, **kwargs: Any) -> Generator[Any, None, Any]:
        try:
            return (yield from self._worker.stream(method, **kwargs))
        except WorkerDied as e:
            self._manager._crashed(self._record, self._worker, e.message)
            raise
