"""Home Assistant's Wyoming protocol on the real service, driven by the real ``wyoming`` client
(``AsyncTcpClient``): describe and discovery, speech to text at any audio format (sent at once,
streamed at real-time pace, ended by the server's VAD), text to speech a sentence at a time (text
sent whole or streamed), the LLM as conversation agent, the three models taking turns in a
budget, and the errors a client can cause (the connection stays usable); over loopback only,
mDNS included (``wyoming_zeroconf_interfaces``: 127.0.0.1)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
import soundfile
import soxr
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import (
    Synthesize,
    SynthesizeChunk,
    SynthesizeStart,
    SynthesizeStop,
    SynthesizeStopped,
    SynthesizeVoice,
)
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES, audible_interval
from tests.service import ASR, CHAT_MODELS, LLM, TTS, Service, assert_within_budget, turns_in_budget, wait_for

ADVERTISED = f"edge-asr-test-{os.getpid()}"  # unique among test runs on this machine


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec):
    discovery = {"EDGE_ASR_WYOMING_ZEROCONF": ADVERTISED, "EDGE_ASR_WYOMING_ZEROCONF_INTERFACES": "127.0.0.1"}
    svc = Service(tmp_path_factory.mktemp("wyoming") / "state", **discovery).start()
    yield svc
    svc.stop()


def exchange(port: int, events: list[Event], until: Callable[[Event], bool], timeout: float = 120) -> list[Event]:
    """Send ``events`` on one connection; what comes back, up to the first event ``until`` takes."""
    received, _ = paced(port, events, until, lambda event: 0.0, timeout)
    return [event for _, event in received]


def paced(
    port: int,
    events: list[Event],
    until: Callable[[Event], bool],
    pause: Callable[[Event], float],
    timeout: float = 120,
) -> tuple[list[tuple[float, Event]], list[float]]:
    """Send ``events`` on one connection, waiting ``pause(event)`` seconds after each, while
    reading what comes back (each event within ``timeout``) up to the first event ``until``
    takes; what came back with when it came, and when each event was sent (after all were,
    whatever came back first)."""

    async def talk() -> tuple[list[tuple[float, Event]], list[float]]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            received: list[tuple[float, Event]] = []

            async def read() -> None:
                while True:
                    event = await asyncio.wait_for(client.read_event(), timeout)
                    assert event is not None, f"the connection closed after {[e.type for _, e in received]}"
                    received.append((time.monotonic(), event))
                    if until(event):
                        return

            reader, sent = asyncio.create_task(read()), []
            try:
                for event in events:
                    await client.write_event(event)
                    sent.append(time.monotonic())
                    await asyncio.sleep(pause(event))
            except BaseException:  # a refused connection: what the reader found is not awaited
                reader.cancel()
                raise
            await reader
            return received, sent

    return asyncio.run(talk())


def real_time(event: Event) -> float:
    """The duration of an audio chunk: audio sent as a microphone gives it."""
    if not AudioChunk.is_type(event.type):
        return 0.0
    chunk = AudioChunk.from_event(event)
    return len(chunk.audio) / (chunk.rate * chunk.width * chunk.channels)


def served(port: int) -> bool:
    """Whether a connection is served now (not refused or closed)."""
    try:
        return bool(exchange(port, [Describe().event()], lambda e: Info.is_type(e.type), timeout=10))
    except (AssertionError, ConnectionError):
        return False


def spoken(samples: np.ndarray, rate: int, channels: int, model: str | None = ASR) -> list[Event]:
    """A command as a satellite sends it: 16-bit PCM at ``rate`` in ``channels``, 1024-frame chunks."""
    audio = soxr.resample(samples, 16000, rate) if rate != 16000 else samples
    pcm = (np.clip(np.repeat(audio[:, None], channels, axis=1), -1, 1) * 32767).astype("<i2").tobytes()
    step = 1024 * 2 * channels
    chunks = [
        AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i : i + step]) for i in range(0, len(pcm), step)
    ]
    start = [Transcribe(name=model).event()] if model else []
    return [
        *start,
        AudioStart(rate=rate, width=2, channels=channels).event(),
        *(c.event() for c in chunks),
        AudioStop().event(),
    ]


def test_describe_lists_every_speech_model_voice_and_llm(unit: Service):
    (answer,) = exchange(unit.wyoming_port, [Describe().event()], lambda e: Info.is_type(e.type))
    info = Info.from_event(answer)
    models = {m.name: m for m in info.asr[0].models}
    assert models[ASR].installed and models[ASR].languages == ["en"]
    assert {"de", "es", "en"} <= set(models["whisper-base"].languages)
    assert [v.name for v in info.tts[0].voices] == [TTS] and info.tts[0].voices[0].languages
    assert [m.name for m in info.handle[0].models] == list(CHAT_MODELS)
    assert info.asr[0].supports_transcript_streaming and info.tts[0].supports_synthesize_streaming


def test_home_assistant_discovers_the_unit_over_mdns(unit: Service):
    """Announced and browsed on the loopback interface only: nothing goes onto the real network."""
    found: list[str] = []

    class Listener(ServiceListener):
        def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
            found.append(name)

        def update_service(self, zc: Zeroconf, type_: str, name: str) -> None: ...

        def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None: ...

    browser = Zeroconf(interfaces=["127.0.0.1"])
    try:
        ServiceBrowser(browser, "_wyoming._tcp.local.", Listener())
        name = f"{ADVERTISED}._wyoming._tcp.local."
        wait_for(lambda: name in found, 10)
        info = browser.get_service_info("_wyoming._tcp.local.", name, timeout=5000)
        assert info is not None and (info.port, info.parsed_addresses()) == (unit.wyoming_port, ["127.0.0.1"])
    finally:
        browser.close()


@pytest.mark.parametrize("rate, channels", [(16000, 1), (22050, 2)])
def test_a_command_comes_back_as_the_text_the_http_api_gives(unit: Service, speech, clips, rate, channels):
    http = unit.transcribe(clips["beckett"]).json()["text"]
    events = exchange(
        unit.wyoming_port, spoken(speech["beckett"], rate, channels), lambda e: Transcript.is_type(e.type)
    )
    text = Transcript.from_event(events[-1]).text
    assert word_error_rate(http, text) == 0, (http, text)
    assert word_error_rate(REFERENCES["beckett"], text) < 0.1


def test_a_command_streamed_at_real_time_is_transcribed_while_it_arrives(unit: Service, speech, clips):
    """Words come as transcript-chunks while the person speaks, never taken back: the chunks make
    the final text, which is what the HTTP API gives for the same audio."""
    http = unit.transcribe(clips["beckett"]).json()["text"]
    received, sent = paced(
        unit.wyoming_port, spoken(speech["beckett"], 16000, 1), lambda e: TranscriptStop.is_type(e.type), real_time
    )
    types = [e.type for _, e in received]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript", "transcript-stop"], types
    chunks = [(at, TranscriptChunk.from_event(e).text) for at, e in received if TranscriptChunk.is_type(e.type)]
    audio_stop = sent[-1]
    assert len([at for at, _ in chunks if at < audio_stop]) >= 3, (chunks, audio_stop)  # while it was spoken
    final = Transcript.from_event(received[-2][1]).text
    assert "".join(text for _, text in chunks) == final
    assert word_error_rate(http, final) == 0, (http, final)
    timings = unit.get("/metrics").text
    assert 'edge_asr_request_duration_seconds_count{endpoint="wyoming audio-stop",status="ok"}' in timings


def test_the_server_hears_the_end_of_a_command_with_vad_sensitivity(unit: Service, speech):
    """For a client that never sends audio-stop: the transcript comes once the VAD has heard the
    silence Home Assistant's relaxed sensitivity asks for (1.25 s; the reading pauses for about a
    second between its sentences), while audio still arrives."""
    silence = np.zeros(4 * 16000, np.float32)
    command = spoken(np.concatenate([speech["beckett"], silence]), 16000, 1, model=None)
    events = [Transcribe(name=ASR, vad_sensitivity="relaxed").event(), *command, Describe().event()]
    received, sent = paced(unit.wyoming_port, events, lambda e: Info.is_type(e.type), real_time)
    transcript = next(Transcript.from_event(e) for _, e in received if Transcript.is_type(e.type))
    assert word_error_rate(REFERENCES["beckett"], transcript.text) < 0.1
    heard_at = next(at for at, e in received if TranscriptStop.is_type(e.type))
    speech_ends, last_chunk = sent[1] + audible_interval(speech["beckett"])[1], sent[-3]  # its last sound
    assert speech_ends + 1.25 < heard_at < last_chunk, (heard_at - speech_ends, last_chunk - speech_ends)
    assert not any(Error.is_type(e.type) for _, e in received)  # audio after the end, and its stop: no error


def test_a_command_the_vad_never_hears_end_ends_after_one_window(unit: Service):
    """Without audio-stop and with no speech to hear the end of, the command still ends (30 s):
    what such a client sends is bounded."""
    silence = np.zeros(32 * 16000, np.float32)
    events = [Transcribe(name=ASR, vad_sensitivity="default").event(), *spoken(silence, 16000, 1, model=None)]
    received = exchange(unit.wyoming_port, [*events, Describe().event()], lambda e: Info.is_type(e.type))
    types = [e.type for e in received]
    assert types[-3:] == ["transcript", "transcript-stop", "info"] and "error" not in types, types
    assert Transcript.from_event(received[-3]).text == ""


def test_a_voice_speaks_each_sentence_as_it_is_made(unit: Service):
    text = "The pump in room four is running hot. Please check the valve. Then call the shift lead."
    voice = SynthesizeVoice(name=TTS)
    received, _ = paced(
        unit.wyoming_port, [Synthesize(text=text, voice=voice).event()], lambda e: AudioStop.is_type(e.type), real_time
    )
    events = [e for _, e in received]
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert len(chunks) == 3 and all(c.width == 2 and c.channels == 1 and c.rate == 22050 for c in chunks)
    assert received[-2][0] - received[1][0] > 0.02  # the first sentence came while the last was made
    samples = np.frombuffer(b"".join(c.audio for c in chunks), "<i2")
    assert 4 < len(samples) / 22050 < 12 and np.abs(samples).max() > 1000  # speech, not silence
    wav = io.BytesIO()
    soundfile.write(wav, samples, 22050, format="WAV")  # decodable as it came
    assert soundfile.info(io.BytesIO(wav.getvalue())).duration == pytest.approx(len(samples) / 22050)


def test_text_streamed_as_an_llm_writes_it_is_spoken_a_sentence_at_a_time(unit: Service):
    """synthesize-start, the text in pieces a second apart, then synthesize-stop: the first
    sentence is heard before the last piece is written; a synthesize inside the stream (its copy
    for older servers) adds nothing."""
    pieces = ["The pump in room four ", "is running hot. Please check ", "the valve on the left. ", "Then call."]
    voice = SynthesizeVoice(name=TTS)
    events = [
        SynthesizeStart(voice=voice).event(),
        *(SynthesizeChunk(text=piece).event() for piece in pieces),
        Synthesize(text="".join(pieces), voice=voice).event(),
        SynthesizeStop().event(),
    ]
    received, sent = paced(
        unit.wyoming_port,
        events,
        lambda e: SynthesizeStopped.is_type(e.type),
        lambda e: 1.0 if SynthesizeChunk.is_type(e.type) else 0.0,
    )
    types = [e.type for _, e in received]
    assert types[0] == "audio-start" and types[-2:] == ["audio-stop", "synthesize-stopped"], types
    chunks = [(at, AudioChunk.from_event(e)) for at, e in received if AudioChunk.is_type(e.type)]
    assert len(chunks) == 3 and types.count("audio-start") == 1  # a chunk per sentence, one stream
    assert chunks[0][0] < sent[len(pieces)]  # the first sentence before the last piece was written
    samples = np.frombuffer(b"".join(c.audio for _, c in chunks), "<i2")
    assert 4 < len(samples) / 22050 < 12 and np.abs(samples).max() > 1000


def test_the_llm_answers_as_the_conversation_agent(unit: Service):
    asked = Transcript(text="Is the pump in room four running?", context={"conversation_id": "shift-7"})
    events = exchange(unit.wyoming_port, [asked.event()], lambda e: Handled.is_type(e.type))
    handled = Handled.from_event(events[-1])
    assert handled.text and handled.context == {"conversation_id": "shift-7"}


def test_errors_answer_an_error_event_and_the_connection_goes_on(unit: Service, speech):
    def is_error(e: Event) -> bool:
        return Error.is_type(e.type)

    for bad, code, words in [
        (Transcribe(name="no-such-model").event(), "model_not_found", "no-such-model"),
        (Transcribe(name=ASR, language="de").event(), "invalid_request", "English-only"),
        (Transcribe(name=LLM).event(), "invalid_request", "cannot transcribe"),
        (
            AudioChunk(rate=16000, width=2, channels=1, audio=b"\0" * 64).event(),
            "invalid_request",
            "before audio-start",
        ),
        (AudioStop().event(), "invalid_request", "without audio"),
        (Synthesize(text="Hi.", voice=SynthesizeVoice(name=ASR)).event(), "invalid_request", "cannot speak"),
        (Transcribe(name=ASR, vad_sensitivity="sleepy").event(), "invalid_request", "vad_sensitivity"),
        (SynthesizeChunk(text="Hi. ").event(), "invalid_request", "before synthesize-start"),
    ]:
        events = exchange(unit.wyoming_port, [bad, Describe().event()], lambda e: Info.is_type(e.type))
        error = Error.from_event(events[0])
        assert (error.code, words in error.text) == (code, True), error
        assert Info.is_type(events[1].type)  # the same connection answers the next event
    tiny = spoken(speech["beckett"][:800], 16000, 1)  # 50 ms: not a command
    events = exchange(unit.wyoming_port, tiny, is_error)
    assert "at least 100 ms" in Error.from_event(events[-1]).text
    no_rate = [
        AudioStart(rate=16000, width=2, channels=1).event(),
        AudioChunk(rate=0, width=2, channels=1, audio=b"\0" * 64).event(),
    ]
    events = exchange(unit.wyoming_port, [*no_rate, Describe().event()], lambda e: Info.is_type(e.type))
    assert "a sample rate of 0 Hz" in Error.from_event(events[0]).text and Info.is_type(events[1].type)
    # a text stream whose voice is refused: one error, its chunks and its synthesize copy dropped, then its end
    voice = SynthesizeVoice(name=ASR)
    stream = [
        SynthesizeStart(voice=voice).event(),
        SynthesizeChunk(text="Hello there. ").event(),
        Synthesize(text="Hello there.", voice=voice).event(),
        SynthesizeStop().event(),
    ]
    events = exchange(unit.wyoming_port, stream, lambda e: SynthesizeStopped.is_type(e.type))
    assert [e.type for e in events] == ["error", "synthesize-stopped"], [e.type for e in events]


def test_too_long_audio_too_many_clients_and_other_networks_are_refused(tmp_path, whisper_spec, speech):
    svc = Service(tmp_path / "state", EDGE_ASR_MAX_UPLOAD_BYTES="100kB").start()
    try:
        command = [*spoken(speech["beckett"], 16000, 1), Describe().event()]
        events = exchange(svc.wyoming_port, command, lambda e: Info.is_type(e.type))
        assert [e.type for e in events] == ["error", "info"]  # one error for the whole command, then on
        assert "max_upload_bytes" in Error.from_event(events[0]).text
        # the model began loading at audio-start, while the (refused) command was still arriving
        assert wait_for(lambda: svc.model(ASR)["state"] == "ready", 60)
        assert svc.get("/healthz").ok
    finally:
        svc.stop()
    full = Service(tmp_path / "full", EDGE_ASR_WYOMING_MAX_CLIENTS="1").start()
    try:
        with socket.create_connection(("127.0.0.1", full.wyoming_port), timeout=10) as held:  # the one place
            held.sendall(b'{"type": "describe"}\n')
            assert held.recv(1)  # served: it is counted
            with pytest.raises((AssertionError, ConnectionError)):
                exchange(full.wyoming_port, [Describe().event()], lambda e: True, timeout=10)
        assert wait_for(lambda: served(full.wyoming_port), 10)  # free again once the server saw it close
        assert "refused a connection from 127.0.0.1 (wyoming_max_clients 1 connected)" in full.log.read_text()
    finally:
        full.stop()
    closed = Service(tmp_path / "closed", EDGE_ASR_WYOMING_ALLOW="10.0.0.0/8").start()
    try:
        with pytest.raises((AssertionError, ConnectionError)):  # closed at once, or reset under our write
            exchange(closed.wyoming_port, [Describe().event()], lambda e: True, timeout=10)
        assert "refused a connection from 127.0.0.1 (not in wyoming_allow)" in closed.log.read_text()
    finally:
        closed.stop()


@pytest.mark.parametrize(
    "sent, kind",
    [
        (b"not json\n", "malformed header"),
        (b'{"type": "audio-chunk", "payload_length": 1000000000}\n', "payload too large"),
        (b'{"type": "synthesize", "data_length": 100000000}\n', "data too large"),
        (b'{"type": "audio-chunk", "payload_length": 100}\n' + b"\0" * 10, "stalled event"),
        (b'{"type": "describe"' + b" " * 70_000, "header too large"),
    ],
    ids=["not json", "huge payload", "huge data", "stalled", "endless header"],
)
def test_a_client_that_breaks_the_framing_is_closed_and_logged_once(tmp_path, whisper_spec, sent, kind):
    """Nothing a client claims is read or kept; other clients are served meanwhile."""
    svc = Service(tmp_path / "state", EDGE_ASR_WYOMING_TIMEOUT="2s").start()
    try:
        for _ in range(2):  # the same fault twice: one log line
            with socket.create_connection(("127.0.0.1", svc.wyoming_port), timeout=10) as raw:
                raw.sendall(sent)
                started = time.monotonic()
                with contextlib.suppress(ConnectionResetError):  # closed with what it would not read unread
                    assert raw.recv(1) == b""  # closed by the server
                assert time.monotonic() - started < 8
            assert exchange(svc.wyoming_port, [Describe().event()], lambda e: Info.is_type(e.type))  # others are served
        assert svc.log.read_text().count(f"({kind}:") == 1, svc.log.read_text()[-2000:]
    finally:
        svc.stop()


def test_speech_the_llm_and_a_voice_take_turns_under_a_budget_that_holds_one(budget_service: Service, speech):
    """A voice command, its answer and the answer spoken, over Wyoming, where the speech model and
    the LLM do not fit together: each loads as its request comes ("wyoming"), the one before it
    evicted, never more resident than the budget."""
    svc = budget_service
    events = exchange(svc.wyoming_port, spoken(speech["beckett"], 16000, 1), lambda e: Transcript.is_type(e.type))
    asked = Transcript(text=Transcript.from_event(events[-1]).text, context={"conversation_id": "budget"})
    answer = Handled.from_event(exchange(svc.wyoming_port, [asked.event()], lambda e: Handled.is_type(e.type))[-1])
    spoken_answer = Synthesize(text=answer.text or "Done.", voice=SynthesizeVoice(name=TTS))
    audio = exchange(svc.wyoming_port, [spoken_answer.event()], lambda e: AudioStop.is_type(e.type))
    assert any(AudioChunk.is_type(e.type) for e in audio)
    lifecycle = svc.get("/api/events").json()["events"]
    moves = [(e["model"], e["to"], e["reason"]) for e in lifecycle if e["to"] in ("ready", "unloaded")]
    assert moves == turns_in_budget(svc, "wyoming"), moves
    assert_within_budget(svc, moves)
