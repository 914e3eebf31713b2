"""The lifecycle contract on a real service: unloads never break a running request, crashes are
contained, settings persist, concurrent clients see consistent states, memory comes back."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from edge_asr.evaluation import word_error_rate
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.samples import REFERENCES
from tests.service import ASR, CHAT_MODELS, Service, available, settled_available, wait_for

DIARIZATION = DEFAULT_MODELS["diarization"]


@pytest.fixture(scope="module")
def long_speech(speech) -> bytes:
    """Two Cities three times over (133 s): a request that runs for seconds."""
    buf = io.BytesIO()
    soundfile.write(buf, np.concatenate([speech["two_cities"]] * 3), 16000, format="WAV")
    return buf.getvalue()


def in_background(fn, *args):
    result: dict = {}

    def run():
        start = time.monotonic()
        result["response"] = fn(*args)
        result["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_unload_during_a_transcription_is_refused_then_waits(service: Service, long_speech):
    assert service.post("/api/models/whisper-tiny-en/load").ok
    thread, result = in_background(service.transcribe, long_speech)
    wait_for(lambda: service.model()["in_flight"] == 1, 5)
    refused = service.post("/api/models/whisper-tiny-en/unload")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "model_busy"
    waited = service.post("/api/models/whisper-tiny-en/unload?wait=60")
    thread.join()
    assert waited.ok and waited.json()["unloaded"]
    assert result["response"].ok
    text = result["response"].json()["text"]
    assert word_error_rate(" ".join([REFERENCES["two_cities"]] * 3), text) < 0.05
    assert service.model()["state"] == "unloaded" and service.workers() == []


def test_kill_9_of_a_worker_mid_request(service: Service, long_speech, clips):
    service.post("/api/models/whisper-tiny-en/load")
    pid = service.model()["worker_pid"]
    thread, result = in_background(service.transcribe, long_speech)
    wait_for(lambda: service.model()["in_flight"] == 1, 5)
    time.sleep(0.3)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    thread.join(10)
    answered_after = time.monotonic() - killed_at
    response = result["response"]
    assert response.status_code == 503 and response.json()["error"]["code"] == "worker_crashed", response.text
    assert "killed by SIGKILL" in response.json()["error"]["message"]
    assert answered_after < 2.0
    status = service.model()
    assert status["state"] == "failed" and status["last_unload_reason"] == "crashed"
    assert service.get("/healthz").ok
    again = service.transcribe(clips["beckett"])
    assert again.ok and word_error_rate(REFERENCES["beckett"], again.json()["text"]) < 0.05
    assert service.model()["worker_pid"] != pid and service.model()["failures"] == 0


def test_an_idle_worker_that_dies_is_noticed(service: Service):
    service.post("/api/models/whisper-tiny-en/load")
    os.kill(service.model()["worker_pid"], signal.SIGKILL)
    status = wait_for(lambda: (s := service.model())["state"] == "failed" and s, 2)
    assert status["reason"] == "crashed: killed by SIGKILL"
    wait_for(lambda: service.workers() == [], 2)  # reaped, no zombie
    events = service.get("/api/events").json()["events"]
    assert (events[-1]["from"], events[-1]["to"], events[-1]["reason"]) == ("ready", "failed", status["reason"])


def test_a_model_that_cannot_load_backs_off(tmp_path, whisper_spec, clips):
    models = tmp_path / "models"
    (models / "broken").mkdir(parents=True)
    for name in whisper_spec.files:
        (models / "broken" / name).write_text("not a model")
    (models / "manifest.toml").write_text(
        '[models.broken]\ntask = "asr"\nfamily = "whisper"\n'
        'files = ["encoder.onnx", "decoder.onnx", "tokenizer.json", "whisper.json"]\n'
    )
    svc = Service(tmp_path / "state", EDGE_ASR_MODELS_DIR=str(models), EDGE_ASR_FAILURE_BACKOFF="30").start()
    try:
        for _ in range(2):
            r = svc.transcribe(clips["beckett"], model="broken")
            assert r.status_code == 500 and r.json()["error"]["code"] == "model_load_failed"
        r = svc.transcribe(clips["beckett"], model="broken")
        assert r.status_code == 503 and 25 <= int(r.headers["Retry-After"]) <= 30
        assert r.json()["error"]["code"] == r.headers["X-Edge-Asr-Reason"] == "backing_off"  # as /readyz says
        assert "failed 2 times in a row" in r.json()["error"]["message"]
        ready = svc.get("/readyz?model=broken")  # a router hears it too, and sends the unit other work
        assert ready.status_code == 503 and ready.headers["X-Edge-Asr-Reason"] == "backing_off"
        assert 25 <= int(ready.headers["Retry-After"]) <= 30 and svc.get("/readyz").ok
        assert svc.model("broken")["state"] == "failed" and svc.workers() == []
        assert svc.model("whisper-tiny-en")["state"] == "unloaded"  # the others are not disturbed
    finally:
        svc.stop()


def test_settings_survive_unload_and_restart(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state").start()
    settings = {"prompt": "Samuel Beckett, Worstward Ho.", "keep_alive": "90s", "priority": 5, "pinned": True}
    assert svc.patch("/api/models/whisper-tiny-en/settings", json=settings).ok
    assert svc.transcribe(clips["beckett"]).ok
    assert svc.post("/api/models/whisper-tiny-en/unload").json()["unloaded"]
    assert svc.model()["settings"] | settings == svc.model()["settings"]
    svc.stop()
    svc = Service(tmp_path / "state").start()
    try:
        assert svc.model()["settings"] | settings == svc.model()["settings"]
        r = svc.transcribe(clips["beckett"])
        assert r.ok and word_error_rate(REFERENCES["beckett"], r.json()["text"]) < 0.05
        assert svc.model()["expires_at"] is None  # pinned: it never hibernates, whatever its keep_alive
    finally:
        svc.stop()


def test_kill_9_of_the_service_during_settings_writes(tmp_path, whisper_spec):
    svc = Service(tmp_path / "state").start()
    stop = threading.Event()
    written: list[int] = []

    def writer():
        n = 0
        while not stop.is_set():
            n += 1
            try:
                svc.patch("/api/models/whisper-tiny-en/settings", json={"priority": n}, timeout=5)
                written.append(n)
            except Exception:
                return

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    svc.kill()
    stop.set()
    for t in threads:
        t.join()
    stored = json.loads((tmp_path / "state" / "settings" / "whisper-tiny-en.json").read_text())
    assert len(written) > 10 and 1 <= stored["priority"] <= max(written) + 4  # a value that was written, whole
    svc = Service(tmp_path / "state").start()
    try:
        assert svc.model()["settings"]["priority"] == stored["priority"]
        assert [p.name for p in (tmp_path / "state" / "settings").iterdir()] == ["whisper-tiny-en.json"]
    finally:
        svc.stop()


def test_8_threads_100_mixed_requests(service: Service, clips):
    beckett = clips["beckett"].read_bytes()
    rng = random.Random(7)
    actions = [
        rng.choice(["transcribe"] * 4 + ["load", "unload", "unload_wait", "free", "settings", "status"])
        for _ in range(100)
    ]

    def act(action: str):
        start = time.monotonic()
        if action == "transcribe":
            r = service.transcribe(beckett, timeout=30)
            ok = r.status_code == 200 and word_error_rate(REFERENCES["beckett"], r.json()["text"]) < 0.05
            ok = ok or r.status_code == 503  # a bounded wait that ran out is an allowed answer
        elif action == "load":
            r = service.post("/api/models/whisper-tiny-en/load", timeout=30)
            ok = r.status_code in (200, 503)
        elif action in ("unload", "unload_wait"):
            query = "?wait=5" if action == "unload_wait" else ""
            r = service.post(f"/api/models/whisper-tiny-en/unload{query}", timeout=30)
            ok = r.status_code in (200, 409, 503)
        elif action == "free":
            r = service.post("/api/system/free", timeout=30)
            ok = r.status_code == 200
        elif action == "settings":
            r = service.patch("/api/models/whisper-tiny-en/settings", json={"priority": rng.randint(0, 9)}, timeout=30)
            ok = r.status_code == 200
        else:
            r = service.get("/api/models", timeout=30)
            ok = r.status_code == 200
        assert "error" not in r.text or r.json()["error"]["type"] != "server_error" or r.status_code == 503, r.text
        return action, r.status_code, ok, time.monotonic() - start

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(act, actions))
    assert all(status != 500 for _, status, _, _ in results), results
    assert all(ok for *_, ok, _ in results), [r for r in results if not r[2]]
    assert max(seconds for *_, seconds in results) < 30
    transcribed = sum(1 for action, status, *_ in results if action == "transcribe" and status == 200)
    assert transcribed >= 0.8 * actions.count("transcribe")
    # consistent afterwards: a settled state, no request counted as running, workers match the state
    status = wait_for(lambda: (s := service.model())["state"] in ("ready", "unloaded") and s, 10)
    assert status["in_flight"] == 0
    assert len(service.workers()) == (1 if status["state"] == "ready" else 0)
    events = service.get("/api/events").json()["events"]
    loads = sum(e["to"] == "ready" for e in events)
    unloads = sum(e["to"] == "unloaded" for e in events)
    assert loads - unloads == (1 if status["state"] == "ready" else 0)


def test_a_load_evicts_the_idle_model_when_the_budget_is_short(tmp_path, config, whisper_spec, clips):
    models = tmp_path / "models"
    models.mkdir()
    (models / "whisper-b").symlink_to(whisper_spec.directory)
    (models / "whisper-tiny-en").symlink_to(whisper_spec.directory)
    (models / "silero-vad").symlink_to(get_model(config, "silero-vad").directory)
    (models / "manifest.toml").write_text(
        '[models.whisper-b]\ntask = "asr"\nfamily = "whisper"\nvad = "silero-vad"\npriority = 1\n'
        'files = ["encoder.onnx", "decoder.onnx", "tokenizer.json", "whisper.json"]\n'
    )
    svc = Service(tmp_path / "state", EDGE_ASR_MODELS_DIR=str(models)).start()
    try:  # both footprints learned (a model never loaded is predicted from its files' size)
        assert svc.transcribe(clips["beckett"]).ok and svc.transcribe(clips["beckett"], model="whisper-b").ok
        footprint = max(svc.model()["footprint_bytes"], svc.model("whisper-b")["footprint_bytes"])
    finally:
        svc.stop()
    # one model fits the budget, two do not
    svc = Service(tmp_path / "state", EDGE_ASR_MODELS_DIR=str(models), EDGE_ASR_MEMORY_BUDGET=str(int(1.6 * footprint)))
    svc.start()
    try:
        assert svc.transcribe(clips["beckett"]).ok
        r = svc.transcribe(clips["beckett"], model="whisper-b")
        assert r.ok and word_error_rate(REFERENCES["beckett"], r.json()["text"]) < 0.05
        assert svc.model()["state"] == "unloaded"
        assert svc.model()["last_unload_reason"] == "evicted-for:whisper-b"
        assert svc.model("whisper-b")["state"] == "ready" and len(svc.workers()) == 1
        # pinned models are never evicted: then the load cannot fit and says how much is missing
        assert svc.patch("/api/models/whisper-b/settings", json={"pinned": True}).ok
        r = svc.transcribe(clips["beckett"])
        assert r.status_code == 503 and r.json()["error"]["code"] == "insufficient_memory"
        assert "missing" in r.json()["error"]["message"] and r.headers["Retry-After"]
        assert svc.model("whisper-b")["state"] == "ready" and svc.model()["state"] == "unloaded"
    finally:
        svc.stop()


CYCLES = int(os.environ.get("EDGE_ASR_TEST_CYCLES", "20"))


def rss(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize(
    ("model", "cycles"), [(ASR, CYCLES), *((m, CYCLES // 2) for m in CHAT_MODELS), (DIARIZATION, CYCLES // 2)]
)
def test_load_use_unload_cycles_give_the_memory_back(service: Service, clips, model, cycles):
    """The system's available memory comes back to no less than 16 MB under the start, for the
    speech model, the LLM on each of its runtimes and the diarization model (each release frees
    what its load took; all but the speech model with half as many cycles, to keep the suite's
    time: ``bench/lifecycle.py`` runs hundreds).

    Start is measured after warm-up cycles (page cache holds the model files, the front
    process's thread arenas exist) once MemAvailable is steady. This VM hands freed pages back
    lazily (free page reporting), so the end is polled for up to 60 s; a leak never comes back.
    Only a fall counts: memory other processes on the machine free meanwhile is not a leak."""
    beckett = clips["beckett"].read_bytes()
    chat = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}

    def use() -> requests.Response:
        if model == ASR:
            return service.transcribe(beckett)
        if model == DIARIZATION:
            return service.post("/v1/audio/diarization", files={"file": ("b.wav", beckett)})
        return service.post("/v1/chat/completions", json=chat)

    def cycle():
        assert use().ok
        assert service.post(f"/api/models/{model}/unload").json()["unloaded"]

    for _ in range(3):
        cycle()
    start_available, start_rss = settled_available(40), rss(service.process.pid)
    for _ in range(cycles):
        cycle()
    assert service.workers() == []
    assert rss(service.process.pid) - start_rss < 4e6  # the front process does not grow per cycle
    came_back = wait_for(lambda: available() - start_available > -16e6, 60, 0.25, raises=False)
    assert came_back, f"MemAvailable is {(start_available - available()) / 1e6:.0f} MB under the start"
    events = [e for e in service.get("/api/events").json()["events"] if e["from"] == "ready" and e["to"] == "unloaded"]
    assert len(events) == cycles + 3 and all(e["worker"]["exit"] == "exited with status 0" for e in events)
    assert all("error" not in step for e in events for step in e["worker"]["steps"]), events[-1]


def test_sigterm_releases_every_worker(service: Service, clips):
    assert service.transcribe(clips["beckett"]).ok
    worker = service.model()["worker_pid"]
    assert service.stop() == 0
    assert not Path(f"/proc/{worker}").exists()
    reasons = [json.loads(line)["reason"] for line in (service.state_dir / "events.jsonl").read_text().splitlines()]
    assert reasons[-1] == "shutdown"


def test_a_streaming_client_that_leaves_returns_its_lease(service: Service, long_speech, clips):
    import requests

    with requests.post(
        service.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", long_speech)},
        data={"stream": "true"},
        stream=True,
        timeout=60,
    ) as r:
        first = next(r.iter_lines(decode_unicode=True))
        assert first.startswith('data: {"type": "transcript.text.delta"')
    # the worker stops after the chunk it was decoding, and the lease comes back
    wait_for(lambda: service.model()["in_flight"] == 0, 30)
    again = service.transcribe(clips["beckett"])
    assert again.ok and word_error_rate(REFERENCES["beckett"], again.json()["text"]) < 0.05
    assert service.model()["state"] == "ready" and service.model()["failures"] == 0


def test_a_worker_that_hangs_mid_request_is_killed_and_the_request_fails_cleanly(
    tmp_path, whisper_spec, long_speech, clips
):
    svc = Service(tmp_path / "state", EDGE_ASR_STALL_TIMEOUT="2", EDGE_ASR_MEMORY_INTERVAL_MS="200").start()
    try:
        with ThreadPoolExecutor(1) as pool:
            request = pool.submit(svc.transcribe, long_speech)
            wait_for(lambda: svc.model()["in_flight"] == 1, 10)
            worker = svc.model()["worker_pid"]
            os.kill(worker, signal.SIGSTOP)  # alive but silent, as a deadlocked runtime would be
            frozen = time.monotonic()
            r = request.result(timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "worker_crashed"
        assert "stalled" in r.json()["error"]["message"]
        # The stall timeout, a tick, the kill; counted from the request's last word to the worker,
        # which came a moment before the SIGSTOP (the in-flight poll and a status call: < 0.25 s).
        assert 2 - 0.25 <= time.monotonic() - frozen < 2 + 0.2 + 3
        assert svc.model()["state"] == "failed" and worker not in svc.workers()
        again = svc.transcribe(clips["beckett"])  # the next request loads it again
        assert again.ok and word_error_rate(REFERENCES["beckett"], again.json()["text"]) < 0.05
    finally:
        svc.stop()


def test_a_wake_hands_the_spare_worker_its_model_and_a_new_spare_follows(service: Service, clips):
    spare = wait_for(lambda: (s := service.spare())["ready"] and s, 30)
    assert 20e6 < spare["footprint_bytes"] < 300e6 and spare["pid"] not in service.workers()
    assert service.transcribe(clips["beckett"]).ok
    assert service.model()["worker_pid"] == spare["pid"]  # the spare became the model's worker
    follower = wait_for(lambda: (s := service.spare())["ready"] and s["pid"] != spare["pid"] and s, 30)
    os.kill(follower["pid"], signal.SIGKILL)  # the OOM killer's choice, say
    replaced = wait_for(lambda: (s := service.spare())["ready"] and s["pid"] != follower["pid"] and s, 30)
    wait_for(lambda: not Path(f"/proc/{follower['pid']}").exists(), 5)  # reaped
    assert service.post(f"/api/models/{ASR}/unload").json()["unloaded"]
    assert service.transcribe(clips["beckett"]).ok and service.model()["worker_pid"] == replaced["pid"]


def test_without_the_spare_worker_setting_a_wake_starts_a_process(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_SPARE_WORKER="0").start()
    try:
        time.sleep(1.5)  # a supervisor tick or more
        spare = svc.spare()
        assert not spare["enabled"] and spare["pid"] is None and not spare["ready"]
        assert svc.transcribe(clips["beckett"]).ok and len(svc.workers()) == 1
    finally:
        svc.stop()


def test_an_unloads_residue_is_judged_once_memory_has_settled(service: Service, clips):
    """This VM hands a dead worker's pages back over tens of seconds: judged at the exit, the
    unload cried ~all of the worker as residue (reclaimed 4 kB of 294 MB)."""
    assert service.transcribe(clips["beckett"]).ok
    wait_for(lambda: service.spare()["ready"], 30)  # no spare starts in the middle of the judgement
    unload = service.post(f"/api/models/{ASR}/unload").json()
    settled = wait_for(
        lambda: [e for e in service.get("/api/events").json()["events"] if e["reason"] == "memory settled"], 90
    )[0]
    assert settled["model"] == ASR and settled["held_bytes"] > 100e6
    assert settled["reclaimed_bytes"] >= unload["reclaimed_bytes"]
    assert settled["residue_bytes"] < 0.2 * settled["held_bytes"], settled  # it cried ~100% at the exit
    metrics = service.get("/metrics").text
    assert f'edge_asr_model_residue_bytes_count{{model="{ASR}"}} 1.0' in metrics
