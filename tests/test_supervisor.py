"""The supervisor on a real service: idle hibernation (keep-alive from the settings and from
requests, Ollama's semantics; pinned models), and hibernation under memory pressure read from
tegrastats (a fake that replays recorded lines), with settings that survive hibernation."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.tegrastats_feed import INTERVAL_MS, RECORDED, pressure_env, replay, under_pressure
from tests.service import Service, children, cmdline, wait_for

ASR, LLM = "whisper-tiny-en", "smollm2-135m-instruct"


def unloaded(service: Service, model_id: str = ASR) -> dict | None:
    status = service.model(model_id)
    return status if status["state"] == "unloaded" else None


def test_keep_alive_setting_unloads_after_that_long_idle(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "2s", "prompt": "Beckett"}).ok
    assert service.transcribe(clips["beckett"]).ok
    idle_from = service.model()["last_used"]
    assert service.model()["expires_at"] == pytest.approx(idle_from + 2, abs=0.01)  # wall clock, from monotonic
    status = wait_for(lambda: unloaded(service), 10)
    hibernated = service.get("/api/events", params={"model": ASR}).json()["events"][-1]
    assert hibernated["reason"] == "idle" and status["last_unload_reason"] == "idle"
    # two seconds of idleness, then at most one supervisor interval (1 s) and the unload itself
    assert 2.0 <= hibernated["time"] - idle_from <= 2.0 + 1.0 + hibernated["duration_s"] + 0.5
    assert service.workers() == []
    # it wakes on the next request, its settings intact
    assert service.transcribe(clips["beckett"]).ok
    assert service.model()["state"] == "ready" and service.model()["settings"]["prompt"] == "Beckett"


def test_request_keep_alive_zero_unloads_right_after_the_request(service: Service, clips):
    start = time.time()
    assert service.transcribe(clips["beckett"], keep_alive="0").ok
    wait_for(lambda: unloaded(service), 5)
    assert time.time() - start < 5
    client = service.openai()
    reply = client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, extra_body={"keep_alive": 0}
    )
    assert reply.choices[0].message.content
    wait_for(lambda: unloaded(service, LLM), 5)
    assert service.model(LLM)["last_unload_reason"] == "idle" and service.workers() == []


def test_request_keep_alive_negative_keeps_until_a_request_without_it(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "1s"}).ok
    assert service.transcribe(clips["beckett"], keep_alive="-1").ok
    assert service.model()["expires_at"] is None
    time.sleep(3)
    assert service.model()["state"] == "ready"
    assert service.transcribe(clips["beckett"]).ok  # no keep_alive: the setting (1 s) applies again
    wait_for(lambda: unloaded(service), 5)


def test_a_pinned_model_never_hibernates(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "1s", "pinned": True}).ok
    assert service.transcribe(clips["beckett"]).ok
    time.sleep(3)
    assert service.model()["state"] == "ready" and service.model()["expires_at"] is None


def test_a_bad_keep_alive_is_a_400(service: Service, clips):
    r = service.transcribe(clips["beckett"], keep_alive="soon")
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]
    r = service.post(
        "/v1/chat/completions", json={"model": LLM, "messages": [{"role": "user", "content": "Hi"}], "keep_alive": [1]}
    )
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]
    assert service.model()["state"] == "unloaded"  # rejected before anything loaded


# -- memory pressure, read from tegrastats (the fake that replays recorded lines) ---------------


@pytest.fixture
def pressure_service(tmp_path, whisper_spec):
    feed = tmp_path / "tegrastats-lines.txt"
    replay(feed, [*RECORDED, "garbage that has no RAM field"])
    svc = Service(tmp_path / "state", **pressure_env(feed)).start()
    yield svc, feed
    svc.stop()


def test_pressure_hibernates_the_idle_model_not_the_busy_one(pressure_service, clips):
    svc, feed = pressure_service
    memory = wait_for(lambda: (m := svc.get("/api/system/memory").json())["current"]["source"] == "tegrastats" and m, 5)
    assert memory["source"] == "tegrastats" and memory["current"]["total_bytes"] == 62841 * 2**20
    assert svc.patch(f"/api/models/{ASR}/settings", json={"prompt": "Beckett"}).ok
    assert svc.transcribe(clips["beckett"]).ok
    client = svc.openai()
    story = [{"role": "user", "content": "Write a long story about a lighthouse keeper and his dog."}]
    with ThreadPoolExecutor(1) as pool:  # the LLM busy with a long answer all through the pressure
        busy = pool.submit(
            lambda: client.chat.completions.create(model=LLM, messages=story, temperature=0, max_tokens=1500)
        )
        wait_for(lambda: svc.model(LLM)["in_flight"] == 1, 30)
        pressure_from = time.time()
        replay(feed, [under_pressure(line, 300) for line in RECORDED])
        wait_for(lambda: unloaded(svc), 10, 0.02)
        hibernated = svc.get("/api/events", params={"model": ASR}).json()["events"][-1]
        assert hibernated["reason"] == "pressure" and svc.model()["last_unload_reason"] == "pressure"
        # the next reading comes within an interval; the one after at the latest (the switch may land mid-tick)
        assert hibernated["time"] - pressure_from <= 2 * INTERVAL_MS / 1000 + hibernated["duration_s"] + 0.3
        time.sleep(1)  # pressure goes on: the busy model stays
        llm = svc.model(LLM)
        assert llm["state"] == "ready" and llm["in_flight"] == 1
        replay(feed, RECORDED)
        assert busy.result().choices[0].finish_reason == "length"
    assert svc.model(LLM)["state"] == "ready"
    # it wakes on the next request, its settings intact; a reload this soon after is counted as thrash
    assert svc.transcribe(clips["beckett"]).ok
    status = svc.model()
    assert status["state"] == "ready" and status["settings"]["prompt"] == "Beckett" and status["thrashes"] == 1
    info = svc.get("/api/system/memory").json()["info"]
    assert info["skipped_lines"] >= 1 and info["lines"] > 4  # the garbage line was skipped, not fatal


def tegrastats_children(svc: Service) -> list[int]:
    assert svc.process is not None
    return [p for p in children(svc.process.pid) if b"tegrastats" in (cmdline(p) or b"")]


def test_tegrastats_is_restarted_when_it_dies_and_stopped_with_the_service(pressure_service):
    svc, _ = pressure_service
    wait_for(lambda: svc.get("/api/system/memory").json()["info"]["lines"] > 0, 5)
    fake = tegrastats_children(svc)
    assert len(fake) == 1
    os.kill(fake[0], signal.SIGKILL)
    info = wait_for(lambda: (i := svc.get("/api/system/memory").json()["info"])["restarts"] == 1 and i, 5)
    lines, since = info["lines"], time.time()
    wait_for(lambda: svc.get("/api/system/memory").json()["info"]["lines"] > lines, 5)
    memory = svc.get("/api/system/memory", params={"since": since}).json()
    assert memory["current"]["source"] == "tegrastats" and memory["history"]
    assert all(r["time"] > since for r in memory["history"])  # the ring buffer, from `since` on
    restarted = tegrastats_children(svc)
    assert len(restarted) == 1 and restarted != fake
    assert svc.stop() == 0
    assert not Path(f"/proc/{restarted[0]}").exists()  # stopped and reaped with the service


def test_a_model_loaded_less_than_min_residency_ago_is_not_hibernated(tmp_path, whisper_spec, clips):
    feed = tmp_path / "tegrastats-lines.txt"
    replay(feed, [under_pressure(line, 300) for line in RECORDED])  # pressure from the start
    env = pressure_env(feed) | {"EDGE_ASR_MIN_RESIDENCY": "5s"}
    svc = Service(tmp_path / "state", **env).start()
    try:
        assert svc.transcribe(clips["beckett"]).ok
        loaded_at = svc.model()["loaded_at"]
        # 3 s after the load (the first transcription alone takes ~1 s of them here): 12 pressure
        # readings, and it stays
        time.sleep(max(0.0, loaded_at + 3 - time.time()))
        assert svc.model()["state"] == "ready"
        wait_for(lambda: unloaded(svc), 6)
        hibernated = svc.get("/api/events", params={"model": ASR}).json()["events"][-1]
        assert hibernated["reason"] == "pressure" and hibernated["time"] - loaded_at >= 5
    finally:
        svc.stop()


def test_the_supervisor_never_waits_behind_a_long_load(tmp_path, config, whisper_spec, clips):
    """In process, on a real worker: while a load or unload holds the lifecycle lock (a TensorRT
    load can take minutes), expiry and pressure checks return at once instead of blocking the
    supervisor's loop (and with it the watchdog pings), and act on the next tick."""
    import dataclasses
    import threading

    from edge_asr.audio import decode_audio
    from edge_asr.lifecycle import ModelManager, result
    from edge_asr.workers.protocol import TranscriptionOptions

    manager = ModelManager.create(dataclasses.replace(config, state_dir=tmp_path / "state", keep_alive=0.0))
    try:
        with manager.lease(ASR) as lease:
            assert result(lease.transcribe(decode_audio(clips["beckett"]), TranscriptionOptions()))["text"]
        held, release = threading.Event(), threading.Event()

        def long_load() -> None:
            with manager._operations.hold("a long load", 10):
                held.set()
                release.wait(10)

        loader = threading.Thread(target=long_load)
        loader.start()
        held.wait(5)
        start = time.monotonic()
        retry_at = manager.hibernate_expired()
        assert manager.relieve_pressure(available=0) == []
        assert time.monotonic() - start < 0.5 and retry_at is not None and retry_at - time.monotonic() < 1
        assert manager.status(ASR)["state"] == "ready"
        release.set()
        loader.join()
        assert manager.hibernate_expired() is None
        assert manager.status(ASR)["state"] == "unloaded" and manager.status(ASR)["last_unload_reason"] == "idle"
    finally:
        manager.shutdown()


def test_the_spare_worker_goes_first_under_pressure_and_comes_back_with_the_room(pressure_service):
    svc, feed = pressure_service
    spare = wait_for(lambda: (s := svc.spare())["ready"] and s, 30)
    replay(feed, [under_pressure(line, 300) for line in RECORDED])
    wait_for(lambda: svc.spare()["pid"] is None, 5)
    wait_for(lambda: not Path(f"/proc/{spare['pid']}").exists(), 5)  # ended and reaped
    time.sleep(1)
    assert svc.spare()["pid"] is None  # not made again while memory is short
    replay(feed, RECORDED)
    again = wait_for(lambda: (s := svc.spare())["ready"] and s, 30)
    assert again["pid"] != spare["pid"]
