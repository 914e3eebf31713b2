"""Diarization figures on real voices: pyannote's sample conversation (scored against its RTTM) and
the meeting of ``samples.meeting`` (the Dickens reader and a voice of that conversation):

(a) sherpa-onnx in this process, as the service makes it (``SpeakerDiarizer``): the diarization
    error rate (no collar), the speakers found, and the real-time factor;
(b) the service's ``/v1/audio/diarization`` against (a) on the same audio, in turns: the cost of
    the HTTP request and the worker;
(c) what speakers add to a transcription: ``diarized_json`` against plain ``json`` on the meeting,
    Whisper at beam 5 (the goal: at most 0.3x the transcription's own time), and the floor under
    it: one pass of each network over the meeting;
(d) the diarization worker's footprint, as the service measured it.

usage: python -m bench.diarization [--repeats 5]   (after `source scripts/env.sh`)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime

from edge_asr.audio import decode_audio
from edge_asr.config import load_config
from edge_asr.diarization.error_rate import diarization_error_rate, read_rttm
from edge_asr.diarization.model import SpeakerDiarizer
from edge_asr.diarization.speakers import speaker_labels
from edge_asr.manifest import DEFAULT_MODELS, get_model
from edge_asr.runtime.cores import physical_cores
from edge_asr.samples import conversation, meeting
from tests.service import Service, wav

DIARIZATION, ASR = DEFAULT_MODELS["diarization"], "whisper-tiny-en"
WINDOW = 160000  # samples: pyannote segmentation's 10 s


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    out = action()
    return time.perf_counter() - start, out


def one_pass(diarizer: SpeakerDiarizer, audio: np.ndarray) -> float:
    """Seconds for the least any pipeline on these two networks could do: the segmentation over
    10-s windows side by side (no overlap) and one voice embedding of the whole recording."""
    segmentation = onnxruntime.InferenceSession(diarizer.segmentation, providers=["CPUExecutionProvider"])
    windows = np.pad(audio, (0, -len(audio) % WINDOW)).reshape(-1, 1, WINDOW)
    start = time.perf_counter()
    for window in windows:
        segmentation.run(None, {"x": window[None]})
    stream = diarizer.extractor.create_stream()
    stream.accept_waveform(16000, audio)
    stream.input_finished()
    diarizer.extractor.compute(stream)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = load_config()
    threads = config.ort_threads or physical_cores()
    talk_file, rttm = conversation(config)
    room = meeting(config)
    recordings = {"conversation": (decode_audio(talk_file), read_rttm(rttm)), "meeting": (room.audio, room.turns)}
    diarizer = SpeakerDiarizer(get_model(config, DIARIZATION).directory, threads)

    with tempfile.TemporaryDirectory() as state:
        service = Service(Path(state)).start()
        try:
            for name, (audio, truth) in recordings.items():
                body = wav(audio)
                direct, served = [], []
                for _ in range(args.repeats + 1):  # the first round warms up
                    seconds, found = timed(lambda a=audio: diarizer.diarize(a, None, 0.5))
                    direct.append(seconds)
                    seconds, answer = timed(
                        lambda b=body: service.post("/v1/audio/diarization", files={"file": ("a.wav", b)}, timeout=600)
                    )
                    assert answer.ok, answer.text
                    served.append(seconds)
                labels = speaker_labels(found, {})
                hypothesis = [(t["start"], t["end"], labels[t["speaker"]]) for t in found["turns"]]
                duration = len(audio) / 16000
                print(
                    json.dumps(
                        {
                            "bench": f"diarization of the {name} ({duration:.1f} s), {threads} threads",
                            "der": round(diarization_error_rate(truth, hypothesis), 4),
                            "speakers": [found["speakers"], len({who for *_, who in truth})],
                            "in_process_s": round(statistics.median(direct[1:]), 3),
                            "real_time_factor": round(statistics.median(direct[1:]) / duration, 4),
                            "service_s": round(statistics.median(served[1:]), 3),
                            "service_vs_in_process": round(statistics.median(np.divide(served, direct)[1:]), 3),
                        }
                    )
                )
            body, plain, diarized = wav(room.audio), [], []
            fields = {"model": ASR, "beam_size": "5"}
            for _ in range(args.repeats + 1):
                for kind, into in (("json", plain), ("diarized_json", diarized)):
                    seconds, answer = timed(
                        lambda k=kind: service.post(
                            "/v1/audio/transcriptions",
                            files={"file": ("m.wav", body)},
                            data=fields | {"response_format": k},
                            timeout=600,
                        )
                    )
                    assert answer.ok, answer.text
                    into.append(seconds)
            added = [d / p - 1 for d, p in zip(diarized[1:], plain[1:], strict=True)]
            floor = statistics.median(one_pass(diarizer, room.audio) for _ in range(args.repeats))
            print(
                json.dumps(
                    {
                        "bench": f"speakers added to a transcription of the meeting ({ASR}, beam 5)",
                        "json_s": round(statistics.median(plain[1:]), 3),
                        "diarized_json_s": round(statistics.median(diarized[1:]), 3),
                        "added_vs_transcription": round(statistics.median(added), 3),
                        "goal_met": statistics.median(added) <= 0.3,
                        "one_pass_of_each_network_vs_transcription": round(floor / statistics.median(plain[1:]), 3),
                    }
                )
            )
            service.post("/api/system/free")
            models = {m["id"]: m for m in service.get("/api/models").json()["models"]}
            print(
                json.dumps(
                    {"bench": "diarization worker", "footprint_mb": round(models[DIARIZATION]["footprint_bytes"] / 1e6)}
                )
            )
        finally:
            service.stop()
            diarizer.release()


if __name__ == "__main__":
    main()
