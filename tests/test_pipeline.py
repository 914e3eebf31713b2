"""The reason the product exists: transcribe, then let the LLM work on the text, on a unit where
the two models do not fit side by side."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile

from edge_asr.evaluation import normalize
from tests.service import ASR, LLM, TTS, Service, assert_within_budget, available, turns_in_budget


def test_pipeline_swaps_models_under_a_budget(budget_service: Service, clips):
    svc = budget_service
    samples: list[int] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(available())
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        r = svc.post(
            "/api/pipeline",
            files={"file": ("two_cities.wav", clips["two_cities"].read_bytes())},
            data={"instruction": "Summarize this text in one sentence."},
            timeout=300,
        )
    finally:
        stop.set()
        sampler.join()
    assert r.ok, r.text
    result = r.json()
    assert result["transcript"]["text"].startswith("It was the best of times")
    assert (result["transcript"]["language"], result["transcript"]["language_probability"]) == ("en", None)
    assert result["output"].strip()
    assert set(normalize(result["output"])) & set(normalize(result["transcript"]["text"]))
    moves = [(e["model"], e["to"], e["reason"]) for e in result["events"]]
    assert moves == [
        ("whisper-tiny-en", "ready", "request"),
        ("whisper-tiny-en", "unloaded", "evicted-for:smollm2-135m-instruct"),
        ("smollm2-135m-instruct", "ready", "request"),
    ]
    assert min(samples) > 256e6  # never below the configured reserve
    assert result["timings"]["transcribe_s"] > 0 and result["timings"]["generate_s"] > 0
    states = {m["id"]: m["state"] for m in svc.get("/api/models").json()["models"]}
    assert {m for m, state in states.items() if state != "unloaded"} == {LLM}
    svc.stop()


def test_pipeline_bad_input(service: Service, clips):
    r = service.post("/api/pipeline", files={"file": ("x.wav", b"")})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = service.post(
        "/api/pipeline", files={"file": ("a.wav", clips["beckett"].read_bytes())}, data={"llm_model": "whisper-tiny-en"}
    )
    assert r.status_code == 400 and "llm_model must name a llm model" in r.json()["error"]["message"]
    r = service.post("/api/pipeline", files={"file": ("a.wav", clips["beckett"].read_bytes())}, data={"beam_size": "9"})
    assert r.status_code == 400 and "beam_size must be an integer from 1 to 5" in r.json()["error"]["message"]
    assert service.model()["state"] == "unloaded"  # refused before any model loaded


def sse_events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def test_pipeline_streams_its_progress(service: Service, clips):
    with service.post(
        "/api/pipeline",
        files={"file": ("beckett.wav", clips["beckett"].read_bytes())},
        data={"stream": "true", "max_tokens": "60"},
        stream=True,
    ) as r:
        assert r.ok and r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(r)
    kinds = [e["type"] for e in events]
    stages = [e["stage"] for e in events if e["type"] == "pipeline.stage"]
    # the LLM, not loaded yet, was prefetched while Whisper transcribed: a swap only if it was still loading
    assert stages in (["transcribing", "generating"], ["transcribing", "swapping", "generating"])
    assert kinds[0] == "pipeline.stage" and kinds[-1] == "pipeline.done"
    first_output = kinds.index("output.text.delta")
    assert kinds.index("transcript.text.delta") < kinds.index("pipeline.done") and first_output > stages.index(
        "generating"
    )
    done = events[-1]
    assert "".join(e["delta"] for e in events if e["type"] == "transcript.text.delta") == done["transcript"]["text"]
    assert "".join(e["delta"] for e in events if e["type"] == "output.text.delta") == done["output"]
    assert done["output"].strip()
    loads = [(e["model"], e["reason"]) for e in done["events"] if e["to"] == "ready" and e["from"] != "ready"]
    assert loads == [(ASR, "request"), (LLM, "prefetch")]
    if os.geteuid() == 0:  # as root, the service may raise a niced thread's priority back (LimitNICE in its unit)
        llm = service.model(LLM)["worker_pid"]  # it loaded niced; it serves at the service's priority
        tasks = Path(f"/proc/{llm}/task").iterdir()
        assert {int(Path(t, "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks} == {0}


def test_a_pipeline_and_transcriptions_at_the_same_time_all_complete(budget_service: Service, clips):
    """The budget holds one model: the pipeline and the plain transcriptions take turns."""
    svc = budget_service
    audio = clips["beckett"].read_bytes()
    with ThreadPoolExecutor(5) as pool:
        pipeline = pool.submit(
            svc.post, "/api/pipeline", files={"file": ("b.wav", audio)}, data={"max_tokens": "40"}, timeout=300
        )
        transcriptions = [pool.submit(svc.transcribe, audio) for _ in range(4)]
        replies = [pipeline.result()] + [t.result() for t in transcriptions]
    assert all(r.ok for r in replies), [r.text for r in replies if not r.ok]
    texts = {r.json()["text"] for r in replies[1:]} | {replies[0].json()["transcript"]["text"]}
    assert len(texts) == 1 and texts.pop().startswith("Ever tried")
    assert replies[0].json()["output"].strip()
    residents = [m for m in svc.get("/api/models").json()["models"] if m["state"] == "ready"]
    assert len(residents) == 1  # never both resident under this budget


def test_the_whole_chain_speaks_within_the_budget(budget_service: Service, clips):
    """Record -> transcribe -> the LLM -> speech, the models taking turns in a budget that holds the
    largest alone: each unloaded before the next loads where the two do not fit together (measured
    here: Whisper 458 MB, the LLM 253 MB, the voice 178 MB, so the LLM and the voice may share it),
    never more resident than the budget; the audio says the LLM's words."""
    svc = budget_service
    with svc.post(
        "/api/pipeline",
        files={"file": ("beckett.wav", clips["beckett"].read_bytes())},
        data={"instruction": "Repeat the text.", "max_tokens": "40", "speak": "true", "stream": "true"},
        stream=True,
        timeout=300,
    ) as r:
        assert r.ok, r.text
        events = sse_events(r)
    stages = [(e["stage"], e["model"]) for e in events if e["type"] == "pipeline.stage"]
    assert stages == [
        ("transcribing", ASR),
        ("swapping", LLM),
        ("generating", LLM),
        ("swapping", TTS),
        ("speaking", TTS),
    ]
    done = events[-1]
    moves = [(e["model"], e["to"], e["reason"]) for e in done["events"]]
    assert moves == turns_in_budget(svc, "request")
    assert_within_budget(svc, moves)
    deltas = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "output.audio.delta")
    assert done["audio"]["format"] == "wav" and done["audio"]["sample_rate"] == 22050
    wav = base64.b64decode(done["audio"]["data"])
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    assert samples.tobytes() == deltas and len(samples) / rate > 0.5  # the deltas are the audio
    assert done["timings"]["speak_s"] > 0 and done["timings"]["speech_swap_s"] > 0
    heard = svc.transcribe(wav).json()["text"]
    said = set(normalize(done["output"]))
    assert len(said & set(normalize(heard))) >= 0.6 * len(said), (done["output"], heard)


def test_a_pipeline_asked_to_speak_checks_its_voice_first(service: Service, clips):
    audio = clips["beckett"].read_bytes()
    for fields, words in (
        ({"speak": "true", "tts_model": LLM}, "cannot speak"),
        ({"speak": "true", "voice": "alloy"}, "voice 'joe' only"),
    ):
        r = service.post("/api/pipeline", files={"file": ("a.wav", audio)}, data=fields)
        assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
    assert {m["state"] for m in service.get("/api/models").json()["models"]} == {"unloaded"}
