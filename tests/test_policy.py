"""The lifecycle's decisions as plain functions (edge_asr.lifecycle.policy): no processes, no
locks, no clock; the whole file runs in milliseconds."""

from __future__ import annotations

from pathlib import Path

from edge_asr.lifecycle import policy
from edge_asr.lifecycle.records import IllegalMove, ModelRecord, State
from edge_asr.manifest import ModelSpec

MB = 10**6


def record(
    model_id: str, state: State = State.READY, last_used: float = 0.0, loaded_at: float = 0.0, **kw
) -> ModelRecord:
    spec = ModelSpec(id=model_id, task="asr", family="whisper", directory=Path("/nonexistent"), files=())
    rec = ModelRecord(spec, state=state, last_used=last_used, loaded_at=loaded_at)
    for key, value in kw.items():
        setattr(rec, key, value)
    return rec


def settings(*records: ModelRecord, **overrides: dict) -> dict[str, dict]:
    return {r.spec.id: {"priority": 0, "pinned": False} | overrides.get(r.spec.id, {}) for r in records}


def test_idle_means_ready_and_nobody_using_waiting_or_draining():
    assert policy.is_idle(record("a"))
    assert not policy.is_idle(record("a", in_flight=1))
    assert not policy.is_idle(record("a", waiting=1))
    assert not policy.is_idle(record("a", draining=True))
    assert not policy.is_idle(record("a", state=State.LOADING))


def test_eviction_order_is_priority_then_least_recently_used():
    old, new, important = record("old", last_used=1), record("new", last_used=5), record("important", last_used=0)
    order = policy.eviction_order([new, important, old], settings(old, new, important, important={"priority": 9}))
    assert [r.spec.id for r in order] == ["old", "new", "important"]


def test_keep_alive_expiry():
    rec = record("a", last_used=100.0)
    assert policy.expires_at(rec, keep_alive=300, pinned=False) == 400.0
    assert policy.expires_at(rec, keep_alive=300, pinned=True) is None
    assert policy.expires_at(rec, keep_alive=-1, pinned=False) is None
    rec.keep_alive = 0.0  # the last request's own keep_alive wins over the setting
    assert policy.expires_at(rec, keep_alive=300, pinned=False) == 100.0
    rec.in_flight = 1
    assert policy.expires_at(rec, keep_alive=300, pinned=False) is None


def test_room_is_the_smaller_of_memory_above_the_reserve_and_the_budget_left():
    assert policy.room(available=1000 * MB, reserve=200 * MB, budget=0, resident_footprints=[500 * MB]) == 800 * MB
    assert policy.room(1000 * MB, 200 * MB, budget=900 * MB, resident_footprints=[500 * MB]) == 400 * MB


def test_admission_fits_evicts_the_least_wanted_waits_for_busy_or_refuses():
    idle_old, idle_new = record("old", last_used=1), record("new", last_used=2)
    both = settings(idle_old, idle_new)
    footprints = {"old": 300 * MB, "new": 300 * MB}
    fits = policy.admit(100 * MB, 1000 * MB, 256 * MB, 0, [idle_old, idle_new], footprints, both)
    assert fits.fits and fits.victim is None
    squeezed = policy.admit(400 * MB, 1000 * MB, 0, 900 * MB, [idle_old, idle_new], footprints, both)
    assert not squeezed.fits and squeezed.victim is idle_old and squeezed.room == 300 * MB
    pinned = policy.admit(
        400 * MB,
        1000 * MB,
        0,
        900 * MB,
        [idle_old, idle_new],
        footprints,
        settings(idle_old, idle_new, old={"pinned": True}),
    )
    assert pinned.victim is idle_new
    busy = record("busy", in_flight=1)
    waiting = policy.admit(400 * MB, 300 * MB, 0, 0, [busy], {"busy": 300 * MB}, settings(busy))
    assert waiting.wait and waiting.victim is None and not waiting.fits
    refused = policy.admit(400 * MB, 300 * MB, 0, 0, [], {}, {})
    assert not (refused.fits or refused.wait or refused.victim) and refused.room == 300 * MB


def test_pressure_hibernates_until_the_high_watermark_sparing_fresh_models_in_the_band():
    a = record("a", last_used=1, loaded_at=0)
    b = record("b", last_used=2, loaded_at=0)
    fresh = record("fresh", last_used=3, loaded_at=95)
    busy = record("busy", last_used=0, loaded_at=0, in_flight=1)
    everyone = [a, b, fresh, busy]
    footprints = {"a": 300 * MB, "b": 300 * MB, "fresh": 300 * MB, "busy": 300 * MB}
    args = dict(low=500 * MB, high=1000 * MB, reserve=200 * MB, min_residency=30, footprints=footprints, now=100)
    assert policy.pressure_victims(600 * MB, resident=everyone, settings=settings(*everyone), **args) == []
    victims = policy.pressure_victims(450 * MB, resident=everyone, settings=settings(*everyone), **args)
    assert victims == [a, b]  # 450 + 300 + 300 >= 1000: enough; fresh and busy stay
    band = policy.pressure_victims(300 * MB, resident=[fresh, busy], settings=settings(fresh, busy), **args)
    assert band == []  # in the band, min_residency protects against thrash
    critical = policy.pressure_victims(100 * MB, resident=[fresh, busy], settings=settings(fresh, busy), **args)
    assert critical == [fresh]  # below the reserve it does not: before the OOM killer picks
    pinned = policy.pressure_victims(100 * MB, resident=[a], settings=settings(a, a={"pinned": True}), **args)
    assert pinned == []


