"""Two units behind each router of docs/fleet.md, run on its file under ``deploy/`` as it is
(``tests.router``): the requests spread over both; one unit killed, or drained for an upgrade,
half-way through 40 concurrent transcriptions and chats loses none of them; streams pass through
whole."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai
import pytest
import requests

from tests.router import HAProxy, LiteLLMProxy, Router
from tests.service import ASR, LLM, Service, wait_for

REQUESTS = 40


@pytest.fixture(params=["haproxy", "litellm"])
def fleet(request, tmp_path, config, whisper_spec) -> Iterator[tuple[dict[str, Service], Router]]:
    units = {name: Service(tmp_path / name, EDGE_ASR_UNIT_NAME=name, EDGE_ASR_MAX_QUEUE="8") for name in "ab"}
    for svc in units.values():
        svc.start()
    log = tmp_path / f"{request.param}.log"
    router = HAProxy(units, log) if request.param == "haproxy" else LiteLLMProxy(units, log, config)
    try:
        yield units, router
    finally:
        router.close()
        for svc in units.values():
            if svc.process and svc.process.poll() is None:
                svc.stop()


def work(router: Router, clip: bytes) -> list:
    """The 40 requests: transcriptions and chats in turn, each returning (status, unit)."""
    chat = {"model": LLM, "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 8}

    def transcribe() -> tuple[int, str]:
        r = requests.post(router.url + "/v1/audio/transcriptions", files={"file": ("a.wav", clip)}, data={"model": ASR})
        return r.status_code, router.unit(r)

    def talk() -> tuple[int, str]:
        r = requests.post(router.url + "/v1/chat/completions", json=chat, timeout=120)
        return r.status_code, router.unit(r)

    return [transcribe if n % 2 else talk for n in range(REQUESTS)]


def run_while(calls: list, halfway) -> list[tuple[int, str]]:
    """All ``calls`` at once; ``halfway()`` once half of them have been answered."""
    answers = []
    with ThreadPoolExecutor(len(calls)) as pool:
        for n, future in enumerate(as_completed([pool.submit(call) for call in calls])):
            answers.append(future.result())
            if n + 1 == len(calls) // 2:
                halfway()
    return answers


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_unit_killed_half_way_loses_no_request(fleet, clips):
    units, router = fleet
    clip = clips["beckett"].read_bytes()
    calls = work(router, clip)
    assert [call()[0] for call in calls[:4]] == [200] * 4  # the models loaded
    workers = units["a"].workers()

    answers = run_while(calls, units["a"].kill)
    assert [status for status, _ in answers] == [200] * REQUESTS, answers
    served = Counter(unit for _, unit in answers)
    assert set(served) == {"a", "b"}, served  # both took work until one died
    assert [call() for call in calls[:6]] == [(200, "b")] * 6  # the router left the dead unit out
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30)  # its workers went with it


def test_a_unit_drained_for_an_upgrade_loses_no_request_and_gets_no_more(fleet, clips):
    units, router = fleet
    calls = work(router, clips["beckett"].read_bytes())
    answers = run_while(calls, lambda: units["b"].post("/api/system/drain"))
    assert [status for status, _ in answers] == [200] * REQUESTS, answers
    assert set(Counter(unit for _, unit in answers)) == {"a", "b"}
    drained = units["b"].post("/api/system/drain?wait=60").json()  # its grace over, nothing under way: upgrade it
    assert drained == {"draining": True, "refusing": True, "requests": 0, "queued": 0}
    assert [call() for call in calls[:6]] == [(200, "a")] * 6  # the router sends it nothing, or retries elsewhere
    units["b"].stop()  # the upgrade: stopped, started again, back in the router
    units["b"].start()
    wait_for(lambda: "b" in {unit for _, unit in (call() for call in calls[:4])}, timeout=router.rejoin_s + 30)


def test_streams_pass_through_the_router_whole(fleet, clips):
    _, router = fleet
    client = openai.OpenAI(base_url=router.url + "/v1", api_key="unused", max_retries=0)
    with clips["endgame_nagg_nell"].open("rb") as f:  # a dialogue: several segments, a delta each
        whole = client.audio.transcriptions.create(model=ASR, file=f).text
    with clips["endgame_nagg_nell"].open("rb") as f:
        if router.name == "litellm":  # it asks for verbose_json, which does not stream: refused, not broken
            with pytest.raises(openai.BadRequestError, match="stream=true sends text deltas"):
                client.audio.transcriptions.create(model=ASR, file=f, stream=True)
        else:
            events = list(client.audio.transcriptions.create(model=ASR, file=f, stream=True))
            assert len(events) > 2 and events[-1].type == "transcript.text.done" and events[-1].text == whole
            assert "".join(e.delta for e in events if e.type == "transcript.text.delta").strip() == whole.strip()

    ask = {"model": LLM, "messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 48}
    said = client.chat.completions.create(**ask, temperature=0, seed=1).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, temperature=0, seed=1, stream=True))
    assert len(chunks) > 3 and any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == said
