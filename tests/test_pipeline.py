"""The reason the product exists: transcribe, then let the LLM work on the text, on a unit where
the two models do not fit side by side."""

from __future__ import annotations

import threading

from edge_asr.evaluation import normalize
from tests.service import Service, available


def test_pipeline_swaps_models_under_a_budget(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "learn").start()  # learn both footprints
    try:
        assert svc.transcribe(clips["beckett"]).ok
        assert svc.post(
            "/v1/chat/completions",
            json={"model": "smollm2-135m-instruct", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        ).ok
        svc.post("/api/system/free")
        footprints = {m["id"]: m["footprint_bytes"] for m in svc.get("/api/models").json()["models"]}
    finally:
        svc.stop()
    asr, llm = footprints["whisper-tiny-en"], footprints["smollm2-135m-instruct"]
    budget = int(1.1 * max(asr, llm))
    assert budget < asr + llm  # the two do not fit together

    state = tmp_path / "budget"
    state.mkdir()
    (state / "footprints.json").write_text((tmp_path / "learn" / "footprints.json").read_text())
    svc = Service(state, EDGE_ASR_MEMORY_BUDGET=str(budget)).start()
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
    try:
        assert r.ok, r.text
        result = r.json()
        assert result["transcript"]["text"].startswith("It was the best of times")
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
        assert states == {"whisper-tiny-en": "unloaded", "smollm2-135m-instruct": "ready"}
    finally:
        svc.stop()


def test_pipeline_bad_input(service: Service, clips):
    r = service.post("/api/pipeline", files={"file": ("x.wav", b"")})
    assert r.status_code == 400 and "empty" in r.json()["error"]["message"]
    r = service.post(
        "/api/pipeline", files={"file": ("a.wav", clips["beckett"].read_bytes())}, data={"llm_model": "whisper-tiny-en"}
    )
    assert r.status_code == 400 and "llm_model must name a llm model" in r.json()["error"]["message"]
