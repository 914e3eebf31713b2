"""One Realtime API transcription session over a WebSocket, and the registry that bounds them.

A session holds a lease on its model from its first audio or ``session.update`` (the model loads
while the person starts to speak; it does not hibernate under an open session) until it closes,
names another model, or the model fails (the next decode leases it again); a session without any
event for ``realtime_idle_timeout`` is closed. Client events are handled in order; a bad one is
answered with an ``error`` and the session goes on. Audio waiting to be transcribed is bounded
(``realtime_max_buffer``), and so is the memory the unit has: past either, an ``error``, and the
session is closed (code 1008, or 1013 under memory pressure) rather than the front growing or the
unit being OOM-killed. A client that stops taking its events is closed too (``_emit``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
import threading
import time
from contextlib import ExitStack
from typing import Any

from prometheus_client import Histogram

from edge_asr.audio import pcm_to_mono, to_model_rate
from edge_asr.choices import transcription_options
from edge_asr.config import Config
from edge_asr.errors import InvalidRequest, QueueFull, ServiceError
from edge_asr.lifecycle import Lease, ModelManager, result
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.realtime.events import (
    SessionConfig,
    error_event,
    event,
    session_object,
    updated_config,
)
from edge_asr.realtime.turns import WIDTH, Turns
from edge_asr.workers.protocol import TranscriptionOptions, TranscriptResult

log = logging.getLogger(__name__)
CLOSE_IDLE, CLOSE_POLICY, CLOSE_INTERNAL, CLOSE_TRY_LATER = 1001, 1008, 1011, 1013  # WebSocket close codes


class RealtimeSessions:
    """The open sessions: at most ``realtime_max_sessions``; the one owner of their count."""

    def __init__(self, manager: ModelManager, config: Config, timings: Histogram | None = None):
        self.manager, self.config, self.timings = manager, config, timings
        self.open_count = 0
        self._lock = threading.Lock()

    def open(self, model: str | None) -> RealtimeSession:
        """A session on ``model`` (default: the default speech model); a 503 when all are taken."""
        session_config = SessionConfig(model or DEFAULT_MODELS["asr"])
        options = self.options(session_config)  # an unknown model or one that cannot transcribe: refused now
        with self._lock:
            if self.open_count >= self.config.realtime_max_sessions:
                raise QueueFull(
                    f"all {self.config.realtime_max_sessions} realtime sessions are taken (realtime_max_sessions)",
                    retry_after=5,
                )
            self.open_count += 1
        return RealtimeSession(self, session_config, options)

    def options(self, session: SessionConfig) -> TranscriptionOptions:
        """What a session with ``session`` transcribes with; a model or language it cannot have is refused."""
        spec = self.manager.spec(session.model)
        if spec.task != "asr":
            raise InvalidRequest(f"the model {session.model!r} is a {spec.task} model; it cannot transcribe")
        requested = {"language": session.language, "prompt": session.prompt}
        return transcription_options(self.manager, spec, requested)

    def release(self) -> None:
        """A session ended: its place is free."""
        with self._lock:
            self.open_count -= 1


class RealtimeSession:
    def __init__(self, sessions: RealtimeSessions, config: SessionConfig, options: TranscriptionOptions):
        self._sessions, self._manager = sessions, sessions.manager
        self._options = options
        self._turns = Turns(config, self._decode, self._emit)  # owns the session's configuration
        self._holds = ExitStack()  # the model's lease
        self._lease: asyncio.Future[Lease] | None = None  # taken at the first audio or session.update
        self._holding = asyncio.Lock()  # taking and giving back the lease, and starting a decode on it
        self._leased: str | None = None  # its model
        self._work: asyncio.Future[TranscriptResult] | None = None  # the last decode on it
        self._send: Any = None
        self._sending = asyncio.Lock()
        self._close_code: int | None = None  # set: the session ends with this code
        self._stalled = False  # the client stopped taking events

    @property
    def config(self) -> SessionConfig:
        return self._turns.config

    async def run(self, receive: Any, send: Any, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        """Accept the WebSocket (answering with ``headers``: which unit took it) and serve it until
        the client leaves or the session is closed."""
        self._send = send
        decoding: asyncio.Task | None = None
        try:
            if (await receive())["type"] != "websocket.connect":  # ASGI's first message
                return
            await send({"type": "websocket.accept", "subprotocol": subprotocol, "headers": headers})
            decoding = asyncio.create_task(self._turns.run())
            decoding.add_done_callback(self._decoding_ended)
            await self._emit(event("session.created", session=session_object(self.config)))
            idle = self._sessions.config.realtime_idle_timeout
            while self._close_code is None:
                try:
                    message = await asyncio.wait_for(receive(), idle)
                except asyncio.TimeoutError:
                    await self._close(f"no event for {idle:.0f} s (realtime_idle_timeout)", "session_idle", CLOSE_IDLE)
                    break
                if message["type"] == "websocket.disconnect":
                    return
                await self._handle(message.get("text") or message.get("bytes") or "")
            if not self._stalled:  # else uvicorn closes the connection once this returns
                await send({"type": "websocket.close", "code": self._close_code})
        finally:
            if decoding is not None:
                decoding.cancel()
                await asyncio.gather(decoding, return_exceptions=True)
            async with self._holding:
                await self._give_back()
            self._sessions.release()

    def _decoding_ended(self, task: asyncio.Task) -> None:
        """The decoding task ends only when cancelled; if it failed, the session ends (1011) at the
        client's next event rather than going on without transcribing."""
        if not task.cancelled() and task.exception() is not None:
            log.error("realtime: the session's decoding failed", exc_info=task.exception())
            self._close_code = CLOSE_INTERNAL

    async def _lease_for(self, model: str) -> asyncio.Future[Lease]:
        """(Holding ``_holding``.) The session's lease on ``model``, its load started now (in a
        thread, while the audio arrives) when the session holds none, another model's, or one
        whose load or worker failed: that one is given back first."""
        current = self._lease
        if current is not None and self._leased == model and not (current.done() and current.exception()):
            return current
        await self._give_back()
        holds, lease = ExitStack(), self._manager.lease(model, reason="realtime")
        self._holds, self._leased = holds, model
        self._lease = asyncio.ensure_future(asyncio.to_thread(holds.enter_context, lease))
        self._lease.add_done_callback(lambda task: task.cancelled() or task.exception())  # read by _decode
        return self._lease

    async def _give_back(self) -> None:
        """(Holding ``_holding``.) Give the lease back, once its load and the decode on it have
        ended in their threads."""
        await asyncio.gather(*(f for f in (self._lease, self._work) if f is not None), return_exceptions=True)
        holds, self._holds, self._lease, self._leased = self._holds, ExitStack(), None, None
        await asyncio.to_thread(holds.close)

    async def _handle(self, text: str | bytes) -> None:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            await self._emit(error_event("the event is not JSON (or nested too deeply)", "invalid_json"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._emit(error_event("an event is a JSON object with a 'type'", "invalid_event"))
            return
        kind, about = message["type"], message.get("event_id")
        handler = HANDLERS.get(kind)
        if handler is None:
            await self._emit(error_event(f"unknown event type {kind[:60]!r}", "invalid_event", about=about))
            return
        try:
            await handler(self, message)
        except ServiceError as e:
            await self._emit(error_event(e.message, e.code, e.type, about))
        except Exception:  # our bug, not the client's: logged, and the session goes on
            log.exception("realtime: handling %s failed", kind)
            await self._emit(error_event(f"internal error handling {kind}", "internal_error", "server_error", about))

    async def _update(self, message: dict[str, Any]) -> None:
        beta = message["type"] == "transcription_session.update"
        config = updated_config(self.config, message.get("session"), beta)
        options = self._sessions.options(config)
        if config.rate != self.config.rate and self._turns.pending_seconds:
            raise InvalidRequest("the audio rate cannot change while the buffer holds audio; commit or clear it first")
        async with self._holding:
            await self._lease_for(config.model)
        self._turns.config, self._options = config, options
        await self._emit(event("session.updated", session=session_object(config)))

    async def _append(self, message: dict[str, Any]) -> None:
        audio = message.get("audio")
        if not isinstance(audio, str):
            raise InvalidRequest("input_audio_buffer.append needs 'audio': base64 PCM16")
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("'audio' is not valid base64") from None
        if len(pcm) % WIDTH:
            raise InvalidRequest("'audio' must be whole 16-bit samples (an even number of bytes)")
        limit = self._sessions.config.realtime_max_buffer
        if self._turns.pending_seconds + len(pcm) / (WIDTH * self.config.rate) > limit:
            await self._close(
                f"more than {limit:.0f} s of audio wait to be transcribed (realtime_max_buffer): audio is sent "
                "faster than it can be transcribed",
                "input_audio_buffer_too_large",
                CLOSE_POLICY,
            )
            return
        available = self._manager.memory_now().available_bytes
        if available < self._sessions.config.memory_reserve:
            await self._close("the unit is short of memory; try again later", "memory_pressure", CLOSE_TRY_LATER)
            return
        if self._lease is None:  # the first audio: the model loads while the person speaks
            async with self._holding:
                await self._lease_for(self.config.model)
        self._turns.append(pcm)

    async def _commit(self, message: dict[str, Any]) -> None:
        if not await self._turns.commit():
            error = error_event("the input audio buffer is empty: nothing to commit", "input_audio_buffer_commit_empty")
            await self._emit(error)

    async def _clear(self, message: dict[str, Any]) -> None:
        self._turns.clear()
        await self._emit(event("input_audio_buffer.cleared"))

    async def _close(self, message: str, code: str, close_code: int) -> None:
        log.warning("realtime: closing a session: %s", message)
        await self._emit(error_event(message, code))
        self._close_code = close_code

    async def _decode(self, pcm: bytes, rate: int, prefix: str | None, noted: bool) -> TranscriptResult:
        """(For the turns.) The transcript of ``pcm`` after ``prefix``, on the session's lease. A
        failure of the model (its load, its worker) gives the lease back: the next decode leases
        the model again."""
        options = dataclasses.replace(self._options, prefix=prefix, live=True)
        if self.config.turn_detection is not None:
            options = dataclasses.replace(options, vad_threshold=self.config.turn_detection.threshold)
        started, status = time.perf_counter(), "ok"
        try:
            async with self._holding:  # no lease is given back while a decode starts on it
                lease = await asyncio.shield(await self._lease_for(self.config.model))

                def transcribe() -> TranscriptResult:
                    samples = to_model_rate(pcm_to_mono(pcm, WIDTH, 1), rate)
                    return result(lease.transcribe(samples, options, noted=noted))

                self._work = asyncio.get_running_loop().run_in_executor(None, transcribe)
            return await asyncio.shield(self._work)  # a lease given back waits for it
        except ServiceError as e:
            status = e.code
            if e.status >= 500:
                async with self._holding:
                    await self._give_back()
            raise
        finally:
            timings = self._sessions.timings
            if timings is not None:
                timings.labels("realtime decode", status).observe(time.perf_counter() - started)

    async def _emit(self, message: dict[str, Any]) -> None:
        """Send an event; a client that has not taken the earlier ones for ``client_timeout`` (its
        socket's buffers are full) is closed instead: its events never pile up here."""
        if self._stalled:
            return
        async with self._sending:
            try:
                sending = self._send({"type": "websocket.send", "text": json.dumps(message)})
                await asyncio.wait_for(sending, self._sessions.config.client_timeout)
            except asyncio.TimeoutError:
                log.warning("realtime: a client stopped reading its events; closing its session")
                self._stalled = True
                self._close_code = CLOSE_POLICY
            except OSError:  # the client left: the receive loop finds out
                pass


HANDLERS = {
    "session.update": RealtimeSession._update,
    "transcription_session.update": RealtimeSession._update,
    "input_audio_buffer.append": RealtimeSession._append,
    "input_audio_buffer.commit": RealtimeSession._commit,
    "input_audio_buffer.clear": RealtimeSession._clear,
}
