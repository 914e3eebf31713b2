"""Home Assistant's Wyoming protocol on the real service, driven by the real ``wyoming`` client
(``AsyncTcpClient``): describe, speech to text at any audio format, text to speech a sentence at a
time, the LLM as conversation agent, and the errors a client can cause (the connection stays
usable), over loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
from collections.abc import Callable

import numpy as np
import pytest
import soundfile
import soxr
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeVoice

from edge_asr.evaluation import word_error_rate
from edge_asr.samples import REFERENCES
from tests.service import Service, wait_for

ASR, LLM, VOICE = "whisper-tiny-en", "smollm2-135m-instruct", "piper-joe-en"


@pytest.fixture(scope="module")
def unit(tmp_path_factory, whisper_spec):
    svc = Service(tmp_path_factory.mktemp("wyoming") / "state").start()
    yield svc
    svc.stop()


def exchange(port: int, events: list[Event], until: Callable[[Event], bool], timeout: float = 120) -> list[Event]:
    """Send ``events`` on one connection; what comes back, up to the first event ``until`` takes."""

    async def talk() -> list[Event]:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for event in events:
                await client.write_event(event)
            received = []
            while True:
                event = await asyncio.wait_for(client.read_event(), timeout)
                assert event is not None, f"the connection closed after {[e.type for e in received]}"
                received.append(event)
                if until(event):
                    return received

    return asyncio.run(talk())


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
    assert [v.name for v in info.tts[0].voices] == [VOICE] and info.tts[0].voices[0].languages
    assert [m.name for m in info.handle[0].models] == [LLM]


@pytest.mark.parametrize("rate, channels", [(16000, 1), (22050, 2)])
def test_a_command_comes_back_as_the_text_the_http_api_gives(unit: Service, speech, clips, rate, channels):
    http = unit.transcribe(clips["beckett"]).json()["text"]
    events = exchange(
        unit.wyoming_port, spoken(speech["beckett"], rate, channels), lambda e: Transcript.is_type(e.type)
    )
    text = Transcript.from_event(events[-1]).text
    assert word_error_rate(http, text) == 0, (http, text)
    assert word_error_rate(REFERENCES["beckett"], text) < 0.1


def test_a_voice_speaks_each_sentence_as_it_is_made(unit: Service):
    text = "The pump in room four is running hot. Please check the valve. Then call the shift lead."
    voice = SynthesizeVoice(name=VOICE)
    events = exchange(
        unit.wyoming_port, [Synthesize(text=text, voice=voice).event()], lambda e: AudioStop.is_type(e.type)
    )
    assert AudioStart.is_type(events[0].type) and AudioStop.is_type(events[-1].type)
    chunks = [AudioChunk.from_event(e) for e in events[1:-1]]
    assert len(chunks) == 3 and all(c.width == 2 and c.channels == 1 and c.rate == 22050 for c in chunks)
    samples = np.frombuffer(b"".join(c.audio for c in chunks), "<i2")
    assert 4 < len(samples) / 22050 < 12 and np.abs(samples).max() > 1000  # speech, not silence
    wav = io.BytesIO()
    soundfile.write(wav, samples, 22050, format="WAV")  # decodable as it came
    assert soundfile.info(io.BytesIO(wav.getvalue())).duration == pytest.approx(len(samples) / 22050)


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
    ]:
        events = exchange(unit.wyoming_port, [bad, Describe().event()], lambda e: Info.is_type(e.type))
        error = Error.from_event(events[0])
        assert (error.code, words in error.text) == (code, True), error
        assert Info.is_type(events[1].type)  # the same connection answers the next event
    tiny = spoken(speech["beckett"][:800], 16000, 1)  # 50 ms: not a command
    events = exchange(unit.wyoming_port, tiny, is_error)
    assert "at least 100 ms" in Error.from_event(events[-1]).text


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
