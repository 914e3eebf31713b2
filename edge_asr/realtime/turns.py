"""A Realtime session's input audio, cut into turns and transcribed while the person speaks.

The open turn is the audio since the last commit. With ``server_vad``, it is decoded again every
``STEP`` of new audio: the VAD the transcription runs (Silero, in the model's worker) says where
speech starts (``speech_started``) and where it ends; a silence of ``silence_duration_ms`` after
it ends the turn (``speech_stopped``, ``committed``) with the audio that decode saw, and the
audio after it opens the next one. Meanwhile the words two successive decodes agree on go out as
``delta``s (``agreement.LocalAgreement``), never taken back; each decode is forced to begin with
them, so only the tail is decoded anew. The decode that heard the turn end saw all of its audio:
its text is the turn's transcript, at once; its last words go out as a delta before
``completed``, so the deltas of a turn, joined, are its transcript. A turn the client commits is
decoded once more, whole (the only decode without turn detection).

Silence before any speech is dropped but for ``prefix_padding_ms``; a turn that reaches one
Whisper window (``MAX_TURN_SECONDS``) is closed there, speech or not. One task runs every decode
of a session, closed turns first, so the ``completed`` events come in order.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from edge_asr.agreement import LocalAgreement
from edge_asr.errors import ServiceError
from edge_asr.realtime.events import SessionConfig, TurnDetection, error_event, event, new_id
from edge_asr.workers.protocol import TranscriptResult

log = logging.getLogger(__name__)
STEP = 0.5  # seconds of new audio between partial decodes
MAX_TURN_SECONDS = 30.0  # one Whisper window
WIDTH = 2  # bytes per sample: PCM16 mono
Decode = Callable[[bytes, int, str | None, bool], Awaitable[TranscriptResult]]  # pcm, rate, prefix, noted
Emit = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Turn:
    start_ms: float  # where its audio starts in the session's audio
    pcm: bytearray = field(default_factory=bytearray)
    item: str | None = None  # its conversation item, from speech_started or its commit
    decoded: int = 0  # bytes the last partial decode saw
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    sent_delta: bool = False


class Turns:
    def __init__(self, config: SessionConfig, decode: Decode, emit: Emit):
        self.config, self._decode, self._emit = config, decode, emit
        self.turn = Turn(0.0)
        self._closed: collections.deque[Turn] = collections.deque()
        self._previous_item: str | None = None
        self._failure: str | None = None  # the last decode failure said
        self._wake = asyncio.Event()
        self._ordering = asyncio.Lock()  # a turn's events, in order, before a commit's

    def _ms(self, size: int) -> float:
        return size / (self.config.rate * WIDTH) * 1000

    def _bytes(self, seconds: float) -> int:
        return int(seconds * self.config.rate) * WIDTH

    @property
    def pending_seconds(self) -> float:
        """Audio not transcribed yet: the open turn's and the closed turns' waiting for theirs."""
        return sum(self._ms(len(t.pcm)) for t in (self.turn, *self._closed)) / 1000

    def append(self, pcm: bytes) -> None:
        self.turn.pcm += pcm
        self._wake.set()

    async def commit(self) -> bool:
        """The client's commit: False when there is no audio to commit. The turn is decoded once
        more, whole (``_complete``)."""
        async with self._ordering:  # after the events of a turn the VAD is ending
            if not self.turn.pcm:
                return False
            turn = self._cut(len(self.turn.pcm))
            self._closed.append(turn)
            self._wake.set()
            await self._committed(turn)
        return True

    def clear(self) -> None:
        """Drop the open turn's audio (and what its partial decode finds)."""
        self.turn = Turn(self.turn.start_ms + self._ms(len(self.turn.pcm)))

    async def run(self) -> None:
        """Every decode of the session, closed turns first; until cancelled."""
        while True:
            if self._closed:
                await self._complete(self._closed.popleft())
            elif (
                self.config.turn_detection is not None
                and self._ms(len(self.turn.pcm) - self.turn.decoded) >= STEP * 1000
            ):
                await self._partial(self.turn)
            else:
                await self._wake.wait()
                self._wake.clear()

    def _cut(self, size: int, next_from: int | None = None) -> Turn:
        """The open turn, closed after ``size`` bytes; the audio from ``next_from`` (default
        ``size``) opens the next one."""
        turn, start = self.turn, size if next_from is None else next_from
        self.turn = Turn(turn.start_ms + self._ms(start), bytearray(turn.pcm[start:]))
        del turn.pcm[size:]
        turn.item = turn.item or new_id("item")
        return turn

    async def _committed(self, turn: Turn) -> None:
        await self._emit(event("input_audio_buffer.committed", item_id=turn.item, previous_item_id=self._previous_item))
        self._previous_item = turn.item

    async def _partial(self, turn: Turn) -> None:
        detection = self.config.turn_detection
        assert detection is not None
        size = turn.decoded = len(turn.pcm)
        try:
            transcript = await self._decode(
                bytes(turn.pcm[:size]), self.config.rate, turn.agreement.text or None, False
            )
        except ServiceError as e:  # said once; the audio waits for the next decode (or the buffer's bound)
            if e.message != self._failure:
                self._failure = e.message
                await self._emit(error_event(e.message, e.code, e.type))
            return
        self._failure = None
        async with self._ordering:
            if turn is self.turn:  # not committed or cleared meanwhile
                await self._heard(turn, size, transcript, detection)

    async def _heard(self, turn: Turn, size: int, transcript: TranscriptResult, detection: TurnDetection) -> None:
        """(Holding ``_ordering``.) What a partial decode of the open turn's first ``size`` bytes
        found: speech starting, words agreed on, the turn's end. The turn is cut before any event
        is sent, so a commit or clear meanwhile acts on the audio after it."""
        start, end = transcript["speech_start"], transcript["speech_end"]
        if turn.item is None and start is None:  # silence: keep the padding that goes before speech
            drop = max(0, size - self._bytes(detection.prefix_padding_ms / 1000))
            del turn.pcm[:drop]
            turn.start_ms, turn.decoded = turn.start_ms + self._ms(drop), size - drop
            return
        started = turn.item is None
        turn.item = turn.item or new_id("item")
        words = turn.agreement.update(transcript["text"])
        silence = transcript["duration"] - (end or 0.0)
        ended = silence * 1000 >= detection.silence_duration_ms or self._ms(size) >= MAX_TURN_SECONDS * 1000
        if ended:
            # the turn ends with the audio this decode saw (its silence included, as OpenAI's
            # audio_end_ms does), so this decode is the turn's whole transcript: none runs again.
            # The next turn starts where the speech this decode heard ends: a word may begin in
            # the silence after it that the VAD did not hear yet (it needs a quarter second of it).
            self._cut(size, min(size, self._bytes(end)) if end is not None else size)
        if started:
            audio_start = turn.start_ms + max(0.0, (start or 0.0) * 1000 - detection.prefix_padding_ms)
            await self._emit(
                event("input_audio_buffer.speech_started", audio_start_ms=round(audio_start), item_id=turn.item)
            )
        await self._send_words(turn, words)
        if ended:
            stopped = turn.start_ms + self._ms(size)
            await self._emit(event("input_audio_buffer.speech_stopped", audio_end_ms=round(stopped), item_id=turn.item))
            await self._committed(turn)
            await self._finish(turn, transcript)

    async def _complete(self, turn: Turn) -> None:
        assert turn.item is not None
        try:
            transcript = await self._decode(bytes(turn.pcm), self.config.rate, turn.agreement.text or None, True)
        except ServiceError as e:
            error = {"type": e.type, "code": e.code, "message": e.message, "param": None}
            await self._emit(
                event(
                    "conversation.item.input_audio_transcription.failed",
                    item_id=turn.item,
                    content_index=0,
                    error=error,
                )
            )
            return
        await self._finish(turn, transcript)

    async def _finish(self, turn: Turn, transcript: TranscriptResult) -> None:
        """The turn's last words (a delta) and its whole transcript (``completed``)."""
        text, tail = turn.agreement.final(transcript["text"])
        await self._send_words(turn, tail)
        usage = {"type": "duration", "seconds": round(transcript["duration"], 3)}
        await self._emit(
            event(
                "conversation.item.input_audio_transcription.completed",
                item_id=turn.item,
                content_index=0,
                transcript=text,
                usage=usage,
            )
        )

    async def _send_words(self, turn: Turn, words: list[str]) -> None:
        if not words:
            return
        text = " ".join(words)
        delta = f" {text}" if turn.sent_delta else text
        turn.sent_delta = True
        await self._emit(
            event("conversation.item.input_audio_transcription.delta", item_id=turn.item, content_index=0, delta=delta)
        )
