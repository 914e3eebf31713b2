"""A unit the LAN cannot break, on the real service with real workers: the API key on every
endpoint (the list checked against the app's own routes), a crowd of large uploads in bounded
memory, a client leaving a stream from a frozen worker, a full state directory, fuzzed ids and
settings."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from tests.service import Service, fill, wait_for

ASR = "whisper-tiny-en"
KEYS = ("edge-key-7f3a9c", "edge-key-b21e05")


def status_of(response: requests.Response) -> tuple[int, str | None]:
    code = response.json()["error"]["code"] if response.status_code >= 400 else None
    return response.status_code, code


def guarded_calls(wav: bytes) -> list[tuple[str, str, dict, int]]:
    """A request to every route the API key guards (the rule, as Flask names it, and what a request
    with a valid key gets: a translation on the English-only model is refused past the key)."""
    audio = {"files": {"file": ("a.wav", wav)}, "data": {"model": ASR}}
    chat = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return [
        ("GET", "/v1/models", {}, 200),
        ("POST", "/v1/audio/transcriptions", audio, 200),
        ("POST", "/v1/audio/translations", audio, 400),
        ("POST", "/v1/audio/diarization", {"files": {"file": ("a.wav", wav)}}, 200),
        ("GET", "/api/speakers", {}, 200),
        ("POST", "/api/speakers", {"files": {"file": ("a.wav", wav)}, "data": {"name": "ann"}}, 200),
        ("DELETE", "/api/speakers/<name>", {}, 404),  # nobody of that name: refused past the key
        ("POST", "/v1/chat/completions", {"json": chat}, 200),
        ("POST", "/v1/audio/speech", {"json": {"model": "piper-joe-en", "input": "Hi."}}, 200),
        ("GET", "/v1/audio/voices", {}, 200),
        ("GET", "/v1/realtime", {}, 400),  # a WebSocket: a plain GET passes the key, then is refused
        ("POST", "/api/pipeline", {"files": {"file": ("a.wav", wav)}, "data": {"max_tokens": "2"}}, 200),
        ("GET", "/api/models", {}, 200),
        ("GET", "/api/models/<model_id>", {}, 200),
        ("POST", "/api/models/<model_id>/load", {}, 200),
        ("PATCH", "/api/models/<model_id>/settings", {"json": {"priority": 1}}, 200),
        ("POST", "/api/models/<model_id>/unload", {}, 200),
        ("POST", "/api/system/free", {}, 200),
        ("POST", "/api/system/drain", {}, 200),
        ("DELETE", "/api/system/drain", {}, 200),  # after the drain: the calls after it find the unit ready
        ("GET", "/api/system/memory", {}, 200),
        ("GET", "/api/events", {}, 200),
        ("GET", "/api/stream", {"stream": True}, 200),
        ("GET", "/metrics", {}, 200),
    ]


PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/"), ("GET", "/web/<path:filename>")}  # probes, the page


def test_the_key_test_calls_every_route_the_app_has(config, tmp_path):
    from dataclasses import replace

    from edge_asr.server import create_app

    app = create_app(replace(config, state_dir=tmp_path / "state"))
    app.extensions["edge_asr.manager"].shutdown()
    routes = {(m, r.rule) for r in app.url_map.iter_rules() for m in r.methods - {"HEAD", "OPTIONS"}}
    assert routes == {(method, rule) for method, rule, _, _ in guarded_calls(b"")} | PUBLIC


def test_the_api_key_guards_every_endpoint_but_healthz_and_the_page(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_API_KEY=",".join(KEYS)).start()
    try:
        for method, rule, kw, status in guarded_calls(clips["beckett"].read_bytes()):
            path = rule.replace("<model_id>", ASR).replace("<name>", "nobody")
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS[0]}"}):
                with requests.request(method, svc.url + path, headers=headers, timeout=60, **kw) as refused:
                    assert status_of(refused) == (401, "invalid_api_key"), (method, path, headers)
            for key in KEYS:
                headers = {"Authorization": f"Bearer {key}"}
                with requests.request(method, svc.url + path, headers=headers, timeout=120, **kw) as answer:
                    assert answer.status_code == status, (method, path, answer.text[:200] if status != 200 else "")
        for path in ("/healthz", "/readyz", "/", "/web/app.js"):
            assert svc.get(path).status_code == 200, path
        client = svc.openai()
        client.api_key = KEYS[1]
        with clips["beckett"].open("rb") as f:
            text = client.audio.transcriptions.create(model=ASR, file=f).text
        assert word_error_rate(REFERENCES["beckett"], text) < 0.1
    finally:
        svc.stop()
    assert not any(key in svc.log.read_text() for key in KEYS)  # never logged
    public = Service(tmp_path / "public", EDGE_ASR_API_KEY=KEYS[0], EDGE_ASR_METRICS_PUBLIC="true").start()
    try:
        assert public.get("/metrics").status_code == 200
        assert public.get("/api/models").status_code == 401
    finally:
        public.stop()


@pytest.fixture(scope="module")
def large_wav(speech) -> bytes:
    """A 96-MB WAV: 9 minutes of 44.1-kHz stereo, a sentence of speech every minute in silence."""
    rate, minute = 44100, 44100 * 60
    sentence = soundfile.read(io.BytesIO(_wav(speech["beckett"], 16000)), dtype="int16")[0]
    resampled = np.interp(np.arange(0, len(sentence), 16000 / rate), np.arange(len(sentence)), sentence)
    frames = 96 * 10**6 // 4 - 11
    track = np.zeros(frames, np.int16)
    for start in range(0, frames - len(resampled), minute):
        track[start : start + len(resampled)] = resampled.astype(np.int16)
    data = _wav(np.stack([track, track], axis=1), rate)
    assert abs(len(data) - 96e6) < 1e3
    return data


def _wav(samples: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_16_clients_uploading_96_mb_at_once_stay_in_bounded_memory(tmp_path, whisper_spec, large_wav, clips):
    svc = Service(tmp_path / "state").start()
    try:
        assert svc.post(f"/api/models/{ASR}/load").ok

        def upload(_: int) -> tuple[int, str | None, float, float]:
            start = time.monotonic()
            r = requests.post(
                svc.url + "/v1/audio/transcriptions",
                files={"file": ("long.wav", large_wav)},
                data={"model": ASR, "beam_size": "1"},
                timeout=200,
            )
            retry = float(r.headers.get("Retry-After", 0))
            return (
                r.status_code,
                r.json().get("text") if r.ok else r.json()["error"]["code"],
                retry,
                time.monotonic() - start,
            )

        health: list[int] = []

        def probe() -> None:  # reads keep their own threads: /healthz answers while uploads fill the rest
            while len(health) < 1000 and not done.is_set():
                try:
                    health.append(requests.get(svc.url + "/healthz", timeout=5).status_code)
                except requests.RequestException:
                    health.append(0)  # no answer within 5 s
                time.sleep(0.5)

        done = threading.Event()
        prober = threading.Thread(target=probe)
        prober.start()
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(upload, range(16)))
        done.set()
        prober.join()
        assert len(health) > 10 and set(health) == {200}
        assert all(seconds < 180 for *_, seconds in answers), answers
        assert {status for status, *_ in answers} <= {200, 503}, answers
        served = [text for status, text, *_ in answers if status == 200]
        assert served and all(text.lower().count("better") >= 8 for text in served), served  # 9 sentences heard
        assert all(retry >= 1 for status, _, retry, _ in answers if status == 503)
        peak = peak_rss(svc.process.pid)
        assert peak < 600e6, f"the front process peaked at {peak / 1e6:.0f} MB"
        assert svc.get("/healthz").ok
        again = svc.transcribe(clips["beckett"])
        assert again.ok and word_error_rate(REFERENCES["beckett"], again.json()["text"]) < 0.1
    finally:
        svc.stop()


def test_a_client_that_leaves_a_stream_from_a_frozen_worker_does_not_hold_the_model(tmp_path, whisper_spec, speech):
    stall = 8  # longer than the worker takes to send its first window here, at beam 1
    svc = Service(tmp_path / "state", EDGE_ASR_STALL_TIMEOUT=str(stall)).start()
    try:
        long = _wav(np.concatenate([speech["two_cities"]] * 3), 16000)
        svc.post(f"/api/models/{ASR}/load")
        pid = svc.model()["worker_pid"]
        stream = requests.post(
            svc.url + "/v1/audio/transcriptions",
            files={"file": ("long.wav", long)},
            data={"model": ASR, "stream": "true", "beam_size": "1"},
            stream=True,
            timeout=60,
        )
        assert next(stream.iter_lines()).startswith(b"data: ")  # the worker is mid-request
        stream.close()  # the client leaves...
        os.kill(pid, signal.SIGSTOP)  # ...and the worker freezes
        left = time.monotonic()
        served = wait_for(lambda: (r := svc.transcribe(_wav(speech["beckett"], 16000))).ok and r, stall + 5, 0.5)
        assert time.monotonic() - left < stall + 5
        assert word_error_rate(REFERENCES["beckett"], served.json()["text"]) < 0.1
        assert svc.model()["worker_pid"] != pid and svc.model()["in_flight"] == 0
        wait_for(lambda: pid not in svc.workers(), 5)  # the frozen one killed and reaped
    finally:
        svc.stop()


@pytest.fixture
def full_state_dir(tmp_path):
    """A 1-MB tmpfs as the state directory (CI runs as root, as the unit's service does not need to)."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(state)], check=True)
    yield state
    subprocess.run(["umount", "-l", str(state)], check=True)


def test_a_full_state_directory_stops_no_model(full_state_dir, whisper_spec, clips):
    svc = Service(full_state_dir, EDGE_ASR_KEEP_ALIVE="0").start()
    try:
        stored = svc.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "5m"}).json()["settings"]
        filler = fill(full_state_dir)
        for _ in range(3):
            assert svc.post(f"/api/models/{ASR}/load").json()["state"] == "ready"
            r = svc.transcribe(clips["beckett"])
            assert r.ok and word_error_rate(REFERENCES["beckett"], r.json()["text"]) < 0.1
            assert svc.post(f"/api/models/{ASR}/unload").json()["unloaded"]
        assert svc.model()["state"] == "unloaded" and svc.model()["footprint_bytes"] > 0
        refused = svc.patch(f"/api/models/{ASR}/settings", json={"priority": 3})
        assert status_of(refused) == (507, "insufficient_storage")
        assert svc.model()["settings"] == stored and stored["keep_alive"] == "5m"
        events = svc.get("/api/events").json()["events"]
        assert [e["to"] for e in events] == ["ready", "unloaded"] * 3
        log = svc.log.read_text()
        assert log.count("cannot write events") == 1 and log.count("cannot write footprints") == 1
        filler.unlink()
        assert svc.patch(f"/api/models/{ASR}/settings", json={"priority": 3}).ok
        svc.post(f"/api/models/{ASR}/load")
        assert "writing events" in svc.log.read_text()  # and it says when writes work again
    finally:
        svc.stop()


