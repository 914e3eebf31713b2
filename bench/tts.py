"""Text-to-speech (Piper) through the service against Piper used directly, in one script:

- real-time factor (synthesis time / audio duration) of a paragraph, warm;
- time to the first audio: through the service, the first sentence's samples reaching the client
  of a streamed WAV (HTTP and the worker round trip included); directly, ``PiperVoice.synthesize``
  yielding its first chunk in this process.

Both sides use the same voice file and one ONNX Runtime thread (Piper's own loader opens its
session with ONNX Runtime's defaults; the service gives the voice the configured ``ort_threads``,
here 1 on both sides so the ratio compares the same work). Ratios = service / direct.

usage: python -m bench.tts [--repeats 5]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import requests

from edge_asr.config import load_config
from edge_asr.manifest import get_model
from tests.service import Service

TEXT = (
    "The pump in the second row needs a new seal before Friday. Please check the pressure gauge every "
    "morning at eight. The storage room is cold, so keep the door closed. We will replace the filters next "
    "week. Call the supervisor if the alarm sounds twice."
)
TTS = "piper-joe-en"


def direct(model: Path, repeats: int) -> tuple[float, float, float]:
    """Piper in this process: (median first chunk s, median total s, audio s)."""
    from piper.config import PiperConfig
    from piper.voice import PiperVoice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text()))
    voice = PiperVoice(config=config, session=onnxruntime.InferenceSession(str(model), options))
    firsts, totals, samples = [], [], 0
    for _ in range(repeats + 1):  # the first is a warm-up
        start = time.perf_counter()
        chunks = voice.synthesize(TEXT)
        first = next(chunks)
        firsts.append(time.perf_counter() - start)
        samples = len(first.audio_int16_array) + sum(len(c.audio_int16_array) for c in chunks)
        totals.append(time.perf_counter() - start)
    return statistics.median(firsts[1:]), statistics.median(totals[1:]), samples / config.sample_rate


def service_side(service: Service, repeats: int) -> tuple[float, float, float]:
    """Through HTTP: (median first audio s, median total s, audio s)."""
    firsts, totals, size = [], [], 0
    for _ in range(repeats + 1):
        start = time.perf_counter()
        r = requests.post(
            service.url + "/v1/audio/speech", json={"model": TTS, "input": TEXT}, stream=True, timeout=120
        )
        received, first = 0, None
        for chunk in r.iter_content(chunk_size=None):
            received += len(chunk)
            if first is None and received > 44:  # past the WAV header: samples
                first = time.perf_counter() - start
        totals.append(time.perf_counter() - start)
        firsts.append(first or 0.0)
        size = received - 44
    return statistics.median(firsts[1:]), statistics.median(totals[1:]), size / 2 / 22050


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    spec = get_model(load_config(), TTS)
    model = spec.directory / next(f for f in spec.files if f.endswith(".onnx"))
    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state) / "state", EDGE_ASR_ORT_THREADS="1").start()
        try:
            served = service_side(service, args.repeats)
        finally:
            service.stop()
    local = direct(model, args.repeats)
    print(
        json.dumps(
            {
                "bench": "speech",
                "audio_s": round(local[2], 2),
                "service_first_audio_s": round(served[0], 3),
                "direct_first_chunk_s": round(local[0], 3),
                "first_audio_ratio": round(served[0] / local[0], 3),
                "service_rtf": round(served[1] / served[2], 3),
                "direct_rtf": round(local[1] / local[2], 3),
                "rtf_ratio": round((served[1] / served[2]) / (local[1] / local[2]), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
