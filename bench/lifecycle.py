"""Lifecycle costs of the service, each as a ratio against a reference measured in the same run:

(a) wake latency: the first transcription on an unloaded model through the service (HTTP, worker
    spawn, sessions, inference) versus a fresh Python process that creates the same ONNX Runtime
    sessions (Whisper and VAD) and runs the same inference;
(b) HTTP overhead: a warm transcription through the service versus the library in-process;
(c) N load/transcribe/unload cycles through the API: available memory at the end against the
    start (polled up to 30 s: this VM returns freed pages lazily), workers left, time per cycle.

usage: python -m bench.lifecycle [--cycles 200] [--repeats 5]   (from the repo root, after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._timing import median_time
from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.manifest import get_model
from edge_asr.samples import sample_clips
from edge_asr.vad import SileroVad
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
from tests.service import Service, available, settled_available

FRESH_PROCESS = """
import sys, time
start = time.perf_counter()
from pathlib import Path
from bench._timing import median_time
from edge_asr.audio import decode_audio
from edge_asr.vad import SileroVad
from edge_asr.whisper.model import WhisperModel
from edge_asr.whisper.transcribe import transcribe
model, vad = WhisperModel(Path(sys.argv[1])), SileroVad(Path(sys.argv[2]))
text = transcribe(model, vad, decode_audio(sys.argv[3])).text
print(time.perf_counter() - start)
"""


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
        service = Service(Path(state)).start()
        try:

            def wake():
                service.post("/api/models/whisper-tiny-en/unload")
                assert service.transcribe(data).ok

            def fresh_process():
                subprocess.run(
                    [sys.executable, "-c", FRESH_PROCESS, str(spec.directory), str(vad_file), str(clip)],
                    check=True,
                    capture_output=True,
                )

            wake_s, fresh_s = median_time(wake, args.repeats), median_time(fresh_process, args.repeats)
            print(
                json.dumps(
                    {
                        "bench": "wake latency",
                        "service_first_request_s": round(wake_s, 3),
                        "fresh_process_s": round(fresh_s, 3),
                        "ratio": round(wake_s / fresh_s, 3),
                    }
                )
            )

            http_overhead(service, data, spec.directory, vad_file, clip, args.repeats * 2)

            service.post("/api/models/whisper-tiny-en/unload")
            start_available = settled_available()
            start = time.perf_counter()
            for _ in range(args.cycles):
                assert service.transcribe(data).ok
                assert service.post("/api/models/whisper-tiny-en/unload").json()["unloaded"]
            per_cycle = (time.perf_counter() - start) / args.cycles
            immediate = available() - start_available
            settle_start = time.monotonic()
            settled = settled_available()
            print(
                json.dumps(
                    {
                        "bench": f"{args.cycles} load/transcribe/unload cycles",
                        "s_per_cycle": round(per_cycle, 3),
                        "available_delta_immediately_mb": round(immediate / 1e6, 1),
                        "available_delta_settled_mb": round((settled - start_available) / 1e6, 1),
                        "settle_s": round(time.monotonic() - settle_start, 1),
                        "workers_left": len(service.workers()),
                    }
                )
            )
        finally:
            service.stop()


if __name__ == "__main__":
    main()
