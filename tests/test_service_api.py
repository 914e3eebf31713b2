"""The HTTP API on a real service process: shapes (the contract), transcription, and bad input."""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from tests.service import CHAT_MODELS, Service, wait_for, wav

MODEL_FIELDS = {
    "id",
    "task",
    "state",
    "in_flight",
    "footprint_bytes",
    "loaded_at",
    "last_used",
    "expires_at",
    "last_unload_reason",
    "settings",
    "runtime_preferred",
    "runtime",
    "runtime_reason",
    "providers",
}
EVENT_FIELDS = {"time", "model", "from", "to", "reason", "mem_available_before", "mem_available_after", "duration_s"}


def assert_openai_error(response, status: int, code: str, words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    assert set(error) >= {"message", "type", "code"}


def test_transcription_json_and_text(service: Service, clips):
    r = service.transcribe(clips["beckett"])
    assert r.status_code == 200
    assert word_error_rate(REFERENCES["beckett"], r.json()["text"]) < 0.05
    r = service.transcribe(clips["two_cities"], response_format="text")
    assert r.headers["Content-Type"].startswith("text/plain")
    assert word_error_rate(REFERENCES["two_cities"], r.text) < 0.05


def test_models_listing_and_lifecycle_contract(service: Service, clips):
    assert service.get("/healthz").json() == {"status": "ok", "unit": socket.gethostname()}
    ids = [m["id"] for m in service.get("/v1/models").json()["data"]]
    assert ids == ["whisper-tiny-en", "whisper-base", *CHAT_MODELS, "piper-joe-en", "diarization-pyannote-campplus"]
    before = service.model()
    assert before["state"] == "unloaded" and set(before) >= MODEL_FIELDS
    assert before["runtime_preferred"] == "tensorrt" and before["runtime"] is None
    assert service.transcribe(clips["beckett"]).ok
    loaded = service.model()
    assert loaded["state"] == "ready" and loaded["in_flight"] == 0
    assert (
        loaded["footprint_bytes"] > 50e6 and loaded["worker_pid"] and loaded["providers"][-1] == "CPUExecutionProvider"
    )
    # No TensorRT on this machine: the model prefers it and runs on ONNX Runtime, saying why.
    assert loaded["runtime"] == "onnxruntime"
    assert loaded["runtime_reason"].startswith("TensorRT not used: TensorRT's Python bindings are not installed")
    assert loaded["expires_at"] == pytest.approx(
        loaded["last_used"] + 300
    )  # keep_alive 5 min, the configuration's default
    r = service.post("/api/models/whisper-tiny-en/unload")
    assert r.json()["unloaded"] and r.json()["worker"]["exit"] == "exited with status 0"
    after = service.model()
    assert after["state"] == "unloaded" and after["last_unload_reason"] == "user" and after["worker_pid"] is None
    events = service.get("/api/events").json()["events"]
    assert [(e["from"], e["to"]) for e in events] == [("unloaded", "ready"), ("ready", "unloaded")]
    assert all(set(e) >= EVENT_FIELDS for e in events)
    assert loaded["footprint_bytes"] == events[0]["worker_rss_bytes"] == events[0]["footprint_bytes"]  # its own
    assert after["footprint_bytes"] == events[1]["worker"]["rss_peak"]  # the peak it reached serving
    lines = (service.state_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_memory_readings_and_scrapes_leave_the_history_to_the_supervisor(tmp_path, whisper_spec):
    """The history the page charts is the supervisor's samples (one an interval: here one, at its
    start); a look at the API or a scrape of /metrics reads memory without adding to it."""
    svc = Service(tmp_path / "state", EDGE_ASR_MEMORY_INTERVAL_MS="3600000").start()
    try:
        body = wait_for(lambda: (b := svc.get("/api/system/memory").json())["history"] and b, 10)
        assert body["source"] == "meminfo"
        current, history = body["current"], body["history"]
        assert 0 < current["available_bytes"] <= current["total_bytes"]
        assert current["used_bytes"] == current["total_bytes"] - current["available_bytes"]
        assert len(history) == 1 and history[0]["time"] < current["time"]
        for _ in range(5):
            assert "edge_asr_memory_available_bytes" in svc.get("/metrics").text
            assert svc.get("/api/system/memory").json()["current"]["time"] > history[0]["time"]
        assert svc.get("/api/system/memory").json()["history"] == history
    finally:
        svc.stop()


def test_load_free_and_cli(service: Service):
    import subprocess
    import sys

    cli = [sys.executable, "-m", "edge_asr"]
    env = {**service.env}
    done = subprocess.run([*cli, "load", "whisper-tiny-en"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and "whisper-tiny-en: ready" in done.stdout, done.stderr
    ps = subprocess.run([*cli, "ps"], capture_output=True, text=True, env=env, timeout=60).stdout
    assert ps.splitlines()[0] == f"unit {socket.gethostname()}"  # the default name; behind a router, who answered
    row = next(line.split() for line in ps.splitlines() if line.startswith("whisper-tiny-en"))
    assert row[:3] == ["whisper-tiny-en", "asr", "ready"] and row[6] == "in" and row[7] in ("5m00s", "4m59s")
    freed = service.post("/api/system/free").json()
    assert freed["unloaded"] == ["whisper-tiny-en"] and isinstance(freed["reclaimed_bytes"], int)
    done = subprocess.run([*cli, "unload", "whisper-tiny-en"], capture_output=True, text=True, env=env, timeout=60)
    assert "was not loaded (unloaded)" in done.stdout
    assert service.workers() == []


def tone(seconds: float, channels: int = 1, rate: int = 16000) -> np.ndarray:
    samples = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)).astype(np.float32)
    return np.tile(samples[:, None], (1, channels)) if channels > 1 else samples


def with_size(data: bytes, size: int) -> bytes:
    return data[:40] + struct.pack("<I", size) + data[44:]


def with_rate(data: bytes, rate: int) -> bytes:
    return data[:24] + struct.pack("<I", rate) + data[28:]


BAD_AUDIO = {
    "empty": (b"", "empty"),
    "header-only": (wav(tone(1))[:44], "promises 32000 bytes of audio, 0 are there"),
    "truncated": (wav(tone(2))[: 44 + 20000], "truncated"),
    "header-lies": (with_size(wav(tone(2)), 4000), "more audio follows"),
    "zero-rate": (with_rate(wav(tone(1)), 0), "not a readable audio file"),
    "absurd-rate": (with_rate(wav(tone(1)), 4_000_000), "impossible sample rate"),
    "64-channels": (wav(tone(1, channels=64)), "64 channels"),
    "nan": (wav(np.full(16000, np.nan, np.float32), "FLOAT"), "NaN"),
    "inf": (wav(np.full(16000, np.inf, np.float32), "FLOAT"), "infinite"),
    "random-bytes": (np.random.default_rng(3).bytes(100_000), "not a readable audio file"),
    "text-file": (b"just some text\n" * 20, "not a readable audio file"),
    "corrupt-header": (b"RIFF\x00\x00\x00\x00WAVEfmt garbage", "not a readable audio file"),
    "10ms": (wav(tone(0.01)), "10 ms long"),
}


@pytest.mark.parametrize("case", BAD_AUDIO)
def test_bad_audio_is_a_400_and_disturbs_nothing(service: Service, clips, case):
    data, words = BAD_AUDIO[case]
    assert_openai_error(service.transcribe(data), 400, "invalid_request", words)
    assert service.model()["state"] == "unloaded"  # refused before any model was touched
    assert service.transcribe(clips["beckett"]).ok


@pytest.mark.parametrize(
    ("fields", "status", "code", "words"),
    [
        ({"model": "nope"}, 404, "model_not_found", "'nope' does not exist"),
        ({"model": "smollm2-135m-instruct"}, 400, "invalid_request", "is a llm model"),
        ({"response_format": "yaml"}, 400, "invalid_request", "response_format must be one of"),
        ({"timestamp_granularities[]": "word"}, 400, "invalid_request", "'segment' only"),
        ({"temperature": "hot"}, 400, "invalid_request", "temperature must be a number"),
        ({"temperature": "1.5"}, 400, "invalid_request", "between 0 and 1"),
        ({"stream": "true", "response_format": "srt"}, 400, "invalid_request", "stream=true"),
        ({"language": "de"}, 400, "invalid_request", "English-only"),
        ({"beam_size": "0"}, 400, "invalid_request", "beam_size must be an integer from 1 to 5"),
        ({"beam_size": "6"}, 400, "invalid_request", "beam_size must be an integer from 1 to 5"),
        ({"beam_size": "wide"}, 400, "invalid_request", "beam_size must be an integer from 1 to 5"),
    ],
    ids=[
        "unknown-model",
        "llm-model",
        "bad-format",
        "word-timestamps",
        "bad-temperature",
        "hot-temperature",
        "stream-srt",
        "wrong-language",
        "beam-0",
        "beam-6",
        "beam-word",
    ],
)
def test_bad_transcription_options(service: Service, clips, fields, status, code, words):
    assert_openai_error(service.transcribe(clips["beckett"], **fields), status, code, words)
    assert service.model()["state"] in ("unloaded", "ready")  # nothing broke


def test_missing_file_field(service: Service):
    r = service.post("/v1/audio/transcriptions", data={"model": "whisper-tiny-en"})
    assert_openai_error(r, 400, "invalid_request", "'file'")


def test_unknown_routes_and_methods_are_json(service: Service):
    assert_openai_error(service.get("/v1/nothing"), 404, "not_found", "")
    assert service.get("/v1/audio/transcriptions").json()["error"]["code"] == "method_not_allowed"


def test_settings_validation(service: Service):
    url = "/api/models/whisper-tiny-en/settings"
    assert_openai_error(
        service.patch(url, data="{not json", headers={"Content-Type": "application/json"}),
        400,
        "invalid_request",
        "JSON object",
    )
    assert_openai_error(service.patch(url, json={"colour": "blue"}), 400, "invalid_request", "unknown setting 'colour'")
    assert_openai_error(service.patch(url, json={"keep_alive": "soon"}), 400, "invalid_request", "not a duration")
    assert_openai_error(service.patch(url, json={"pinned": "yes"}), 400, "invalid_request", "true or false")
    assert_openai_error(service.patch(url, json={"beam_size": 9}), 400, "invalid_request", "from 1 to 5, not 9")
    assert_openai_error(service.patch(url, json={"beam_size": "5"}), 400, "invalid_request", "from 1 to 5")
    assert_openai_error(
        service.patch("/api/models/smollm2-135m-instruct/settings", json={"language": "en"}),
        400,
        "invalid_request",
        "unknown setting 'language'",
    )
    assert_openai_error(service.patch("/api/models/nope/settings", json={}), 404, "model_not_found", "nope")
    r = service.patch(url, json={"prompt": "Beckett, Worstward Ho", "keep_alive": "2m", "priority": 3})
    assert r.json()["settings"]["prompt"] == "Beckett, Worstward Ho" and r.json()["settings"]["keep_alive"] == "2m"
    r = service.patch(url, json={"prompt": None})
    assert r.json()["settings"]["prompt"] is None and r.json()["settings"]["priority"] == 3


def test_bad_wait_argument(service: Service):
    assert_openai_error(service.post("/api/models/whisper-tiny-en/unload?wait=abc"), 400, "invalid_request", "wait")


def test_upload_over_the_limit_is_413(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_MAX_UPLOAD_BYTES="100kB").start()
    try:
        assert_openai_error(svc.transcribe(clips["beckett"]), 413, "payload_too_large", "limit of 100 kB")
        assert svc.model()["state"] == "unloaded"
    finally:
        svc.stop()


def test_beam_size_comes_from_the_request_or_the_setting(service: Service, clips):
    """Greedy and beam search punctuate the Beckett reading differently: which one ran shows."""
    greedy = service.transcribe(clips["beckett"], beam_size="1", response_format="text").text
    beams = service.transcribe(clips["beckett"], response_format="text").text  # the setting: 5
    assert greedy.startswith("Ever tried, ever failed.") and beams.startswith("Ever tried. Ever failed.")
    assert service.model()["settings"]["beam_size"] == 5
    assert service.patch("/api/models/whisper-tiny-en/settings", json={"beam_size": 1}).ok
    assert service.transcribe(clips["beckett"], response_format="text").text == greedy
    assert service.transcribe(clips["beckett"], beam_size="5", response_format="text").text == beams
    # conditioning on the previous windows' text: a setting, off by default
    assert service.model()["settings"]["condition_on_previous_text"] is False
    r = service.patch("/api/models/whisper-tiny-en/settings", json={"condition_on_previous_text": True})
    assert r.json()["settings"]["condition_on_previous_text"] is True
    text = service.transcribe(clips["two_cities"], response_format="text").text
    assert word_error_rate(REFERENCES["two_cities"], text) < 0.05  # two windows, the second prompted
    assert_openai_error(
        service.patch("/api/models/whisper-tiny-en/settings", json={"condition_on_previous_text": "yes"}),
        400,
        "invalid_request",
        "true or false",
    )
