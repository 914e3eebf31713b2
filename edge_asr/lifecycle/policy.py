"""The lifecycle's decisions as plain functions: no locks, no processes, no clock (the time is an
argument). The manager gathers the facts under its lock and acts on what these return; the tests
call them directly (``tests/test_policy.py``), as Ollama's ``sched_test.go`` tests its scheduler.

``settings`` below is each model's effective settings by id (``priority``, ``pinned``,
``keep_alive`` in seconds)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edge_asr.errors import BackingOff, Draining, InsufficientMemory, QueueFull, ShuttingDown
from edge_asr.lifecycle.records import ModelRecord, State

MAX_BACKOFF = 300.0  # seconds: the longest a model that keeps failing waits before the next try
Settings = Mapping[str, Mapping[str, Any]]


def is_idle(rec: ModelRecord) -> bool:
    """Loaded, serving nothing, nobody waiting for it, no unload draining it: the one definition
    keep-alive, eviction, pressure and "free" all use."""
    return rec.state is State.READY and rec.queued == 0 and not rec.draining


def evictable(rec: ModelRecord, settings: Settings) -> bool:
    return is_idle(rec) and not settings[rec.spec.id]["pinned"]


def eviction_order(candidates: Iterable[ModelRecord], settings: Settings) -> list[ModelRecord]:
    """Who goes first: lowest priority, then least recently used."""
    return sorted(candidates, key=lambda r: (settings[r.spec.id]["priority"], r.last_used or 0.0))


def expires_at(rec: ModelRecord, keep_alive: float, pinned: bool) -> float | None:
    """When an idle ``rec`` hibernates: its last use plus the last request's keep-alive, else the
    setting's. None when it is not idle or never expires (pinned, or a negative keep-alive)."""
    keep = keep_alive if rec.keep_alive is None else rec.keep_alive
    if not is_idle(rec) or rec.last_used is None or keep < 0 or pinned:
        return None
    return rec.last_used + keep


def room(available: int, reserve: int, budget: int, resident_footprints: Iterable[int]) -> int:
    """Bytes a new model may take: what is available above the reserve, and within the budget (0 =
    none) after the resident models' footprints."""
    space = available - reserve
    if budget:
        space = min(space, budget - sum(resident_footprints))
    return space


@dataclass(frozen=True)
class Admission:
    """What a load must do first: nothing (``fits``), unload ``victim``, ``wait`` for a busy model
    to become idle, or refuse (none of these; ``room`` says how much there is)."""

    fits: bool
    room: int
    victim: ModelRecord | None = None
    wait: bool = False


def admit(
    need: int,
    available: int,
    reserve: int,
    budget: int,
    resident: Iterable[ModelRecord],
    footprints: Mapping[str, int],
    settings: Settings,
    measured: bool = True,
) -> Admission:
    """The next step to make room for a model needing ``need`` bytes among ``resident`` ones.

    A model never ``measured`` has only a prediction, which may be well above what it takes: when
    the budget alone stands in its way, it loads once it is the only one resident (the others
    evicted first), and its real footprint decides from then on; refused unseen, it never could."""
    resident = list(resident)
    space = room(available, reserve, budget, (footprints.get(r.spec.id, 0) for r in resident))
    if need <= space or (not measured and not resident and need <= available - reserve):
        return Admission(True, space)
    unpinned = [r for r in resident if not settings[r.spec.id]["pinned"]]
    idle = [r for r in unpinned if is_idle(r)]
    if idle:
        return Admission(False, space, victim=eviction_order(idle, settings)[0])
    return Admission(False, space, wait=any(r.state is State.READY for r in unpinned))


def spare_fits(available: int, high: int, budget: int, resident_footprints: Iterable[int], spare: int) -> bool:
    """Whether a spare worker taking ``spare`` bytes may start: available memory stays above the
    ``high`` watermark (so it never brings pressure on, nor is made and given up in turn), and
    within the ``budget`` (0 = none) beside the resident models."""
    return available - spare >= high and (not budget or sum(resident_footprints) + spare <= budget)


