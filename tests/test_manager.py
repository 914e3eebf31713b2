"""The ModelManager driven without processes (a fake worker handle, a fake clock, a fake memory
reading): every load and unload path ends in a settled state whatever fails, the disk may be
full, waits are bounded, work is refused at the queue bound and at shutdown."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_asr.config import Config
from edge_asr.errors import ModelBusy, ModelLoadFailed, ModelUnavailable, QueueFull, StorageFull
from edge_asr.events import EventLog
from edge_asr.lifecycle import ModelManager, result
from edge_asr.lifecycle.footprints import Footprints
from edge_asr.lifecycle.manager import QUEUE_RETRY
from edge_asr.manifest import ModelSpec
from edge_asr.memory import MemoryReading, MemorySource
from edge_asr.state import StateStore
from edge_asr.supervisor import Supervisor
from edge_asr.workers.protocol import TranscriptionOptions
from tests.fakes.worker import MB, FakeSpare, FakeWorkerHandle

GB = 1000 * MB
AUDIO = np.zeros(16000, np.float32)


class FakeMemory(MemorySource):
    """A memory source whose figure the test sets; a load takes 100 MB of it, an unload gives it back."""

    name = "fake"

    def __init__(self, available: int = 4 * GB):
        super().__init__()
        self.available = available
        self.fail: BaseException | None = None
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def read(self) -> MemoryReading:
        return self.measure()

    def measure(self) -> MemoryReading:
        if self.fail is not None:
            raise self.fail
        return MemoryReading(time=0.0, total_bytes=8 * GB, available_bytes=self.available, used_bytes=0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def models(tmp_path: Path) -> Config:
    (tmp_path / "models" / "asr").mkdir(parents=True)
    (tmp_path / "models" / "llm").mkdir()
    (tmp_path / "models" / "asr" / "m.onnx").write_bytes(b"0" * 1000)
    (tmp_path / "models" / "llm" / "m.onnx").write_bytes(b"0" * 1000)
    manifest = tmp_path / "models.toml"
    manifest.write_text(
        '[models.asr]\ntask = "asr"\nfamily = "whisper"\nfiles = ["m.onnx"]\n'
        '[models.llm]\ntask = "llm"\nfamily = "genai"\nfiles = ["m.onnx"]\n'
    )
    return Config(
        models_dir=tmp_path / "models",
        manifest=manifest,
        state_dir=tmp_path / "state",
        wait_timeout=2.0,
        spare_worker=False,  # a real process (tests/test_worker.py); these drive the manager without any
    )


@pytest.fixture
def make(models: Config):
    made: list[ModelManager] = []
    FakeWorkerHandle.spawned, FakeWorkerHandle.fail_load, FakeWorkerHandle.fail_release = [], None, None

    def make_manager(**overrides) -> tuple[ModelManager, FakeMemory, Clock]:
        config = replace(models, **overrides)
        memory, clock = FakeMemory(), Clock()
        store, events = StateStore(config.state_dir), EventLog(config.state_dir / "events.jsonl")
        manager = ModelManager(config, memory, store, events, spawn=FakeWorkerHandle, clock=clock, make_spare=FakeSpare)
        made.append(manager)
        return manager, memory, clock

    yield make_manager
    for manager in made:
        manager.shutdown()
    FakeWorkerHandle.fail_load = FakeWorkerHandle.fail_release = FakeWorkerHandle.detected = None
    FakeWorkerHandle.broken_sentinels, FakeWorkerHandle.spares_die, FakeSpare.made = 0, False, []


def state(manager: ModelManager, model_id: str = "asr") -> str:
    return manager.status(model_id)["state"]


def test_a_lease_loads_calls_and_returns(make):
    manager, _, _ = make()
    with manager.lease("asr") as lease:
        assert result(lease.transcribe(AUDIO, TranscriptionOptions(beam_size=1)))["request"].audio is AUDIO
        assert manager.status("asr")["in_flight"] == 1
    status = manager.status("asr")
    assert status["state"] == "ready" and status["in_flight"] == 0 and status["footprint_bytes"] == 100 * MB
    events = manager.recent_events()
    assert [(e["from"], e["to"]) for e in events] == [("unloaded", "ready")]


def test_a_transcription_notes_the_language_it_detected_and_only_that(make):
    manager, _, _ = make()
    with manager.lease("asr") as lease:
        result(lease.transcribe(AUDIO, TranscriptionOptions(language="de")))  # given: nothing detected
        FakeWorkerHandle.detected = 0.93
        result(lease.transcribe(AUDIO, TranscriptionOptions()))
    noted = [e for e in manager.recent_events() if e["from"] == e["to"]]
    assert [(e["reason"], e["language"], e["probability"]) for e in noted] == [("language detected", "de", 0.93)]


@pytest.mark.parametrize(
    "failure", [RuntimeError("spawn broke"), KeyboardInterrupt(), OSError(28, "No space left on device")]
)
def test_any_exception_while_loading_leaves_the_model_failed_not_loading(make, failure):
    manager, _, _ = make()
    FakeWorkerHandle.fail_load = failure
    with pytest.raises(type(failure)):
        manager.load("asr")
    status = manager.status("asr")
    assert status["state"] == "failed" and type(failure).__name__ in status["reason"]
    assert manager.recent_events()[-1]["to"] == "failed"
    FakeWorkerHandle.fail_load = None
    assert manager.load("asr")["state"] == "ready"  # the first failure is retried at once


def test_a_memory_reading_that_fails_after_the_worker_started_kills_it(make):
    manager, memory, _ = make()
    calls = 0
    real_measure = memory.measure

    def measure() -> MemoryReading:
        nonlocal calls
        calls += 1
        if calls == 3:  # admission, before the worker, after it
            raise OSError("/proc/meminfo vanished")
        return real_measure()

    memory.measure = measure  # type: ignore[method-assign]
    with pytest.raises(OSError):
        manager.load("asr")
    assert state(manager) == "failed" and FakeWorkerHandle.spawned[-1].killed
    assert manager.status("asr")["worker_pid"] is None


def test_a_release_that_raises_leaves_the_model_failed_not_unloading(make):
    manager, _, _ = make()
    manager.load("asr")
    FakeWorkerHandle.fail_release = RuntimeError("pipe exploded")
    with pytest.raises(RuntimeError):
        manager.unload("asr")
    assert state(manager) == "failed" and FakeWorkerHandle.spawned[-1].killed
    FakeWorkerHandle.fail_release = None
    assert manager.load("asr")["state"] == "ready"


def test_a_full_disk_loses_events_and_footprints_on_disk_but_nothing_in_memory(make, models, caplog):
    manager, _, _ = make()
    models.state_dir.joinpath("settings").rmdir()
    for child in models.state_dir.iterdir():
        child.unlink()
    models.state_dir.rmdir()
    models.state_dir.write_text("a file where the directory was: every write fails")
    for _ in range(3):
        manager.load("asr")
        manager.unload("asr")
    assert state(manager) == "unloaded" and manager.status("asr")["footprint_bytes"] == 150 * MB
    assert len([e for e in manager.recent_events() if e["to"] == "unloaded"]) == 3
    failures = [r for r in caplog.records if r.levelname == "ERROR" and "cannot write" in r.getMessage()]
    assert sorted(r.getMessage().split(" (")[0] for r in failures) == [
        f"cannot write events to {models.state_dir / 'events.jsonl'}",
        f"cannot write footprints to {models.state_dir}",
    ]  # once per kind, not at every write
    with pytest.raises(StorageFull):
        manager.update_settings("asr", {"priority": 3})
    assert manager.settings("asr")["priority"] == 0  # unchanged, as the error says


def test_keep_alive_runs_on_the_manager_clock(make):
    manager, _, clock = make(keep_alive=300.0)
    with manager.lease("asr"):
        pass
    assert manager.hibernate_expired() == clock.now + 300
    clock.now += 299
    manager.hibernate_expired()
    assert state(manager) == "ready"
    clock.now += 2
    assert manager.hibernate_expired() is None
    assert state(manager) == "unloaded" and manager.status("asr")["last_unload_reason"] == "idle"


def test_the_queue_bound_refuses_at_once(make):
    manager, _, _ = make(max_queue=1)
    with manager.lease("asr"), manager.lease("asr"):
        with pytest.raises(QueueFull) as refused, manager.lease("asr"):
            pass
        assert refused.value.retry_after == QUEUE_RETRY  # no request timed yet
        FakeWorkerHandle.spawned[-1].turn_s = 1.5  # the worker's recent time per request
        with pytest.raises(QueueFull) as refused, manager.lease("asr"):
            pass
        assert refused.value.retry_after == 3.0  # the two ahead, at that pace (as /readyz says)
    with manager.lease("asr"):
        pass


def test_an_idle_lease_is_had_only_on_a_loaded_model_nothing_waits_for(make):
    """Work that must never delay a request (live transcription's partial decodes) neither loads
    a model nor queues behind a request."""
    manager, _, _ = make()
    with manager.idle_lease("asr") as lease:
        assert lease is None and state(manager) == "unloaded"  # not loaded for it
    manager.load("asr")
    with manager.idle_lease("asr") as lease:
        assert lease is not None and manager.status("asr")["in_flight"] == 1
        with manager.idle_lease("asr") as second:
            assert second is None  # one at a time
    with manager.lease("asr"), manager.idle_lease("asr") as lease:
        assert lease is None  # a request is served
    assert manager.status("asr")["in_flight"] == 0


def test_unload_drains_then_unloads_and_refuses_new_leases_meanwhile(make):
    manager, _, _ = make()
    with pytest.raises(ModelBusy), manager.lease("asr"):
        manager.unload("asr")
    held, release = threading.Event(), threading.Event()

    def request() -> None:
        with manager.lease("asr"):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=request)
    thread.start()
    held.wait(5)
    result: dict = {}
    unloader = threading.Thread(target=lambda: result.update(manager.unload("asr", wait=5)))
    unloader.start()
    threading.Event().wait(0.2)
    assert manager.status("asr")["state"] == "ready"  # draining: waiting for the request
    release.set()
    thread.join()
    unloader.join()
    assert result["unloaded"] and state(manager) == "unloaded"


def test_shutdown_refuses_new_work_and_releases_every_worker(make):
    manager, _, _ = make()
    manager.load("asr")
    manager.load("llm")
    manager.shutdown()
    assert all(w.released for w in FakeWorkerHandle.spawned)
    assert {state(manager, m) for m in ("asr", "llm")} == {"unloaded"}
    with pytest.raises(ModelUnavailable), manager.lease("asr"):
        pass


def test_a_load_waits_for_the_lifecycle_lock_only_wait_timeout(make):
    manager, _, clock = make(wait_timeout=0.3)
    with manager._operations.hold("a long load", 1):
        with pytest.raises(ModelUnavailable, match="another model is loading"):
            manager.load("asr")
        clock.now += 10_000
        assert "a long load under way" in (manager.overrun() or "")
    assert state(manager) == "unloaded" and manager.overrun() is None


def test_a_worker_that_dies_while_idle_fails_the_model_and_a_crashing_one_backs_off(make):
    manager, _, clock = make(failure_backoff=30.0)
    for expected_failures in (1, 2):
        manager.load("asr")
        FakeWorkerHandle.spawned[-1].kill()
        threading.Event().wait(0.1)
        deadline = 50
        while state(manager) != "failed" and deadline:
            threading.Event().wait(0.05)
            deadline -= 1
        assert manager.status("asr")["failures"] == expected_failures
    with pytest.raises(ModelUnavailable, match="failed 2 times in a row") as backing_off:
        manager.load("asr")
    assert backing_off.value.retry_after == 30
    clock.now += 31
    assert manager.load("asr")["state"] == "ready"


def test_a_load_that_cannot_fit_goes_back_to_where_it_was(make):
    manager, _, _ = make(memory_reserve=4 * GB)
    with pytest.raises(Exception) as refused:
        manager.load("asr")
    assert refused.value.status == 503 and state(manager) == "unloaded"
    assert manager.recent_events() == []  # nothing happened to the model
    assert not isinstance(refused.value, ModelLoadFailed)


def test_a_footprint_is_predicted_from_the_files_a_load_reads_until_one_is_measured(tmp_path):
    """A Whisper folder holds a decoder per runtime; a load reads the one for the providers this
    onnxruntime build has (here the CPU's, the int8 decoder-cpu.onnx: tiny.en used to be predicted
    at twice its measured size)."""
    spec = ModelSpec("w", "asr", "whisper", tmp_path, ("encoder.onnx", "decoder.onnx", "decoder-cpu.onnx"))
    for name, size in (("encoder.onnx", 2000), ("decoder.onnx", 3000), ("decoder-cpu.onnx", 1000)):
        (tmp_path / name).write_bytes(bytes(size))
    footprints = Footprints(StateStore(tmp_path / "state"))
    assert footprints.predict(spec) == 3 * (2000 + 1000) and not footprints.measured("w")
    footprints.loaded("w", 1234)
    assert footprints.predict(spec) == 1234 and footprints.measured("w")


def test_one_outlier_no_longer_sticks_to_a_footprint(tmp_path):
    """A larger peak counts at once; smaller ones pull it back down (it used to be kept for good)."""
    footprints = Footprints(StateStore(tmp_path / "state"))
    footprints.loaded("w", 300 * MB)
    footprints.released("w", 310 * MB)
    assert footprints.get("w") == 310 * MB
    footprints.released("w", 900 * MB)  # one huge request, or a noisy reading
    assert footprints.get("w") == 900 * MB
    for _ in range(5):
        footprints.loaded("w", 280 * MB)  # a load's figure never lowers it...
        footprints.released("w", 310 * MB)  # ...a request's peak does
    assert 310 * MB <= footprints.get("w") < 330 * MB
    assert Footprints(StateStore(tmp_path / "state")).get("w") == footprints.get("w")  # persisted


def test_footprints_come_from_the_worker_not_from_what_the_system_moved(make):
    """Another process grabbing 2 GB during the load is not the model's footprint."""
    manager, memory, _ = make()
    spawn = manager._spawn

    def noisy_spawn(spec, config, spare, nice):
        memory.available -= 2 * GB
        return spawn(spec, config, spare, nice)

    manager._spawn = noisy_spawn
    manager.load("asr")
    assert manager.status("asr")["footprint_bytes"] == 100 * MB  # the worker's rss_loaded
    manager.unload("asr")
    assert manager.status("asr")["footprint_bytes"] == 150 * MB  # its rss_peak


def test_a_model_never_measured_loads_alone_when_only_the_budget_refuses_its_prediction(make):
    """The prediction (3x its files) is over the budget; measured, it fits."""
    manager, _, _ = make(memory_budget=2000)
    assert manager.load("asr")["state"] == "ready"  # alone: its real footprint is learnt
    assert manager.status("asr")["footprint_bytes"] == 100 * MB
    assert manager.load("llm")["state"] == "ready" and state(manager, "asr") == "unloaded"  # alone, after asr
    with pytest.raises(Exception, match="needs about") as refused:  # measured now: its footprint decides
        manager.load("asr")
    assert refused.value.status == 503 and state(manager) == "unloaded"


def wait_until(check, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_monitor_survives_a_failing_look_and_still_notices_a_crash(make, caplog):
    manager, _, _ = make()
    manager.load("asr")
    FakeWorkerHandle.broken_sentinels = 3
    monitor = manager.loops()[0]
    assert wait_until(lambda: monitor.count == 3) and monitor.loop == "worker monitor"
    assert caplog.text.count("worker monitor: an iteration failed") == 1  # the same failure is logged once
    assert "RuntimeError: a bug in the watch" in caplog.text  # with its traceback
    FakeWorkerHandle.spawned[-1].kill()
    assert wait_until(lambda: state(manager) == "failed"), "a crash after the failures went unnoticed"


def test_shutdown_unloads_every_model_whatever_an_unload_raises_then_stops_the_memory_source(make, caplog):
    manager, memory, _ = make()
    manager.load("asr")
    manager.load("llm")
    FakeWorkerHandle.fail_release = RuntimeError("release broke")
    manager.shutdown()
    assert [w.killed for w in FakeWorkerHandle.spawned] == [True, True]
    assert {state(manager, m) for m in ("asr", "llm")} == {"failed"} and memory.stopped
    assert caplog.text.count("its unload at shutdown failed") == 2


def test_a_listener_that_raises_is_logged_and_changes_no_state(make, caplog):
    manager, _, _ = make()

    def broken(event: dict) -> None:
        raise KeyError("a metrics bug")

    manager.on_event(broken)
    assert manager.load("asr")["state"] == "ready"
    with manager.lease("asr") as lease:
        assert result(lease.transcribe(AUDIO, TranscriptionOptions()))["language"] == "de"
    assert FakeWorkerHandle.spawned[0].killed is False and "an event listener failed" in caplog.text


def test_events_are_delivered_outside_the_lock_in_the_order_of_the_moves(make):
    """A listener (or a disk) that takes its time holds up no status read and no lease."""
    manager, _, _ = make()
    slow, delivered = threading.Event(), []

    def listener(event: dict) -> None:
        slow.wait(5)
        delivered.append((event["model"], event["to"]))

    manager.on_event(listener)
    slow.set()
    manager.load("asr")
    slow.clear()
    load = threading.Thread(target=manager.load, args=("llm",))
    load.start()
    assert wait_until(lambda: len(manager.recent_events()) == 2)  # it moved; its event waits for the listener
    started = time.monotonic()
    assert manager.status("llm")["state"] == "ready"
    FakeWorkerHandle.detected = 0.9
    with manager.lease("asr") as lease:
        result(lease.transcribe(AUDIO, TranscriptionOptions()))  # notes the language: an event behind the load's
    assert time.monotonic() - started < 1.0 and len(delivered) == 1
    slow.set()
    load.join()
    moves = [(e["model"], e["to"]) for e in manager.recent_events()]
    assert delivered == moves == [("asr", "ready"), ("llm", "ready"), ("asr", "ready")]
    on_disk = [json.loads(line) for line in (manager.config.state_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["model"], e["to"]) for e in on_disk] == moves


def test_the_supervisor_survives_a_failing_check_and_counts_it(make, caplog):
    manager, memory, _ = make(memory_interval_ms=20)
    supervisor = Supervisor(manager, manager.config)
    memory.fail = OSError("meminfo unreadable")
    supervisor.start()
    try:
        assert wait_until(lambda: supervisor.errors.count >= 3)
        memory.fail = None
        ticks = supervisor.ticks
        assert wait_until(lambda: supervisor.ticks > ticks + 2 and not supervisor.errors.failing)
    finally:
        supervisor.stop()
    assert caplog.text.count("supervisor: an iteration failed") == 1


def test_prefetch_loads_what_fits_beside_the_loaded_models_and_evicts_nothing(make):
    manager, _, _ = make(memory_budget=250 * MB)  # asr 100 MB + llm 100 MB fit; a third would not
    manager.load("asr")
    manager.prefetch(["llm"])
    assert wait_until(lambda: state(manager, "llm") == "ready")
    assert [(e["model"], e["reason"]) for e in manager.recent_events()][-1] == ("llm", "prefetch")
    manager.unload("llm")
    manager._memory.available = 300 * MB  # now only the reserve's worth above asr: llm does not fit
    moves = len(manager.recent_events())
    manager.prefetch(["llm"])
    time.sleep(0.3)
    assert state(manager) == "ready" and state(manager, "llm") == "unloaded"  # nothing evicted, nothing loaded
    assert len(manager.recent_events()) == moves


def test_prefetch_is_off_with_its_setting(make):
    manager, _, _ = make(prefetch=False)
    manager.load("asr")
    manager.prefetch(["llm"])
    time.sleep(0.3)
    assert state(manager, "llm") == "unloaded"


def test_a_load_takes_the_spare_and_one_the_spare_dies_taking_still_loads(make, caplog):
    manager, _, clock = make(spare_worker=True, failure_backoff=2.0)
    manager.keep_spare()
    spare = FakeSpare.made[-1]
    manager.load("asr")
    assert FakeWorkerHandle.spawned[-1].spare is spare and manager.spare_status()["pid"] is None
    manager.keep_spare()  # the next tick makes another
    FakeWorkerHandle.spares_die = True
    manager.load("llm")  # the spare dies taking it: a process of its own loads it
    assert state(manager, "llm") == "ready" and FakeWorkerHandle.spawned[-1].spare is None
    assert "the spare worker died taking llm" in caplog.text
    made = len(FakeSpare.made)
    manager.keep_spare()
    assert len(FakeSpare.made) == made  # not every tick: after a back-off
    clock.now += 3
    manager.keep_spare()
    assert len(FakeSpare.made) == made + 1


def test_under_pressure_the_spare_goes_first_and_counts_for_the_room_it_gives(make):
    manager, _, clock = make(
        spare_worker=True, memory_low_watermark=500 * MB, memory_high_watermark=540 * MB, min_residency=0
    )
    manager.load("asr")
    manager.keep_spare()
    clock.now += 100
    assert manager.relieve_pressure(490 * MB) == []  # the spare's footprint brings it above the high watermark
    assert FakeSpare.made[-1].released and state(manager) == "ready"
    assert manager.relieve_pressure(490 * MB) == ["asr"]  # no spare left: the idle model goes
