"""Lifecycle costs of the service, each as a ratio against a reference measured in the same run:

(a) wake latency, for Whisper, the LLM and the voice: the first request on an unloaded model
    through the service (HTTP, the spare worker handed its model, sessions, inference) versus a
    fresh Python process that creates the same sessions (the same runner) and serves the same
    request; the load alone (the load event's duration) versus a fresh process that only creates
    the sessions; each also with the spare worker off (``EDGE_ASR_SPARE_WORKER=0``: a new process
    per wake, as before it existed). The spare worker's own memory is printed too;
(b) HTTP overhead: a warm transcription through the service versus the library in-process;
(c) N load/use/unload cycles through the API, of Whisper, of the LLM on each runtime (llama.cpp,
    onnxruntime-genai) and of the diarization model: available memory at the end against the
    start (polled up to 60 s: this VM returns freed pages lazily), workers left, time per cycle.

usage: python -m bench.lifecycle [--cycles 200] [--repeats 5]   (from the repo root, after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import requests

from bench._timing import median_time
from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.samples import sample_clips
from edge_asr.vad import SileroVad
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from edge_asr.workers.protocol import Chat, ChatOptions, Synthesize
from tests.service import ASR, CHAT_MODELS, LLM, TTS, Service, available, settled_available, wait_for

DIARIZATION = DEFAULT_MODELS["diarization"]

FRESH_PROCESS = """
import pickle, sys, time
start = time.perf_counter()
from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.manifest import get_model
from edge_asr.workers.protocol import Transcribe
from edge_asr.workers.runners import create_runner
config = load_config()
runner = create_runner(get_model(config, sys.argv[1]), config)
if sys.argv[4] == "serve":
    request = pickle.loads(bytes.fromhex(sys.argv[2])) if sys.argv[2] else Transcribe(decode_audio(sys.argv[3]))
    for _ in getattr(runner, request.method)(request):
        pass
