"""OpenAI's Realtime API (transcription sessions) on the real service, driven by the real
``openai`` SDK's realtime client: speech streamed at real-time pace and cut into turns by the
server's VAD, manual commits, the beta event shapes, and what a client can get wrong (bad events,
models and languages, keys, too many sessions, a flood of audio, another site's page), and a
session under critical memory."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from tests.fakes.tegrastats_feed import RECORDED, pressure_env, replay, under_pressure
from tests.realtime_client import (
    COMPLETED,
    DELTA,
    TRANSCRIPTION,
    Events,
    append,
    group_by_item,
    of_type,
    pcm16,
    quiet,
    session_update,
    stream,
    turns_done,
)
from tests.service import ASR, Service, wait_for, wav

KEY = "realtime-test-key"


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec):
    limits = {"EDGE_ASR_REALTIME_MAX_SESSIONS": "2", "EDGE_ASR_REALTIME_MAX_BUFFER": "40s"}
    svc = Service(tmp_path_factory.mktemp("realtime") / "state", **limits).start()
    yield svc
    svc.stop()


def test_speech_at_real_time_is_cut_into_turns_with_words_as_they_are_spoken(unit: Service, speech):
    """Beckett twice, 1.5 s apart: every turn is started, stopped, committed and completed in that
    order; its deltas come while it is spoken and join to its transcript; the turns, together,
    are as good as the batch transcript of the same audio (within 2 points of word error)."""
    gap = np.zeros(24000, np.float32)
    recording = np.concatenate([speech["beckett"], gap, speech["beckett"], gap])
    batch = unit.transcribe(wav(recording)).json()["text"]
    reference = " ".join([REFERENCES["beckett"]] * 2)
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        connection.send(session_update())
        received = Events(connection)
        sender = stream(connection, pcm16(recording))
        sender.join()
        events = received.until(lambda e: turns_done(e) and quiet(e, 1.5), timeout=60)
    assert [e["type"] for e in events[:2]] == ["session.created", "session.updated"]
    turns = group_by_item(events)
    assert len(turns) >= 2, [e["type"] for e in events]
    for item, kinds in turns.items():
        order = [e["type"].rsplit(".", 1)[-1] for e in kinds if e["type"] != DELTA]
        assert order == ["speech_started", "speech_stopped", "committed", "completed"], (item, order)
        completed = kinds[-1]
        assert "".join(e["delta"] for e in kinds if e["type"] == DELTA) == completed["transcript"]
        assert completed["usage"]["type"] == "duration" and completed["usage"]["seconds"] > 0
        stopped = next(e for e in kinds if e["type"].endswith("speech_stopped"))
        started = next(e for e in kinds if e["type"].endswith("speech_started"))
        if (stopped["audio_end_ms"] - started["audio_start_ms"]) > 2000:  # a long turn: words before its end
            assert any(e["type"] == DELTA and e["at"] < stopped["at"] for e in kinds), item
    transcripts = " ".join(kinds[-1]["transcript"] for kinds in turns.values())
    assert word_error_rate(reference, transcripts) <= word_error_rate(reference, batch) + 0.02, (transcripts, batch)
    committed = of_type(events, "input_audio_buffer.committed")
    assert [c["previous_item_id"] for c in committed] == [None, *(c["item_id"] for c in committed[:-1])]


def test_manual_commits_with_the_beta_shape(unit: Service, speech, clips):
    """Turn detection off: the client commits each turn. The beta ``transcription_session.update``
    is answered as the GA one is; a commit of nothing is an error, a clear drops the audio."""
    update = {
        "type": "transcription_session.update",
        "session": {"input_audio_format": "pcm16", "input_audio_transcription": {"model": ASR}, "turn_detection": None},
    }
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        received = Events(connection)
        connection.send_raw(json.dumps(update))
        connection.send({"type": "input_audio_buffer.commit"})
        connection.send(append(pcm16(speech["beckett"][:16000])))
        connection.send({"type": "input_audio_buffer.clear"})
        stream(connection, pcm16(speech["beckett"]), pace=0).join()
        connection.send({"type": "input_audio_buffer.commit"})
        events = received.until(lambda e: bool(of_type(e, COMPLETED)))
    assert of_type(events, "session.updated")[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert of_type(events, "error")[0]["error"]["code"] == "input_audio_buffer_commit_empty"
    assert of_type(events, "input_audio_buffer.cleared")
    assert not of_type(events, "input_audio_buffer.speech_started")  # no VAD turns
    completed = of_type(events, COMPLETED)
    assert len(completed) == 1
    assert completed[0]["item_id"] == of_type(events, "input_audio_buffer.committed")[0]["item_id"]
    batch = unit.transcribe(clips["beckett"]).json()["text"]
    errors = [word_error_rate(REFERENCES["beckett"], text) for text in (completed[0]["transcript"], batch)]
    assert errors[0] <= errors[1] + 0.02, (completed[0]["transcript"], batch)
    assert abs(completed[0]["usage"]["seconds"] - len(speech["beckett"]) / 16000) < 0.05


def test_bad_events_are_errors_and_the_session_goes_on(unit: Service, speech):
    bad = [
        "not json",
        {"no": "type"},
        {"type": "response.create"},
        {"type": "input_audio_buffer.append", "audio": "***"},
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"odd").decode()},
        {"type": "session.update", "session": {"type": "realtime"}},
        session_update({"type": "semantic_vad"}),
        session_update({"type": "server_vad", "threshold": 7}),
        session_update(model="no-such-model"),
        session_update(language="de"),  # an English-only model
        {
            "type": "session.update",
            "session": {"type": "transcription", "audio": {"input": {"format": {"type": "audio/pcmu"}}}},
        },
    ]
    sixteen = session_update(None)
    sixteen["session"]["audio"]["input"]["format"]["rate"] = 16000  # the extension
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        received = Events(connection)
        connection.send_raw(json.dumps(sixteen))
        for event in bad:
            connection.send_raw(json.dumps(event) if isinstance(event, dict) else event)
        stream(connection, pcm16(speech["beckett"], 16000), pace=0).join()
        connection.send({"type": "input_audio_buffer.commit"})
        events = received.until(lambda e: bool(of_type(e, COMPLETED)))
    codes = [e["error"]["code"] for e in of_type(events, "error")]
    assert len(codes) == len(bad), codes
    assert codes[0] == "invalid_json" and codes[2] == "invalid_event"
    assert "model_not_found" in codes and codes.count("invalid_request") >= 6
    assert word_error_rate(REFERENCES["beckett"], of_type(events, COMPLETED)[0]["transcript"]) < 0.1  # it went on


def test_the_session_holds_its_model_and_gives_it_back(unit: Service, speech):
    """The first audio loads the model (reason ``realtime``); it stays leased, so an unload is
    refused, until the session closes."""
    assert unit.post(f"/api/models/{ASR}/unload?wait=30").ok
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        connection.send(session_update())
        connection.send(append(pcm16(speech["beckett"][:8000])))
        wait_for(lambda: unit.model(ASR)["in_flight"] == 1 and unit.model(ASR)["state"] == "ready", 30)
        busy = unit.post(f"/api/models/{ASR}/unload")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "model_busy"
    assert wait_for(lambda: unit.model(ASR)["in_flight"] == 0, 10)
    loads = [e["reason"] for e in unit.get("/api/events").json()["events"] if e["to"] == "ready"]
    assert loads[-1] == "realtime"
    assert 'endpoint="realtime decode",status="ok"' in unit.get("/metrics").text


def test_refusals_at_the_upgrade(unit: Service):
    """An unknown model, another intent, another site's page, a name the unit does not have:
    refused with the HTTP API's JSON errors before any session opens."""
    url = unit.url.replace("http", "ws") + "/v1/realtime?intent=transcription"
    cases = [
        (url + "&model=no-such-model", {}, 404, "model_not_found"),
        (url.replace("transcription", "conversation"), {}, 400, "invalid_request"),
        (url, {"Origin": "http://evil.example"}, 403, "forbidden"),
        (url.replace("127.0.0.1", "attacker.example"), {}, 403, "forbidden"),  # DNS rebinding
    ]
    for address, headers, status, code in cases:
        with pytest.raises(InvalidStatus) as refused:  # the socket to the unit, whatever the name says
            connect(address, additional_headers=headers, sock=socket.create_connection(("127.0.0.1", unit.port)))
        response = refused.value.response
        assert response.status_code == status and json.loads(response.body)["error"]["code"] == code, address
    with connect(url, origin=unit.url) as own_page:  # type: ignore[arg-type]
        assert json.loads(own_page.recv(timeout=10))["type"] == "session.created"
        assert own_page.response.headers["X-Edge-Asr-Unit"] == socket.gethostname()  # which unit took it
    plain = unit.get("/v1/realtime?intent=transcription")
    assert plain.status_code == 400 and plain.json()["error"]["type"] == "invalid_request_error"