def pressure_victims(
    available: int,
    low: int,
    high: int,
    reserve: int,
    min_residency: float,
    resident: Iterable[ModelRecord],
    footprints: Mapping[str, int],
    settings: Settings,
    now: float,
) -> list[ModelRecord]:
    """Below the ``low`` watermark, the idle unpinned models to hibernate, in order, until their
    footprints bring ``available`` to ``high``. ``min_residency`` spares a freshly loaded model in
    the hysteresis band (against thrash), but not below the ``reserve``: at a critical level an
    idle model goes before the kernel's OOM killer picks a process."""
    if available >= low:
        return []
    critical = available < reserve
    victims = []
    for rec in eviction_order((r for r in resident if evictable(r, settings)), settings):
        if available >= high:
            break
        if not critical and now - (rec.loaded_at or 0.0) < min_residency:
            continue
        victims.append(rec)
        available += footprints.get(rec.spec.id, 0)
    return victims


def backoff_until(failures: int, base: float, now: float) -> float:
    """After a second failure in a row, the next load waits ``base`` seconds, doubling each time
    up to ``MAX_BACKOFF``; the first failure is retried at once (0 = no wait)."""
    if failures < 2:
        return 0.0
    return now + min(MAX_BACKOFF, base * 2 ** (failures - 2))


def backoff_left(rec: ModelRecord, now: float) -> float:
    """Seconds a model that failed twice or more in a row still waits before its next load (0: none)."""
    return max(0.0, rec.retry_at - now) if rec.failures >= 2 else 0.0


def drain_refuses(drained_at: float | None, now: float, grace: float) -> bool:
    """A drained unit refuses new requests once ``grace`` seconds have passed since the drain,
    time enough for routers' health checks to see it and send them elsewhere."""
    return drained_at is not None and now - drained_at >= grace


def is_thrash(rec: ModelRecord, now: float, window: float) -> bool:
    """A load soon after a pressure hibernation: memory is too tight for the work asked of it."""
    return rec.last_unload_reason == "pressure" and rec.unloaded_at is not None and now - rec.unloaded_at < window


def queue_full(rec: ModelRecord, max_queue: int) -> bool:
    """One request runs in a worker; at most ``max_queue`` more wait for it (Ollama's
    ``OLLAMA_MAX_QUEUE``): beyond that a request is refused at once, not after a timeout."""
    return rec.queued >= 1 + max_queue


DRAIN_RETRY = 30.0  # seconds a drained unit tells a router to wait (an upgrade takes minutes)
DRAINED = "the unit is drained (an upgrade or maintenance): send the request to another unit"
STOP_RETRY = 10.0  # seconds a stopping unit tells a client to wait (a restart takes seconds)
MEMORY_RETRY = 10.0  # seconds to wait for memory that nothing can free now


@dataclass(frozen=True)
class Refusal:
    """Why the unit takes no more requests now: ``code`` (what a router logs), ``message``, and
    the seconds after which to ask again."""

    code: str
    message: str
    retry_after: float


def refusal(
    stopping: bool,
    draining: bool,
    rec: ModelRecord | None,
    max_queue: int,
    admission: Admission | None,
    now: float,
    turn_s: float | None,
) -> Refusal | None:
    """Readiness (``/readyz``): the first reason the unit, or the model of ``rec`` where one is
    asked about, cannot take one more request now; None when it can. ``admission``: what room for
    the model (for nothing, asked of the unit) would find, where it is not loaded; ``turn_s``: its
    worker's recent time per request, for how long a full queue takes to move."""
    if stopping:
        return Refusal(ShuttingDown.code, "the service is stopping", STOP_RETRY)
    if draining:
        return Refusal(Draining.code, DRAINED, DRAIN_RETRY)
    if rec is not None and (left := backoff_left(rec, now)):
        return Refusal(BackingOff.code, f"the model {rec.spec.id!r} failed {rec.failures} times in a row", left)
    if rec is not None and queue_full(rec, max_queue):
        wait = expected_wait(rec, turn_s)
        return Refusal(QueueFull.code, f"the model {rec.spec.id!r} has {rec.queued} requests to serve", wait)
    if admission is not None and not (admission.fits or admission.victim or admission.wait):
        needs = f"the model {rec.spec.id!r} does not fit" if rec else "nothing is loaded and no model fits"
        return Refusal(InsufficientMemory.code, f"{needs} and no idle model can be unloaded", MEMORY_RETRY)
    return None


def expected_wait(rec: ModelRecord, turn_s: float | None) -> float:
    """Seconds a request that came now would wait for the ones ahead of it (by the worker's recent
    time per request; 0 before it has served one)."""
    return rec.queued * (turn_s or 0.0)
