"""The ModelManager: the one owner of every model's lifecycle. It extends the ``ModelRegistry``
(the records, their lock, every state change) with the operations.

HTTP handlers and the supervisor ask it; they never touch workers. A request takes a *lease* on a
model (loading it if needed) and gives it back when done. Loads and unloads happen one at a time
(the lifecycle lock), so the change in available memory around each is the model's own: that is
its footprint, persisted and used to decide whether the next load fits. Before a load that would
leave less than the reserve (or exceed the budget), idle models are evicted (``policy.admit``).
Nothing is unloaded under a running request.

Every load and unload path is exception-safe: whatever fails, the worker is killed and the model
ends ``failed`` with the reason, never left ``loading`` or ``unloading``. Disk writes (events,
footprints) happen once the state is consistent and a failing one is logged, not raised. Every
wait is bounded, every deadline on the monotonic ``clock``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from edge_asr.config import Config
from edge_asr.errors import (
    InsufficientMemory,
    ModelBusy,
    ModelLoadFailed,
    ModelUnavailable,
    QueueFull,
    ServiceError,
    WorkerCrashed,
)
from edge_asr.events import EventLog
from edge_asr.lifecycle import policy, residue
from edge_asr.lifecycle.footprints import gpu_bytes, held_footprint, load_footprint, peak_footprint
from edge_asr.lifecycle.lease import Lease
from edge_asr.lifecycle.monitor import Monitor
from edge_asr.lifecycle.operation import OperationLock
from edge_asr.lifecycle.records import ModelRecord, State
from edge_asr.lifecycle.registry import ModelRegistry
from edge_asr.lifecycle.status import runtime_of
from edge_asr.loops import LoopErrors
from edge_asr.manifest import ModelSpec
from edge_asr.memory import MemoryReading, MemorySource, create_memory_source, trim_heap
from edge_asr.state import StateStore
from edge_asr.units import format_size
from edge_asr.workers.handle import WorkerDied, WorkerHandle
from edge_asr.workers.processes import KILL_GRACE
from edge_asr.workers.spare import Spare

log = logging.getLogger(__name__)
LIFECYCLE_BUSY_RETRY = 0.25  # seconds before the supervisor tries again behind a load or unload
SPARE_PREDICTED = 150 * 10**6  # a spare worker's footprint until one reports its own (bench/RESULTS.md)
PREFETCH_NICE = 10  # a prefetch loads in the CPU time the running step leaves over
QUEUE_RETRY = 5.0  # seconds a client refused by a full queue waits, before the worker has a time per request
Spawn = Callable[[ModelSpec, Config, Spare | None, int], WorkerHandle]


class ModelManager(ModelRegistry):
    def __init__(
        self,
        config: Config,
        memory: MemorySource,
        store: StateStore,
        events: EventLog,
        spawn: Spawn = WorkerHandle,
        clock: Callable[[], float] = time.monotonic,
        make_spare: Callable[[Config], Spare] = Spare,
    ):
        super().__init__(config, memory, store, events, clock)
        self._spawn = spawn
        self._make_spare = make_spare
        self._spare: Spare | None = None  # under the lifecycle lock, like every worker's start and end
        self._spare_footprint = SPARE_PREDICTED  # the last spare's own figure once one reported
        self._spare_failures, self._spare_retry_at = 0, 0.0  # spares that died or could not start, in a row
        self._operations = OperationLock(clock)  # one load or unload at a time
        self.lease_returned = threading.Event()  # wakes the supervisor: an idle timer may have started
        self._monitor = Monitor(self.workers, self.crashed, config.stall_timeout)

    @classmethod
    def create(cls, config: Config) -> ModelManager:
        events = EventLog(config.state_dir / "events.jsonl")
        return cls(config, create_memory_source(config), StateStore(config.state_dir), events)

    def kill_stalled(self) -> list[str]:
        """Kill the workers silent for ``stall_timeout`` mid-request; the ids of their models."""
        return self._monitor.kill_stalled()

    def loops(self) -> list[LoopErrors]:
        """The failed iterations of the threads the manager runs (the monitor, the memory source's)."""
        return [self._monitor.errors, *self._memory.loops()]

    def overrun(self) -> str | None:
        """The lifecycle operation under way if it has run past any bound it should keep (its
        admission's evictions, then the worker's load): the supervisor then stops the watchdog's
        pings and systemd restarts the service."""
        config = self.config
        evictions = len(self._records) * (config.unload_timeout + KILL_GRACE)
        return self._operations.overrun(config.wait_timeout + config.load_timeout + evictions)

    # -- leases ----------------------------------------------------------------------------

    @contextmanager
    def lease(self, model_id: str, keep_alive: float | None = None, reason: str = "request") -> Iterator[Lease]:
        """Hold ``model_id`` loaded for the duration of a request, loading it if needed (the
        load's ``reason``: says which protocol's request it was, when not HTTP's).

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
                    retry_after=policy.expected_wait(rec, _turn_s(rec)) or QUEUE_RETRY,
                )
            rec.waiting += 1
        try:
            worker = self._acquire(rec, deadline, reason)
        except BaseException:
            with self._cond:
                rec.waiting -= 1
                self._cond.notify_all()
            raise
        with self._held(rec, worker, keep_alive) as lease:
            yield lease

    @contextmanager
    def idle_lease(self, model_id: str) -> Iterator[Lease | None]:
        """A lease on ``model_id`` only if it is ready and idle now (nothing in flight or
        waiting), else None: for work that should not hold up requests or load a model (live
        transcription's partial decodes; a request that comes meanwhile waits for the one
        under way only). The model's keep-alive is left as it was."""
        rec = self._record(model_id)
        with self._cond:
            idle = rec.state is State.READY and not rec.draining and rec.in_flight == rec.waiting == 0
            worker = rec.worker if idle and not self._stopping else None
            if worker is not None:
                rec.in_flight += 1
        if worker is None:
            yield None
            return
        with self._held(rec, worker, None, sets_keep_alive=False) as lease:
            yield lease

    @contextmanager
    def _held(
        self, rec: ModelRecord, worker: WorkerHandle, keep_alive: float | None, sets_keep_alive: bool = True
    ) -> Iterator[Lease]:
        """(A request in flight on ``worker``.) Its lease; when it ends, the model is idle again,
        with the request's ``keep_alive`` (unless it ``sets_keep_alive`` not)."""
        ok = False
        try:
            yield Lease(rec.spec.id, worker, partial(self._note, rec), partial(self.crashed, rec))
            ok = True
        finally:
            with self._cond:
                rec.in_flight -= 1
                rec.last_used = self._clock()
                if sets_keep_alive:
                    rec.keep_alive = keep_alive
                if ok:
                    rec.failures, rec.retry_at = 0, 0.0
                self._cond.notify_all()
            self.lease_returned.set()

    def _acquire(self, rec: ModelRecord, deadline: float, reason: str) -> WorkerHandle:
        """(A waiting request.) The ready worker, loading the model if needed; the request moves
        from waiting to in flight."""
        while True:
            with self._cond:
                worker = self._wait_ready(rec, deadline)
                if worker is not None:
                    rec.waiting -= 1
                    rec.in_flight += 1
                    return worker
            self._load(rec, deadline, reason)

    # -- loading ---------------------------------------------------------------------------

    def load(self, model_id: str, reason: str = "user") -> dict[str, Any]:
        rec = self._record(model_id)
        deadline = self._clock() + self.config.wait_timeout
        with self._cond:
            ready = self._wait_ready(rec, deadline) is not None
        if not ready:
            self._load(rec, deadline, reason)
        return self.status(model_id)

    def prefetch(self, model_ids: list[str]) -> None:
        """Start loading ``model_ids`` (a request's next stages, in order) in a thread of their own,
        each only if it fits beside what is loaded now, evicting nothing (by the footprints,
        ``memory_budget`` and ``memory_reserve``): the request finds it loading or ready instead of
        waiting for the stage before to end. What does not fit is left alone. Off with ``prefetch``."""
        if not self.config.prefetch or self._stopping:
            return
        with self._cond:  # not a model that failed (its retry is a request's), nor one that would expire at once
            todo = [m for m in model_ids if self._record(m).state is State.UNLOADED and self._keeps(self._record(m))]
        if todo:
            threading.Thread(target=self._prefetch, args=(todo,), name="edge-asr-prefetch", daemon=True).start()

    def _prefetch(self, model_ids: list[str]) -> None:
        for model_id in model_ids:
            try:
                self._load(self._record(model_id), self._clock() + self.config.wait_timeout, "prefetch", prefetch=True)
            except Exception as e:  # the request's own lease loads it, or says why not
                log.info("no prefetch of %s: %s", model_id, e.message if isinstance(e, ServiceError) else repr(e))
                return  # the stages after it would not fit either

    def _load(self, rec: ModelRecord, deadline: float, reason: str, prefetch: bool = False) -> None:
        if not rec.spec.present:
            raise ModelUnavailable(
                f"the model {rec.spec.id!r} is not prepared (missing {', '.join(rec.spec.missing_files)}); "
                "run `edge-asr models prepare`"
            )
        with self._operations.hold(f"load of {rec.spec.id}", deadline - self._clock()) as held:
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
            self._load_worker(rec, deadline, reason, thrash, prefetch)

    def _load_worker(self, rec: ModelRecord, deadline: float, reason: str, thrash: bool, prefetch: bool) -> None:
        """(Holding the lifecycle lock, ``rec`` LOADING.) Make room, start the worker, measure. A
        ``prefetch`` evicts nothing (it fits as things are, or is refused) and loads at low CPU
        priority (``PREFETCH_NICE``), so the step that runs meanwhile keeps its cores."""
        start = self._clock()
        try:
            self._make_room(rec, deadline, evict=not prefetch)
        except InsufficientMemory as e:
            self._transition(rec, rec.origin, e.message, event=False)  # back where it was: nothing happened
            raise
        except BaseException as e:
            self._fail(rec, f"making room failed: {e}")
            raise
        worker = None
        try:
            before = self._memory.measure()
            worker = self._start_worker(rec, PREFETCH_NICE if prefetch else 0)
            after = self._memory.measure()
            worker.load_report["gpu_bytes"] = gpu_bytes(
                worker.load_report, before.available_bytes - after.available_bytes
            )
            footprint = load_footprint(worker.load_report)  # the worker's own figure (``footprints``)
            with self._cond:
                rec.worker, rec.loaded_at, rec.last_used = worker, self._clock(), self._clock()
                runtime = {k: v for k, v in runtime_of(rec).items() if k != "runtime_preferred"}
                self._transition(
                    rec,
                    State.READY,
                    reason,
                    **self._measured(before, after, start),
                    footprint_bytes=footprint,
                    worker_rss_bytes=worker.load_report["rss_loaded"],
                    worker_load_s=worker.load_report.get("load_s"),
                    worker_pid=worker.pid,
                    **runtime,
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
        self.footprints.loaded(rec.spec.id, footprint)
        if thrash:
            log.warning(
                "model %s reloaded %.0f s after a pressure hibernation (%d times): memory is too tight",
                rec.spec.id,
                self._clock() - (rec.unloaded_at or 0),
                rec.thrashes,
            )

    def _make_room(self, rec: ModelRecord, deadline: float, evict: bool = True) -> None:
        """(Holding the lifecycle lock.) Evict idle models until ``rec`` fits, or raise; without
        ``evict``, raise unless it fits now."""
        need = self.footprints.predict(rec.spec)
        while True:
            available = self._memory.measure().available_bytes
            with self._cond:
                plan = self._admission(rec, need, available)
                if plan.fits:
                    return
                if not evict:
                    raise InsufficientMemory(f"the model {rec.spec.id!r} does not fit beside the models loaded")
                if plan.victim is not None:
                    self._transition(plan.victim, State.UNLOADING, f"evicted for {rec.spec.id}")
                elif plan.wait and self._clock() < deadline:
                    self._cond.wait(min(1.0, deadline - self._clock()))  # a busy model may become idle
                    continue
                else:
                    raise InsufficientMemory(
                        f"the model {rec.spec.id!r} needs about {format_size(need)} but only "
                        f"{format_size(max(plan.room, 0))} can be made available (missing "
                        f"{format_size(need - plan.room)}; reserve {format_size(self.config.memory_reserve)})",
                        retry_after=10,
                    )
            self._unload(plan.victim, f"evicted-for:{rec.spec.id}")

    def _admission(self, rec: ModelRecord | None, need: int, available: int) -> policy.Admission:
        """(Under the lock.) What loading ``rec`` (``need`` bytes; None: nothing) would have to do
        first, ``available`` bytes being free now."""
        if self._spare is not None and self._spare.report:  # its memory becomes the loaded model's worker's
            available += self._spare_footprint
        resident = [r for r in self._records.values() if r is not rec and r.state is State.READY]
        measured = rec is None or self.footprints.measured(rec.spec.id)
        known, settings = self.footprints.known(), self._all_settings()
        budget, reserve = self.config.memory_budget, self.config.memory_reserve
        return policy.admit(need, available, reserve, budget, resident, known, settings, measured=measured)

    # -- readiness -------------------------------------------------------------------------

    def readiness(self, model_id: str | None = None) -> tuple[dict[str, Any], policy.Refusal | None]:
        """Whether the unit, or ``model_id`` on it, takes one more request now (``/readyz``, for a
        router): the facts (``ready``, the queue, the memory), and why not (``policy.refusal``).
        Memory is asked about only where a request would need room: for a model not loaded nor
        loading, or for the unit when nothing is (else its models serve what comes)."""
        rec = self._record(model_id) if model_id else None
        available = self._memory.measure().available_bytes
        with self._cond:
            present = [r for r in ([rec] if rec else self._records.values()) if r.state in (State.READY, State.LOADING)]
            need = self.footprints.predict(rec.spec) if rec is not None else 0
            admission = None if present else self._admission(rec, need, available)
            turn_s = _turn_s(rec) if rec is not None else None
            draining = self._drained_at is not None
            now, max_queue = self._clock(), self.config.max_queue
            refused = policy.refusal(self._stopping, draining, rec, max_queue, admission, now, turn_s)
            facts: dict[str, Any] = {"ready": refused is None, "draining": draining}
            facts["available_bytes"], facts["reserve_bytes"] = available, self.config.memory_reserve
            if rec is not None:
                facts |= {"model": rec.spec.id, "state": rec.state.value, "queued": rec.queued}
                facts |= {"max_queue": max_queue, "expected_wait_s": round(policy.expected_wait(rec, turn_s), 3)}
            else:
                facts["queued"] = self.queued()
        return facts, refused

    def drain(self, on: bool) -> None:
        """Drained (``on``), the unit says so to routers' health checks at once (``readiness``),
        serves new requests for ``drain_grace`` more (while the checks notice), then refuses them
        (``refuses_requests``: the front's 503 ``draining``, which a router retries on another
        unit, and one without health checks learns from); what it has, it finishes. So it can be
        upgraded or stopped without failing a request (docs/fleet.md)."""
        with self._cond:
            if not on:
                self._drained_at = None
            elif self._drained_at is None:
                self._drained_at = self._clock()

    @property
    def drained(self) -> bool:
        return self._drained_at is not None

    def refuses_requests(self) -> bool:
        """Drained, and its grace over: a new request is refused (``drain``)."""
        with self._cond:
            return policy.drain_refuses(self._drained_at, self._clock(), self.config.drain_grace)

    def queued(self) -> int:
        """Requests the models have accepted and not yet answered, all together."""
        with self._cond:
            return sum(r.queued for r in self._records.values())

    # -- the spare worker ------------------------------------------------------------------

    def keep_spare(self) -> None:
        """(The supervisor, each tick.) Start a spare worker (``workers.spare``) when there is none,
        or it died, and it fits (``policy.spare_fits``); note when its imports are done. Behind a
        load or unload it does not wait: the next tick looks again. A spare that dies, or cannot
        start, is tried again after a back-off (``policy.backoff_until``), never every tick."""
        if not self.config.spare_worker or self._clock() < self._spare_retry_at:
            return
        with self._operations.hold("spare worker", 0) as held:
            if not held or self._stopping:
                return
            spare = self._spare
            if spare is not None and spare.alive():
                if spare.report is None and spare.poll():
                    self._spare_footprint, self._spare_failures = spare.report["rss"], 0
                    log.info("spare worker %s ready (%s)", spare.pid, format_size(self._spare_footprint))
                return
            if spare is not None:
                self._spare_failed(f"the spare worker {spare.pid} died")
                return
            available = self._memory.read().available_bytes  # the supervisor's figure, as pressure reads it
            with self._cond:
                resident = [self.footprints.get(r.spec.id) or 0 for r in self._records.values() if r.worker]
                busy = any(r.queued for r in self._records.values())
            config = self.config
            if busy or not policy.spare_fits(  # busy: its start would take cores from a request
                available, config.memory_high_watermark, config.memory_budget, resident, self._spare_footprint
            ):
                return
            try:
                self._spare = self._make_spare(config)
            except Exception as e:  # out of processes or descriptors: the models still load without it
                self._spare_failed(f"the spare worker could not start ({type(e).__name__}: {e})")
            else:
                self.moves += 1

    def _spare_failed(self, what: str) -> None:
        """(Holding the lifecycle lock.) Drop the spare; the next one after a back-off."""
        self._drop_spare()
        self._spare_failures += 1
        self._spare_retry_at = policy.backoff_until(
            self._spare_failures + 1, self.config.failure_backoff, self._clock()
        )
        log.warning("%s; the next one in %.0f s", what, self._spare_retry_at - self._clock())

    def spare_status(self) -> dict[str, Any]:
        """The spare worker as the API shows it."""
        spare = self._spare
        report = spare.report if spare else None
        return {
            "enabled": self.config.spare_worker,
            "pid": spare.pid if spare else None,
            "ready": report is not None,
            "footprint_bytes": self._spare_footprint,
        }

    def _start_worker(self, rec: ModelRecord, nice: int) -> WorkerHandle:
        """(Holding the lifecycle lock, for a load.) ``rec``'s worker: the spare handed its model if
        a live one is there, else a new process; a spare that dies taking it (a runtime that breaks
        its imports) costs the load nothing but the time."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.alive():
            try:
                return self._spawn(rec.spec, self.config, spare, nice)
            except WorkerDied as e:
                self._spare_failed(f"the spare worker died taking {rec.spec.id} ({e.message})")
        elif spare is not None:
            spare.release()
        return self._spawn(rec.spec, self.config, None, nice)

    def _drop_spare(self) -> None:
        """(Holding the lifecycle lock.) End the spare unused."""
        spare, self._spare = self._spare, None
        if spare is not None:
            spare.release()
            self.moves += 1

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
        with self._operations.hold(f"unload of {rec.spec.id}", wait) as held:
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
            before = self._memory.measure()
            report = worker.release(self.config.unload_timeout)
            trim_heap()
            held = held_footprint(worker.load_report, report) or self.footprints.get(rec.spec.id) or 0
            after = self._memory.measure()
        except BaseException as e:
            worker.kill()
            self._fail(rec, f"unload failed: {type(e).__name__}: {e}")
            raise
        reclaimed = after.available_bytes - before.available_bytes
        with self._cond:
            rec.drop_worker(reason, self._clock())
            self._transition(
                rec,
                State.UNLOADED,
                reason,
                **self._measured(before, after, start),
                reclaimed_bytes=reclaimed,
                worker=report,
            )
        self._judge_residue(rec.spec.id, before, held)
        if (peak := peak_footprint(worker.load_report, report)) is not None:
            self.footprints.released(rec.spec.id, peak)
        return {"model": rec.spec.id, "unloaded": True, "reclaimed_bytes": reclaimed, "worker": report}

    def _judge_residue(self, model_id: str, before: MemoryReading, held: int) -> None:
        """Follow the memory reading after an unload in a thread of its own until it settles, then
        record what did not come back (``residue``) in a ``memory settled`` event."""
        if self._stopping:
            return  # nothing is judged on the way out
        moves = self.moves

        def judge() -> None:
            try:
                settled = residue.settle(
                    lambda: self._memory.measure().available_bytes,
                    before.available_bytes,
                    held,
                    lambda: self.moves != moves,
                )
            except Exception:  # a reading that fails: no judgement, logged
                log.exception("model %s: its residue could not be judged", model_id)
                return
            if settled is None:
                log.debug("model %s: another move came before memory settled; residue not judged", model_id)
                return
            reclaimed, took = settled
            self._events.record(
                model_id,
                "unloaded",
                "unloaded",
                "memory settled",
                reclaimed_bytes=reclaimed,
                residue_bytes=held - reclaimed,
                settle_s=took,
                held_bytes=held,
            )

        threading.Thread(target=judge, name=f"edge-asr-residue-{model_id}", daemon=True).start()

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

    def relieve_pressure(self, available: int) -> list[str]:
        """Below the low watermark, give up the spare worker first, then hibernate idle models
        (reason ``pressure``) as ``policy.pressure_victims`` orders; behind a load or unload, wait
        for the next reading."""
        config = self.config
        if available < config.memory_low_watermark and self._spare is not None:
            with self._operations.hold("spare worker", 0) as held:
                if held and self._spare is not None:
                    log.warning("memory pressure: %s available; the spare worker goes first", format_size(available))
                    self._drop_spare()
                    available += self._spare_footprint  # what it gave back, before any model goes
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

    def free(self) -> dict[str, Any]:
        """Unload every idle model that is not pinned."""
        wait = self.config.wait_timeout
        reports = [self._unload_if(rec, "free", self._evictable, wait) for rec in self._records.values()]
        done = [report for report in reports if report is not None]
        return {"unloaded": [r["model"] for r in done], "reclaimed_bytes": sum(r["reclaimed_bytes"] for r in done)}

    def shutdown(self) -> None:
        """Refuse new work, release every worker, busy or not (service stop), stop reading memory:
        each step whatever the one before it raised (the failures are logged)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        try:
            try:
                self._monitor.stop()
            except Exception:
                log.exception("the worker monitor did not stop")
            for rec in self._records.values():
                try:
                    self._unload_if(rec, "shutdown", lambda r: r.state is State.READY, self.config.unload_timeout)
                except ModelUnavailable:
                    log.warning("model %s: a load still runs at shutdown; its worker ends with us", rec.spec.id)
                except Exception:
                    log.exception("model %s: its unload at shutdown failed (its worker was killed)", rec.spec.id)
        finally:
            with self._operations.hold("shutdown", 0) as held:
                if held:  # else a load still runs (it may be taking the spare), and the spare ends with us
                    self._drop_spare()
            self._memory.stop()


def _turn_s(rec: ModelRecord) -> float | None:
    """(Under the lock.) The model's worker's recent time per request; None before it has one."""
    return rec.worker.turn_s if rec.worker is not None else None