def test_the_api_key_as_a_bearer_token_or_a_browsers_subprotocol(tmp_path, whisper_spec):
    svc = Service(tmp_path / "state", EDGE_ASR_API_KEY=KEY).start()
    try:
        with pytest.raises(InvalidStatus) as refused, svc.openai("wrong").realtime.connect(extra_query=TRANSCRIPTION):
            pass
        assert refused.value.response.status_code == 401
        with svc.openai(KEY).realtime.connect(extra_query=TRANSCRIPTION) as connection:
            assert connection.recv().type == "session.created"
        url = svc.url.replace("http", "ws") + "/v1/realtime?intent=transcription"
        protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
        with connect(url, subprotocols=protocols, origin=svc.url) as browser:  # type: ignore[arg-type]
            assert browser.subprotocol == "realtime"
            assert json.loads(browser.recv(timeout=10))["type"] == "session.created"
        with pytest.raises(InvalidStatus) as refused:
            connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"])  # type: ignore[list-item]
        assert refused.value.response.status_code == 401
    finally:
        svc.stop()


def test_sessions_beyond_the_limit_are_refused_with_retry_after(unit: Service):
    url = unit.url.replace("http", "ws") + "/v1/realtime?intent=transcription"
    with connect(url), connect(url) as second:  # realtime_max_sessions: 2
        with pytest.raises(InvalidStatus) as refused:
            connect(url)
        response = refused.value.response
        assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
        assert json.loads(response.body)["error"]["code"] == "queue_full"
        second.close()
        wait_for(lambda: opens(url), 10)  # a session that ends frees its place