@pytest.mark.parametrize(
    "model_id",
    ["../../etc/passwd", "..%2F..%2Fetc", "x" * 10_000, "whisper-tiny-en\x00", "ünïcødé", "%00", "a/b/c"],
)
def test_fuzzed_model_ids_are_4xx(service: Service, model_id):
    for method, path in (
        ("GET", f"/api/models/{model_id}"),
        ("POST", f"/api/models/{model_id}/load"),
        ("PATCH", f"/api/models/{model_id}/settings"),
    ):
        r = requests.request(method, service.url + path, json={"priority": 1}, timeout=30)
        assert 400 <= r.status_code < 500 and "error" in r.json(), (method, path[:80], r.status_code)
    r = service.transcribe(b"RIFF", model=model_id)
    assert 400 <= r.status_code < 500 and len(r.text) < 2000


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x" * 5_000_000},
        {"language": "en" * 100},
        {"prompt": 7},
        {"priority": "high"},
        {"priority": 1.5},
        {"pinned": "yes"},
        {"keep_alive": [1]},
        {"keep_alive": "forever"},
        {"beam_size": 0},
        {"no_such_setting": 1},
        {"__class__": {}},
        [1, 2],
        "a string",
        None,
    ],
)
def test_fuzzed_settings_are_4xx_and_change_nothing(service: Service, body):
    before = service.model()["settings"]
    r = service.patch(f"/api/models/{ASR}/settings", json=body)
    assert r.status_code in (400, 413), r.text
    assert service.model()["settings"] == before


def test_bodies_too_large_or_too_deep_are_4xx(service: Service):
    huge = (
        b'{"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "' + b"a" * 60_000_000 + b'"}]}'
    )
    r = service.post("/v1/chat/completions", data=huge, headers={"Content-Type": "application/json"})
    assert status_of(r) == (413, "payload_too_large")
    deep = b"[" * 100_000 + b"]" * 100_000
    r = service.post("/v1/chat/completions", data=deep, headers={"Content-Type": "application/json"})
    assert status_of(r) == (400, "invalid_request") and "nested too deeply" in r.json()["error"]["message"]
    assert service.get("/healthz").ok
