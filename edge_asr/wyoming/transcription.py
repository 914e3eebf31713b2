"""One spoken command over Wyoming, from ``audio-start`` to its end, transcribed while it arrives.

While audio arrives at about real time, the speech so far is decoded again every ``STEP`` of new
audio, and the words two successive decodes agree on are sent as ``transcript-chunk``s
(``agreement.LocalAgreement``): never taken back. At the end only what follows the committed
words is decoded (they are forced as the decode's prefix), and when the last partial decode saw
the same speech, its encoding is reused (``WhisperModel.encode``): the final transcript follows
the end of the audio by a fraction of a whole decode. Then the rest of the text as a last chunk,
the whole text as ``transcript`` (what Home Assistant reads), and ``transcript-stop``.

Partial decodes never delay anything: one runs only while none is running, only on a model that
is loaded and idle (``ModelManager.idle_lease``: a request waiting, or a load, wins), and only
while the audio arrives in time (audio sent at once is decoded once, at its end); a command
longer than one 30-s window is decoded at its end only. A failed partial decode is skipped.

With ``vad_sensitivity`` the end of the command is found on the server, for clients that never
send ``audio-stop``: each partial decode reports where the VAD heard the last speech, and a
silence after it as long as Home Assistant's setting (``SILENCE``) ends the command; so does its
``MAX_LIVE_SECONDS``-th second, speech heard or not (the audio such a client sends is bounded).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from wyoming.asr import Transcript, TranscriptChunk, TranscriptStart, TranscriptStop, VadSensitivity
from wyoming.audio import AudioChunk
from wyoming.event import Event

from edge_asr.agreement import LocalAgreement
from edge_asr.audio import AudioError, check_pcm, check_rate, pcm_to_mono, to_model_rate
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import ModelManager, result
from edge_asr.workers.protocol import TranscriptionOptions, TranscriptResult

log = logging.getLogger(__name__)
STEP = 0.5  # seconds of new audio, and of time, between partial decodes
MAX_LIVE_SECONDS = 30.0  # one Whisper window: longer audio is decoded at its end only
# Seconds of silence after the last speech that end a command, by ``vad_sensitivity``: Home
# Assistant's values, but 0.5 s at least, the VAD's own shortest pause between speech.
SILENCE = {VadSensitivity.RELAXED: 1.25, VadSensitivity.DEFAULT: 0.7, VadSensitivity.AGGRESSIVE: 0.5}


def silence_for(sensitivity: VadSensitivity | str | None) -> float | None:
    """The silence that ends a command at ``sensitivity`` (None: the client sends audio-stop)."""
    if sensitivity is None:
        return None
    try:
        return SILENCE[VadSensitivity(sensitivity)]
    except ValueError:
        raise InvalidRequest(
            f"vad_sensitivity must be one of {', '.join(s.value for s in VadSensitivity)}, not {sensitivity!r}"
        ) from None


class LiveTranscription:
    def __init__(
        self,
        manager: ModelManager,
        model: str,
        options: TranscriptionOptions,
        max_bytes: int,
        send: Callable[[Event], Awaitable[None]],
        silence: float | None = None,
    ):
        self._manager, self._model, self._options = manager, model, options
        self._max_bytes, self._send, self._silence = max_bytes, send, silence
        self._audio = bytearray()
        self._layout: tuple[int, int, int] | None = None  # rate, width, channels of the chunks
        self.over_limit = False  # the audio passed its bound: the rest of it is dropped unread
        self.heard_end = False  # the VAD heard the command end (with ``silence``)
        self._agreement = LocalAgreement()
        self._started = self._chunked = False  # transcript-start sent; a chunk sent
        self._partial: asyncio.Task | None = None
        self._partial_at = (time.monotonic(), 0)  # when the last partial decode started, and its audio's bytes

    def take(self, chunk: AudioChunk) -> None:
        """Add a chunk; start a partial decode if one is due."""
        if self.over_limit:  # said once already
            return
        layout = (chunk.rate, chunk.width, chunk.channels)
        if self._layout not in (None, layout):
            raise InvalidRequest(f"a chunk of {layout} (rate, width, channels) in a stream of {self._layout}")
        check_pcm(chunk.width, chunk.channels)
        check_rate(chunk.rate)
        if len(self._audio) + len(chunk.audio) > self._max_bytes:
            self._audio, self.over_limit = bytearray(), True
            self.abandon()
            raise InvalidRequest(f"the audio is longer than {self._max_bytes} bytes (max_upload_bytes)")
        self._layout = layout
        self._audio += chunk.audio
        if self._silence is not None and self._seconds(len(self._audio)) >= MAX_LIVE_SECONDS:
            self.heard_end = True  # heard or not, a command ends after one window: the client sends no audio-stop
        elif self._partial_due():
            self._partial_at = (time.monotonic(), len(self._audio))
            self._partial = asyncio.create_task(self._decode_partial(bytes(self._audio)))

    def _seconds(self, size: int) -> float:
        """How long ``size`` bytes of the chunks' audio last."""
        assert self._layout is not None
        rate, width, channels = self._layout
        return size / (rate * width * channels)

    def _partial_due(self) -> bool:
        if self._partial is not None and not self._partial.done():
            return False
        since, decoded = self._partial_at
        in_time = time.monotonic() - since >= STEP or self._silence is not None  # endpointing: always
        new, heard = self._seconds(len(self._audio) - decoded), self._seconds(len(self._audio))
        return in_time and new >= STEP and heard <= MAX_LIVE_SECONDS

    async def finish(self) -> None:
        """The final transcript, after the partial decode under way (its words shorten it)."""
        if self._partial is not None:
            await self._partial
        if not self._audio or self._layout is None:
            raise InvalidRequest("audio-stop without audio")
        transcript = await asyncio.to_thread(self._transcribe, self._samples(bytes(self._audio)), False)
        assert transcript is not None
        text, tail = self._agreement.final(transcript["text"])
        await self._commit(tail, last=True)
        await self._send(Transcript(text=text, language=transcript["language"]).event())
        await self._send(TranscriptStop().event())

    def abandon(self) -> None:
        """The client left: what the partial decode under way finds is not sent (the decode itself
        ends in its thread, and its lease with it)."""
        if self._partial is not None:
            self._partial.cancel()

    async def _decode_partial(self, pcm: bytes) -> None:
        try:
            transcript = await asyncio.to_thread(self._transcribe, self._samples(pcm), True)
        except (ServiceError, AudioError) as e:  # the final decode says what is wrong, if anything
            log.info("wyoming: a partial decode of %s failed: %s", self._model, e)
            return
        if transcript is None:  # the model was busy or not loaded: skipped
            return
        await self._commit(self._agreement.update(transcript["text"]))
        end = transcript["speech_end"]
        if self._silence is not None and end is not None and transcript["duration"] - end >= self._silence:
            self.heard_end = True

    def _transcribe(self, samples: np.ndarray, partial: bool) -> TranscriptResult | None:
        """(In a thread.) The transcript of ``samples`` after the committed words; None when a
        partial decode finds the model busy or not loaded."""
        options = dataclasses.replace(self._options, prefix=self._agreement.text or None, live=True)
        manager, model = self._manager, self._model
        with manager.idle_lease(model) if partial else manager.lease(model, reason="wyoming") as lease:
            return None if lease is None else result(lease.transcribe(samples, options, noted=not partial))

    def _samples(self, pcm: bytes) -> np.ndarray:
        assert self._layout is not None
        rate, width, channels = self._layout
        return to_model_rate(pcm_to_mono(pcm, width, channels), rate)

    async def _commit(self, words: list[str], last: bool = False) -> None:
        """Send newly committed words (the first chunk of a stream after ``transcript-start``;
        the chunks, joined, are the whole text)."""
        if not self._started and (words or last):
            await self._send(TranscriptStart(language=self._options.language).event())
            self._started = True
        if words:
            text = " ".join(words)
            await self._send(TranscriptChunk(text=f" {text}" if self._chunked else text).event())
            self._chunked = True
