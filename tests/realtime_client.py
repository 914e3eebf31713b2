"""A Realtime API client for the tests and the benchmark: the ``openai`` SDK's realtime
connection, audio appended at a pace in a thread, the server's events read in another (each
validated against the SDK's ``RealtimeServerEvent`` and stamped with the time it came)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable

import numpy as np
import soxr
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosed

from tests.service import ASR

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"
APPEND_SECONDS = 0.1
TRANSCRIPTION = {"intent": "transcription"}  # connect(extra_query=...)
SERVER_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}


def pcm16(audio: np.ndarray, rate: int = 24000) -> bytes:
    """16-kHz float audio as the API's PCM16 at ``rate``."""
    resampled = audio if rate == 16000 else soxr.resample(audio, 16000, rate)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


def session_update(turn_detection: dict | None = SERVER_VAD, **transcription) -> dict:
    audio_input = {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": ASR, **transcription},
        "turn_detection": turn_detection,
    }
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}


def append(pcm: bytes) -> dict:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}


class Events:
    """The server's events, read in a thread as they come: each validated against the SDK's
    types and stamped with the time it came."""

    def __init__(self, connection):
        self.received: list[dict] = []
        self.closed: ConnectionClosed | None = None  # how the connection ended, once it has
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, args=(connection,), daemon=True)
        self._reader.start()

    def _read(self, connection) -> None:
        try:
            while True:
                data = json.loads(connection.recv_bytes())
                if not sixteen_khz(data):
                    SERVER_EVENT.validate_python(data)
                with self._cond:
                    self.received.append({**data, "at": time.monotonic()})
                    self._cond.notify_all()
        except ConnectionClosed as e:
            self.closed = e

    def ended(self, timeout: float) -> ConnectionClosed | None:
        self._reader.join(timeout)
        return self.closed

    def until(self, done: Callable[[list[dict]], bool], timeout: float = 120) -> list[dict]:
        """The events so far once ``done`` holds for them (checked at least every 0.2 s)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not done(self.received):
                assert time.monotonic() < deadline and self._reader.is_alive(), [e["type"] for e in self.received]
                self._cond.wait(0.2)
            return list(self.received)


def sixteen_khz(event: dict) -> bool:
    """A session at 16 kHz, the extension the SDK's types do not have (they say 24000)."""
    return event["type"].startswith("session.") and event["session"]["audio"]["input"]["format"]["rate"] == 16000


def quiet(events: list[dict], seconds: float) -> bool:
    return bool(events) and time.monotonic() - events[-1]["at"] >= seconds


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def stream(connection, pcm: bytes, pace: float = 1.0) -> threading.Thread:
    """Append ``pcm`` in 100-ms pieces at ``pace`` times real time (0: at once), in a thread."""
    piece = int(24000 * APPEND_SECONDS) * 2

    def run() -> None:
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), piece)):
            if pace:
                time.sleep(max(0.0, start + n * APPEND_SECONDS / pace - time.monotonic()))
            try:
                connection.send(append(pcm[i : i + piece]))
            except ConnectionClosed:  # the server closed the session (as the flood test expects)
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def turns_done(events: list[dict]) -> bool:
    started = len(of_type(events, "input_audio_buffer.speech_started"))
    return started > 0 and len(of_type(events, COMPLETED)) == started


def group_by_item(events: list[dict]) -> dict[str, list[dict]]:
    turns: dict[str, list[dict]] = {}
    for e in events:
        if "item_id" in e:
            turns.setdefault(e["item_id"], []).append(e)
    return turns
