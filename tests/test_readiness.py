"""What a router in front of several units reads from each (docs/fleet.md): the unit's name on
every response, and ``/readyz``, which answers 503 with the reason and ``Retry-After`` while the
unit (or a model on it) cannot take one more request, and 200 again once it can. The reasons'
order and arithmetic are ``policy.refusal``'s (tests/test_policy.py); back-off is in
tests/test_lifecycle.py."""

from __future__ import annotations

import threading

import requests

from edge_asr.samples import long_recording
from tests.service import ASR, LLM, Service, wait_for, wav

UNIT = "shelf-2"
CHAT = {"model": LLM, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


def refused(response: requests.Response, reason: str) -> dict:
    """The 503's body, checked to carry ``reason`` as a router reads it (the code, the header, a wait)."""
    body = response.json()
    assert response.status_code == 503 and body["error"]["code"] == reason, response.text
    assert response.headers["X-Edge-Asr-Reason"] == reason and int(response.headers["Retry-After"]) >= 1
    return body


def test_the_unit_names_itself_on_every_response_and_in_its_metrics(tmp_path, whisper_spec):
    svc = Service(tmp_path / "state", EDGE_ASR_UNIT_NAME=UNIT).start()
    try:
        health = svc.get("/healthz")
        assert health.json() == {"status": "ok", "unit": UNIT} and health.headers["X-Edge-Asr-Unit"] == UNIT
        missing = svc.get("/api/models/nothing-of-that-name")
        assert missing.status_code == 404 and missing.headers["X-Edge-Asr-Unit"] == UNIT  # errors too
        assert svc.get("/api/models").json()["unit"] == UNIT
        assert f'edge_asr_unit_info{{unit="{UNIT}"}} 1.0' in svc.get("/metrics").text
        ready = svc.get("/readyz")
        assert ready.status_code == 200 and ready.headers["X-Edge-Asr-Unit"] == UNIT
        facts = ready.json()
        assert {k: facts[k] for k in ("ready", "unit", "draining", "queued")} == {
            "ready": True, "unit": UNIT, "draining": False, "queued": 0,
        }  # fmt: skip
        assert facts["available_bytes"] > facts["reserve_bytes"] > 0
        assert svc.get("/readyz?model=nothing-of-that-name").status_code == 404
    finally:
        svc.stop()


def test_a_full_queue_and_a_drain_make_the_unit_unready_until_they_clear(tmp_path, whisper_spec, speech, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_MAX_QUEUE="0").start()  # one request per model at a time
    long = wav(long_recording(speech, seconds=300).audio)  # ten seconds' work or so
    done: dict[str, requests.Response] = {}
    worker = threading.Thread(target=lambda: done.setdefault("long", svc.transcribe(long)))
    try:
        assert svc.get(f"/readyz?model={ASR}").json()["expected_wait_s"] == 0.0
        assert svc.transcribe(clips["beckett"]).ok  # the worker's time per request, learned
        worker.start()
        # (a list: a 503 response is falsy)
        [busy] = wait_for(lambda: (r := svc.get(f"/readyz?model={ASR}")).status_code == 503 and [r], timeout=30)
        facts = refused(busy, "queue_full")
        assert facts["model"] == ASR and facts["queued"] == 1 and facts["max_queue"] == 0 and not facts["ready"]
        assert 0 < facts["expected_wait_s"] <= int(busy.headers["Retry-After"])  # one request ahead, at its pace
        refused(
            svc.post("/v1/audio/transcriptions", files={"file": ("a.wav", long)}, data={"model": ASR}), "queue_full"
        )
        assert svc.get("/readyz").ok and svc.get(f"/readyz?model={LLM}").ok  # the unit takes other work

        assert svc.post("/api/system/drain").json()["draining"]
        refused(svc.get("/readyz"), "draining")  # at once, for the routers' health checks
        refused(svc.get(f"/readyz?model={LLM}"), "draining")
        assert svc.post("/v1/chat/completions", json=CHAT).ok  # served while they notice (drain_grace)
        drained = svc.post("/api/system/drain?wait=120").json()  # once the grace is over and the long one done
        worker.join(timeout=60)
        assert drained == {"draining": True, "refusing": True, "requests": 0, "queued": 0} and done["long"].ok
        refused(svc.post("/v1/chat/completions", json=CHAT), "draining")  # for a router to retry elsewhere
        refused(svc.transcribe(clips["beckett"]), "draining")
        assert svc.get("/api/models").ok and svc.post(f"/api/models/{LLM}/unload").ok  # managed as ever
        undrained = svc.delete("/api/system/drain").json()  # (its counts: whatever is closing just now)
        assert not undrained["draining"] and not undrained["refusing"]
        again = svc.get(f"/readyz?model={ASR}").json()
        assert again["ready"] and again["expected_wait_s"] == 0.0
        assert svc.transcribe(clips["beckett"]).ok
    finally:
        worker.join(timeout=300)
        svc.stop()


def test_a_model_that_cannot_fit_beside_a_pinned_one_is_unready_until_unpinned(budget_service):
    svc = budget_service
    assert svc.patch(f"/api/models/{ASR}/settings", json={"pinned": True}).ok
    assert svc.post(f"/api/models/{ASR}/load").ok
    assert "does not fit" in refused(svc.get(f"/readyz?model={LLM}"), "insufficient_memory")["error"]["message"]
    refused(svc.post("/v1/chat/completions", json=CHAT), "insufficient_memory")  # as a request finds it
    assert svc.get(f"/readyz?model={ASR}").ok and svc.get("/readyz").ok  # what is loaded still serves
    assert svc.patch(f"/api/models/{ASR}/settings", json={"pinned": False}).ok
    assert svc.get(f"/readyz?model={LLM}").json()["ready"]  # the speech model can make room now
    assert svc.post("/v1/chat/completions", json=CHAT).ok


def test_memory_below_the_reserve_makes_the_unit_unready(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_MEMORY_RESERVE="100TB").start()
    try:
        facts = refused(svc.get("/readyz"), "insufficient_memory")
        assert facts["reserve_bytes"] == 100 * 10**12 and facts["available_bytes"] < facts["reserve_bytes"]
        refused(svc.transcribe(clips["beckett"]), "insufficient_memory")
        assert svc.get("/healthz").ok  # alive, not ready: a router stops sending, systemd does not restart it
    finally:
        svc.stop()


def test_a_drain_never_cuts_a_request_between_its_models(tmp_path, whisper_spec, clips):
    svc = Service(tmp_path / "state", EDGE_ASR_DRAIN_GRACE="0").start()  # refusing at once
    done: dict[str, requests.Response] = {}
    audio = {"file": ("two_cities.wav", clips["two_cities"].read_bytes())}
    pipeline = threading.Thread(
        target=lambda: done.setdefault("it", svc.post("/api/pipeline", files=audio, timeout=300))
    )
    try:
        pipeline.start()
        wait_for(lambda: svc.model(ASR)["in_flight"], timeout=60)  # transcribing: the LLM is still to come
        assert svc.post("/api/system/drain").json()["refusing"]
        refused(svc.post("/v1/chat/completions", json=CHAT), "draining")  # a new request is refused...
        pipeline.join(timeout=300)
        assert done["it"].ok and done["it"].json()["output"].strip()  # ...the one under way ran to its end
    finally:
        pipeline.join(timeout=300)
        svc.stop()