def opens(url: str) -> bool:
    try:
        with connect(url):
            return True
    except InvalidStatus:
        return False


def test_a_flood_of_audio_is_an_error_and_a_close(unit: Service):
    """More audio waiting than ``realtime_max_buffer`` (40 s here): an error, then the session
    closes (1008); the front did not keep it."""
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 16000 * 60).astype(np.float32)
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        connection.send(session_update(None))
        stream(connection, pcm16(noise), pace=0)
        received = Events(connection)
        events = received.until(lambda e: bool(of_type(e, "error")), timeout=60)
        assert of_type(events, "error")[0]["error"]["code"] == "input_audio_buffer_too_large"
        closed = received.ended(10)
    assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1008
    assert unit.get("/healthz").ok


def test_under_critical_memory_a_session_is_closed_not_the_unit(tmp_path, whisper_spec, speech):
    """Memory read from tegrastats (the fake) falls under ``memory_reserve`` while a session
    streams: an ``error`` and a close (1013, try later); the model it held is then idle and the
    supervisor hibernates it for the pressure."""
    feed = tmp_path / "tegrastats-lines.txt"
    replay(feed, RECORDED)
    svc = Service(tmp_path / "state", **pressure_env(feed)).start()
    try:
        with svc.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
            received = Events(connection)
            connection.send(session_update())
            connection.send(append(pcm16(speech["beckett"][:16000])))
            wait_for(lambda: svc.model(ASR)["state"] == "ready", 30)
            replay(feed, [under_pressure(line, 100) for line in RECORDED])  # 100 MiB left
            wait_for(lambda: svc.get("/api/system/memory").json()["current"]["available_bytes"] < 2**30, 5)
            stream(connection, pcm16(speech["beckett"]))
            events = received.until(lambda e: bool(of_type(e, "error")), timeout=30)
            assert of_type(events, "error")[0]["error"]["code"] == "memory_pressure"
            closed = received.ended(10)
        assert closed is not None and closed.rcvd is not None and closed.rcvd.code == 1013
        status = wait_for(lambda: (s := svc.model(ASR))["state"] == "unloaded" and s, 10)
        assert status["last_unload_reason"] == "pressure" and svc.get("/healthz").ok
    finally:
        svc.stop()


def test_a_worker_that_dies_under_a_session_is_leased_again(unit: Service, speech):
    """The model's worker is killed while the session holds it: the next commit fails
    (``.failed``, said once), the session gives the lease back, and the one after loads the model
    again and is transcribed."""
    beckett = pcm16(speech["beckett"])
    with unit.openai().realtime.connect(extra_query=TRANSCRIPTION) as connection:
        received = Events(connection)
        connection.send(session_update(None))
        stream(connection, beckett, pace=0).join()
        connection.send({"type": "input_audio_buffer.commit"})
        received.until(lambda e: bool(of_type(e, COMPLETED)))
        os.kill(unit.model(ASR)["worker_pid"], signal.SIGKILL)
        for _ in range(2):
            stream(connection, beckett, pace=0).join()
            connection.send({"type": "input_audio_buffer.commit"})
        ends = (COMPLETED, "conversation.item.input_audio_transcription.failed")
        events = received.until(lambda e: len([x for x in e if x["type"] in ends]) >= 3)
    outcomes = [x["type"].rsplit(".", 1)[-1] for x in events if x["type"] in ends]
    assert outcomes[0] == "completed" and "completed" in outcomes[1:], outcomes
    assert word_error_rate(REFERENCES["beckett"], of_type(events, COMPLETED)[-1]["transcript"]) < 0.1
    loads = [e["reason"] for e in unit.get("/api/events").json()["events"] if e["to"] == "ready"]
    assert loads[-1] == "realtime"