def test_backoff_doubles_from_the_second_failure_up_to_the_cap():
    assert policy.backoff_until(1, base=2, now=100) == 0.0
    assert [policy.backoff_until(n, base=2, now=100) - 100 for n in (2, 3, 4)] == [2, 4, 8]
    assert policy.backoff_until(40, base=2, now=100) - 100 == policy.MAX_BACKOFF


def test_thrash_is_a_reload_soon_after_a_pressure_hibernation():
    rec = record("a", state=State.UNLOADED, last_unload_reason="pressure", unloaded_at=100.0)
    assert policy.is_thrash(rec, now=150, window=120)
    assert not policy.is_thrash(rec, now=300, window=120)
    rec.last_unload_reason = "idle"
    assert not policy.is_thrash(rec, now=150, window=120)


def test_queue_bound():
    assert not policy.queue_full(record("a", in_flight=8), max_queue=8)
    assert policy.queue_full(record("a", in_flight=8, waiting=1), max_queue=8)


def test_readiness_refuses_for_the_first_reason_and_takes_work_again_once_it_clears():
    def refused(rec=None, stopping=False, draining=False, admission=None, now=100.0, turn_s=None):
        found = policy.refusal(stopping, draining, rec, 2, admission, now, turn_s)
        return found and (found.code, found.retry_after)

    fits, full = policy.Admission(True, 5 * MB), policy.Admission(False, -MB)
    assert refused() is None and refused(record("a"), admission=fits) is None
    assert refused(stopping=True, draining=True) == ("shutting_down", policy.STOP_RETRY)  # stopping outranks all
    assert refused(draining=True) == ("draining", policy.DRAIN_RETRY)
    failing = record("a", state=State.FAILED, failures=2, retry_at=130.0)
    assert refused(failing) == ("backing_off", 30.0)
    assert refused(failing, now=131.0) is None  # the back-off is over: the next request loads it
    assert refused(record("a", state=State.FAILED, failures=1, retry_at=130.0)) is None  # one failure: retried at once
    busy = record("a", in_flight=1, waiting=2)  # max_queue 2: one runs, two wait, a fourth would be refused
    assert refused(busy, turn_s=1.5) == ("queue_full", 4.5)  # the three ahead at the worker's recent pace
    assert refused(record("a", in_flight=1, waiting=1)) is None
    assert refused(admission=full) == ("insufficient_memory", policy.MEMORY_RETRY)
    assert refused(admission=policy.Admission(False, -MB, victim=record("idle"))) is None  # one can be evicted
    assert refused(admission=policy.Admission(False, -MB, wait=True)) is None  # a busy one will be idle


def test_a_drained_unit_refuses_requests_only_once_its_grace_is_over():
    assert not policy.drain_refuses(None, now=100.0, grace=5.0)  # not drained
    assert not policy.drain_refuses(96.0, now=100.0, grace=5.0)  # the routers' checks are still noticing
    assert policy.drain_refuses(95.0, now=100.0, grace=5.0)


def test_only_contract_moves_are_allowed_and_events_name_the_settled_origin():
    rec = record("a", state=State.UNLOADED)
    assert rec.move(State.LOADING, "loading") is State.UNLOADED
    assert rec.move(State.READY, "loaded") is State.UNLOADED  # the event reads unloaded -> ready
    assert rec.move(State.UNLOADING, "unloading") is State.READY
    assert rec.move(State.UNLOADED, "unloaded") is State.READY
    for illegal in (State.READY, State.UNLOADING, State.FAILED):
        try:
            rec.move(illegal, "bug")
        except IllegalMove:
            continue
        raise AssertionError(f"unloaded -> {illegal.value} was allowed")


def test_a_model_never_measured_is_admitted_alone_past_the_budget_not_past_the_reserve():
    idle = record("idle")
    fp = {"idle": 300 * MB}
    args = dict(available=4000 * MB, reserve=500 * MB, budget=400 * MB, footprints=fp, settings=settings(idle))
    assert policy.admit(700 * MB, resident=[idle], measured=False, **args).victim is idle  # the others go first
    assert policy.admit(700 * MB, resident=[], measured=False, **args).fits  # then its real footprint decides
    assert not policy.admit(700 * MB, resident=[], measured=True, **args).fits  # measured: the budget holds
    args["available"] = 1000 * MB
    assert not policy.admit(700 * MB, resident=[], measured=False, **args).fits  # the reserve holds regardless


def test_a_spare_worker_starts_only_above_the_high_watermark_and_within_the_budget():
    assert policy.spare_fits(available=2000 * MB, high=1000 * MB, budget=0, resident_footprints=[], spare=100 * MB)
    assert not policy.spare_fits(1050 * MB, 1000 * MB, 0, [], 100 * MB)  # it would bring memory into the band
    assert policy.spare_fits(4000 * MB, 1000 * MB, 700 * MB, [600 * MB], 100 * MB)
    assert not policy.spare_fits(4000 * MB, 1000 * MB, 650 * MB, [600 * MB], 100 * MB)  # past the budget