print(time.perf_counter() - start)
"""
MESSAGES = [{"role": "user", "content": "Say hello to the plant room."}]
SENTENCE = "The pump in the plant room has stopped. Please check the pressure valve."


def wakes(service: Service, clip: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """Median seconds of each model's first request after an unload, the spare worker (if on)
    ready first, as a user's wake finds it on an idle unit; and of its load alone (the load
    event's duration: the worker started or the spare handed its model, until it is ready)."""
    requests = {
        ASR: lambda: service.transcribe(clip.read_bytes()),
        LLM: lambda: service.post(
            "/v1/chat/completions", json={"model": LLM, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
        ),
        TTS: lambda: service.post("/v1/audio/speech", json={"model": TTS, "input": SENTENCE}),
    }
    spare_on = service.get("/api/system/memory").json()["spare_worker"]["enabled"]
    times: dict[str, list[float]] = {model: [] for model in requests}
    loads: dict[str, list[float]] = {model: [] for model in requests}
    for _ in range(repeats):
        for model, request in requests.items():
            service.post(f"/api/models/{model}/unload")
            if spare_on:
                wait_for(lambda: service.spare()["ready"], 60)
            start = time.perf_counter()
            assert request().ok
            times[model].append(time.perf_counter() - start)
            events = service.get("/api/events", params={"model": model}).json()["events"]
            loads[model].append(next(e["duration_s"] for e in reversed(events) if e["to"] == "ready" != e["from"]))
    return {model: (statistics.median(times[model]), statistics.median(loads[model])) for model in requests}


def fresh_processes(clip: Path, repeats: int, serve: bool) -> dict[str, float]:
    """Median seconds of a fresh process creating each model's sessions (and, to ``serve``,
    serving its request)."""
    requests = {
        ASR: "",
        LLM: pickle.dumps(Chat(MESSAGES, ChatOptions(max_tokens=16, temperature=0))).hex(),
        TTS: pickle.dumps(Synthesize(SENTENCE)).hex(),
    }

    def run(model: str) -> None:
        command = [sys.executable, "-c", FRESH_PROCESS, model, requests[model], str(clip), "serve" if serve else "load"]
        subprocess.run(command, check=True, capture_output=True)

    return {model: median_time(lambda m=model: run(m), repeats) for model in requests}


def http_overhead(service: Service, data: bytes, model_dir: Path, vad_file: Path, clip: Path, repeats: int) -> None:
    model, vad, audio = WhisperModel(model_dir), SileroVad(vad_file), decode_audio(clip)
    transcribe(model, vad, audio)
    assert service.transcribe(data).ok
    http_s = median_time(lambda: service.transcribe(data), repeats)
    local_s = median_time(lambda: transcribe(model, vad, audio), repeats)
    print(
        json.dumps(
            {
                "bench": "http overhead (warm)",
                "service_s": round(http_s, 3),
                "in_process_s": round(local_s, 3),
                "ratio": round(http_s / local_s, 3),
            }
        )
    )


def cycles(service: Service, model: str, request: Callable[[], requests.Response], count: int) -> None:
    """``count`` cycles of a request waking ``model`` and an unload; then the available memory,
    polled up to 60 s until it is back within 16 MB of the start (this VM hands freed pages back
    lazily, after pauses: as ``tests/test_lifecycle.py`` waits)."""
    start_available = settled_available()
    start = time.perf_counter()
    for _ in range(count):
        assert request().ok
        assert service.post(f"/api/models/{model}/unload").json()["unloaded"]
    per_cycle = (time.perf_counter() - start) / count
    immediate = available() - start_available
    settle_start = time.monotonic()
    wait_for(lambda: available() - start_available > -16e6, 60, 0.25, raises=False)
    print(
        json.dumps(
            {
                "bench": f"{count} load/use/unload cycles of {model}",
                "s_per_cycle": round(per_cycle, 3),
                "available_delta_immediately_mb": round(immediate / 1e6, 1),
                "available_delta_after_mb": round((available() - start_available) / 1e6, 1),
                "back_after_s": round(time.monotonic() - settle_start, 1),
                "workers_left": len(service.workers()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = load_config()
    spec = get_model(config, "whisper-tiny-en")
    vad_spec = get_model(config, "silero-vad")
    vad_file = vad_spec.directory / vad_spec.files[0]
    clip = sample_clips(config)["beckett"]
    data = clip.read_bytes()
    with tempfile.TemporaryDirectory() as state:
        off = Service(Path(state) / "off", EDGE_ASR_SPARE_WORKER="0").start()
        try:
            without_spare = wakes(off, clip, args.repeats)
        finally:
            off.stop()
        service = Service(Path(state) / "on").start()
        try:
            with_spare = wakes(service, clip, args.repeats)
            fresh, fresh_load = fresh_processes(clip, args.repeats, True), fresh_processes(clip, args.repeats, False)
            for model in (ASR, LLM, TTS):
                (first, load), (first_off, load_off) = with_spare[model], without_spare[model]
                print(
                    json.dumps(
                        {
                            "bench": f"wake latency {model}",
                            "service_first_request_s": round(first, 3),
                            "spare_off_s": round(first_off, 3),
                            "fresh_process_s": round(fresh[model], 3),
                            "ratio": round(first / fresh[model], 3),
                            "ratio_spare_off": round(first_off / fresh[model], 3),
                            "service_load_s": round(load, 3),
                            "spare_off_load_s": round(load_off, 3),
                            "fresh_process_load_s": round(fresh_load[model], 3),
                            "load_ratio": round(load / fresh_load[model], 3),
                            "load_ratio_spare_off": round(load_off / fresh_load[model], 3),
                        }
                    )
                )
            spare = wait_for(lambda: (s := service.get("/api/system/memory").json()["spare_worker"])["ready"] and s, 60)
            print(
                json.dumps({"bench": "spare worker memory", "footprint_mb": round(spare["footprint_bytes"] / 1e6, 1)})
            )

            http_overhead(service, data, spec.directory, vad_file, clip, args.repeats * 2)

            for model in (ASR, LLM, TTS):
                service.post(f"/api/models/{model}/unload")
            chat = {"messages": MESSAGES, "max_tokens": 16, "temperature": 0}
            use = {ASR: lambda: service.transcribe(data)}
            use |= {m: partial(service.post, "/v1/chat/completions", json={"model": m, **chat}) for m in CHAT_MODELS}
            use[DIARIZATION] = partial(service.post, "/v1/audio/diarization", files={"file": ("clip.wav", data)})
            for model, request in use.items():
                cycles(service, model, request, args.cycles)
        finally:
            service.stop()


if __name__ == "__main__":
    main()
