"""One handler per Wyoming connection, as wyoming-faster-whisper's ``dispatch_handler.py``: the
events of one client, in order, over the one ModelManager every protocol shares.

- ``describe`` → the unit's ``Info``;
- ``transcribe`` (model, language) then ``audio-start``, ``audio-chunk``*, ``audio-stop`` → the
  whole text as ``transcript``. The model starts loading at ``audio-start``, while the person
  speaks; the audio, at any rate, width and channel count, is converted as uploads are;
- ``synthesize`` (text, voice) → ``audio-start``, an ``audio-chunk`` per sentence as it is made,
  ``audio-stop``;
- ``transcript`` sent to the handle program (the conversation agent) → the LLM's answer as
  ``handled`` (``not-handled`` when it fails), with a short history per conversation id.

A request the unit cannot serve (an unknown model, a language the model cannot do, audio that is
not audio or too long) answers an ``error`` event {text, code}; the connection stays usable.
Model work runs in a thread (leases block); what it streams is written from the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize

from edge_asr.audio import AudioError, pcm_to_mono, to_model_rate
from edge_asr.choices import requested_voice, transcription_options
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import ModelManager, result
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.tts import MAX_INPUT_CHARS
from edge_asr.workers.protocol import ChatOptions
from edge_asr.wyoming.framing import read_event
from edge_asr.wyoming.info import unit_info

log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM_PROMPT = "You are a voice assistant on a device in a plant room. Answer in one or two short sentences."
HISTORY_TURNS = 8  # messages kept per conversation (the context is small)
CONVERSATIONS = 64  # conversations remembered; the oldest is forgotten first
ANSWER_TOKENS = 128


class Conversations:
    """The recent messages of each conversation Home Assistant names (``conversation_id`` in a
    transcript's context), shared by every connection; bounded in count and length."""

    def __init__(self) -> None:
        self._turns: OrderedDict[str, list[dict[str, str]]] = OrderedDict()

    def messages(self, conversation: str | None, text: str) -> list[dict[str, str]]:
        history = self._turns.get(conversation, []) if conversation else []
        return [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": text}]

    def remember(self, conversation: str | None, asked: str, answer: str) -> None:
        if not conversation:
            return
        turns = self._turns.pop(conversation, [])
        turns += [{"role": "user", "content": asked}, {"role": "assistant", "content": answer}]
        self._turns[conversation] = turns[-HISTORY_TURNS:]
        while len(self._turns) > CONVERSATIONS:
            self._turns.popitem(last=False)


class ConnectionHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        manager: ModelManager,
        conversations: Conversations,
        max_audio_bytes: int,
        timeout: float,
    ):
        super().__init__(reader, writer)
        self._manager, self._conversations, self._max_audio_bytes = manager, conversations, max_audio_bytes
        self._timeout = timeout
        self._model, self._options = DEFAULT_MODELS["asr"], None  # options: checked at transcribe
        self._audio: bytearray | None = None  # between audio-start and audio-stop
        self._format: tuple[int, int, int] | None = None  # rate, width, channels of the chunks
        self._over_limit = False  # the audio passed its bound: the rest of it is dropped unread
        self._loading: asyncio.Task | None = None  # held: the loop keeps only weak references

    async def run(self) -> None:
        """Events until the client leaves, or breaks the framing (``framing.ProtocolViolation``,
        for the server to log); then the connection is closed."""
        try:
            while (event := await read_event(self.reader, self._timeout)) is not None:
                await self.handle_event(event)
        finally:
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._dispatch(event)
        except (ServiceError, AudioError) as e:
            error = e if isinstance(e, ServiceError) else InvalidRequest(str(e))
            await self.write_event(Error(text=error.message, code=error.code).event())
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(unit_info(self._manager.specs()).event())
        elif Transcribe.is_type(event.type):
            self._start_transcription(Transcribe.from_event(event))
        elif AudioStart.is_type(event.type):
            self._audio, self._format, self._over_limit = bytearray(), None, False
            self._loading = asyncio.create_task(self._prefetch(self._model))
        elif AudioChunk.is_type(event.type):
            self._take(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._finish_transcription()
        elif Synthesize.is_type(event.type):
            await self._synthesize(Synthesize.from_event(event))
        elif Transcript.is_type(event.type):
            await self._answer(Transcript.from_event(event))
        else:
            log.debug("wyoming: ignored a %s event", event.type)

    # -- speech to text ------------------------------------------------------------------------

    def _start_transcription(self, transcribe: Transcribe) -> None:
        """Check the model and language now, before the audio arrives."""
        model = transcribe.name or DEFAULT_MODELS["asr"]
        spec = self._manager.spec(model)
        if spec.task != "asr":
            raise InvalidRequest(f"the model {model!r} is a {spec.task} model; it cannot transcribe audio")
        language = transcribe.language or None
        self._options = transcription_options(self._manager, spec, {"language": language} if language else {})
        self._model = model

    async def _prefetch(self, model: str) -> None:
        """Load the model while the person speaks; a failure is the transcription's to report."""
        try:
            await asyncio.to_thread(self._manager.load, model, "wyoming")
        except ServiceError as e:
            log.info("wyoming: %s did not load ahead of its audio: %s", model, e.message)

    def _take(self, chunk: AudioChunk) -> None:
        if self._over_limit:  # said once already
            return
        if self._audio is None:
            raise InvalidRequest("audio-chunk before audio-start")
        layout = (chunk.rate, chunk.width, chunk.channels)
        if self._format not in (None, layout):
            raise InvalidRequest(f"a chunk of {layout} (rate, width, channels) in a stream of {self._format}")
        if len(self._audio) + len(chunk.audio) > self._max_audio_bytes:
            self._audio, self._over_limit = None, True
            raise InvalidRequest(f"the audio is longer than {self._max_audio_bytes} bytes (max_upload_bytes)")
        self._format = layout
        self._audio += chunk.audio

    async def _finish_transcription(self) -> None:
        audio, layout, over_limit = self._audio, self._format, self._over_limit
        self._audio, self._format, self._over_limit = None, None, False
        if over_limit:  # its error was the answer
            return
        if audio is None or layout is None:
            raise InvalidRequest("audio-stop without audio")
        rate, width, channels = layout
        samples = to_model_rate(pcm_to_mono(bytes(audio), width, channels), rate)
        options = self._options or transcription_options(self._manager, self._manager.spec(self._model), {})

        def transcribe() -> dict[str, Any]:
            with self._manager.lease(self._model) as lease:
                return result(lease.transcribe(samples, options))

        transcript = await asyncio.to_thread(transcribe)
        await self.write_event(Transcript(text=transcript["text"], language=transcript["language"]).event())

    # -- text to speech ------------------------------------------------------------------------

    async def _synthesize(self, synthesize: Synthesize) -> None:
        text = synthesize.text.strip()
        if not text:
            raise InvalidRequest("synthesize needs text")
        voice = requested_voice(self._manager, synthesize.voice.name if synthesize.voice else None, None)

        def speak(emit: Callable[[Event], None]) -> None:
            with self._manager.lease(voice.model) as lease:
                emit(AudioStart(rate=voice.sample_rate, width=2, channels=1).event())
                for part in lease.synthesize(text[:MAX_INPUT_CHARS]):  # each sentence as it is made
                    emit(AudioChunk(rate=voice.sample_rate, width=2, channels=1, audio=part["audio"]).event())
            emit(AudioStop().event())

        await self._streamed(speak)

    # -- the conversation agent ----------------------------------------------------------------

    async def _answer(self, transcript: Transcript) -> None:
        conversation = (transcript.context or {}).get("conversation_id")
        messages = self._conversations.messages(conversation, transcript.text)

        def chat() -> str:
            with self._manager.lease(DEFAULT_MODELS["llm"]) as lease:
                return result(lease.chat(messages, ChatOptions(max_tokens=ANSWER_TOKENS, temperature=0.0)))["text"]

        try:
            answer = (await asyncio.to_thread(chat)).strip()
        except ServiceError as e:
            await self.write_event(NotHandled(text=e.message, context=transcript.context).event())
            return
        self._conversations.remember(conversation, transcript.text, answer)
        await self.write_event(Handled(text=answer, context=transcript.context).event())

    async def _streamed(self, work: Callable[[Callable[[Event], None]], T]) -> T:
        """Run ``work`` in a thread; each event it emits is written from this loop, in order,
        before ``work`` goes on (a slow client slows the work, it does not fill memory)."""
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            asyncio.run_coroutine_threadsafe(self.write_event(event), loop).result()

        return await asyncio.to_thread(work, emit)
