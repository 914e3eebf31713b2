"""The supervisor's idle hibernation on a real service: keep-alive from the settings and from
requests (Ollama's semantics), pinned models, and settings that survive hibernation."""

from __future__ import annotations

import time

import openai

from tests.service import Service, wait_for

ASR, LLM = "whisper-tiny-en", "smollm2-135m-instruct"


def unloaded(service: Service, model_id: str = ASR) -> dict | None:
    status = service.model(model_id)
    return status if status["state"] == "unloaded" else None


def test_keep_alive_setting_unloads_after_that_long_idle(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "2s", "prompt": "Beckett"}).ok
    assert service.transcribe(clips["beckett"]).ok
    idle_from = service.model()["last_used"]
    assert service.model()["expires_at"] == idle_from + 2
    status = wait_for(lambda: unloaded(service), 10)
    hibernated = service.get("/api/events", params={"model": ASR}).json()["events"][-1]
    assert hibernated["reason"] == "idle" and status["last_unload_reason"] == "idle"
    # two seconds of idleness, then at most one supervisor interval (1 s) and the unload itself
    assert 2.0 <= hibernated["time"] - idle_from <= 2.0 + 1.0 + hibernated["duration_s"] + 0.5
    assert service.workers() == []
    # it wakes on the next request, its settings intact
    assert service.transcribe(clips["beckett"]).ok
    assert service.model()["state"] == "ready" and service.model()["settings"]["prompt"] == "Beckett"


def test_request_keep_alive_zero_unloads_right_after_the_request(service: Service, clips):
    start = time.time()
    assert service.transcribe(clips["beckett"], keep_alive="0").ok
    wait_for(lambda: unloaded(service), 5)
    assert time.time() - start < 5
    client = openai.OpenAI(base_url=service.url + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(
        model=LLM, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, extra_body={"keep_alive": 0}
    )
    assert reply.choices[0].message.content
    wait_for(lambda: unloaded(service, LLM), 5)
    assert service.model(LLM)["last_unload_reason"] == "idle" and service.workers() == []


def test_request_keep_alive_negative_keeps_until_a_request_without_it(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "1s"}).ok
    assert service.transcribe(clips["beckett"], keep_alive="-1").ok
    assert service.model()["expires_at"] is None
    time.sleep(3)
    assert service.model()["state"] == "ready"
    assert service.transcribe(clips["beckett"]).ok  # no keep_alive: the setting (1 s) applies again
    wait_for(lambda: unloaded(service), 5)


def test_a_pinned_model_never_hibernates(service: Service, clips):
    assert service.patch(f"/api/models/{ASR}/settings", json={"keep_alive": "1s", "pinned": True}).ok
    assert service.transcribe(clips["beckett"]).ok
    time.sleep(3)
    assert service.model()["state"] == "ready" and service.model()["expires_at"] is None


def test_a_bad_keep_alive_is_a_400(service: Service, clips):
    r = service.transcribe(clips["beckett"], keep_alive="soon")
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]
    r = service.post(
        "/v1/chat/completions", json={"model": LLM, "messages": [{"role": "user", "content": "Hi"}], "keep_alive": [1]}
    )
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]
    assert service.model()["state"] == "unloaded"  # rejected before anything loaded
