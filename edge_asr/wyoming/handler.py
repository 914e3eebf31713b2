"""One handler per Wyoming connection, as wyoming-faster-whisper's ``dispatch_handler.py``: the
events of one client, in order, over the one ModelManager every protocol shares.

- ``describe`` → the unit's ``Info``;
- ``transcribe`` (model, language, vad_sensitivity) then ``audio-start``, ``audio-chunk``*,
  ``audio-stop`` → ``transcript-start``, ``transcript-chunk``* as the words are agreed on while
  the audio arrives, the whole text as ``transcript``, ``transcript-stop``
  (``transcription.LiveTranscription``). The model starts loading at ``audio-start``, while the
  person speaks; the audio, at any rate, width and channel count, is converted as uploads are;
- ``synthesize`` (text, voice) → ``audio-start``, an ``audio-chunk`` per sentence as it is made,
  ``audio-stop``; ``synthesize-start``, ``synthesize-chunk``*, ``synthesize-stop`` (text as an
  LLM writes it) → the audio of each sentence as soon as it is complete, then
  ``synthesize-stopped`` (a ``synthesize`` inside such a stream is its copy for older servers:
  ignored, as wyoming-piper does);
- ``transcript`` sent to the handle program (the conversation agent) → the LLM's answer as
  ``handled`` (``not-handled`` when it fails), with a short history per conversation id.

A request the unit cannot serve (an unknown model, a language the model cannot do, audio that is
not audio or too long) answers an ``error`` event {text, code}; the connection stays usable.
Model work runs in a thread (leases block); what it streams is written from the event loop. A
model a Wyoming request loads says so in the lifecycle events ("wyoming"); each answered event is
timed in ``edge_asr_request_duration_seconds`` as endpoint ``wyoming <event type>``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Histogram
from sentence_stream import SentenceBoundaryDetector
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled, NotHandled
from wyoming.info import Describe
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from edge_asr.audio import AudioError
from edge_asr.choices import requested_voice, transcription_options
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import ModelManager, result
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.tts import MAX_INPUT_CHARS, Voice
from edge_asr.workers.protocol import ChatOptions, TranscriptionOptions
from edge_asr.wyoming.framing import read_event
from edge_asr.wyoming.info import unit_info
from edge_asr.wyoming.transcription import LiveTranscription, silence_for

log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM_PROMPT = "You are a voice assistant on a device in a plant room. Answer in one or two short sentences."
HISTORY_TURNS = 8  # messages kept per conversation (the context is small)
CONVERSATIONS = 64  # conversations remembered; the oldest is forgotten first
ANSWER_TOKENS = 128
TIMED = frozenset({"describe", "audio-stop", "synthesize", "synthesize-chunk", "synthesize-stop", "transcript"})


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
        timings: Histogram | None = None,
    ):
        super().__init__(reader, writer)
        self._manager, self._conversations, self._max_audio_bytes = manager, conversations, max_audio_bytes
        self._timeout, self._timings = timeout, timings
        self._model, self._options = DEFAULT_MODELS["asr"], None  # options: checked at transcribe
        self._silence: float | None = None  # seconds that end a command (vad_sensitivity), or None
        self._live: LiveTranscription | None = None  # between audio-start and the command's end
        self._ended = False  # the VAD ended the command: its audio is dropped until audio-stop
        self._loading: asyncio.Task | None = None  # held: the loop keeps only weak references
        self._in_text_stream = False  # between synthesize-start and synthesize-stop
        self._text_stream: tuple[Voice, SentenceBoundaryDetector] | None = None  # its voice and sentences
        self._speaking = False  # audio-start sent in a text stream

    async def run(self) -> None:
        """Events until the client leaves, or breaks the framing (``framing.ProtocolViolation``,
        for the server to log); then the connection is closed."""
        try:
            while (event := await read_event(self.reader, self._timeout)) is not None:
                await self.handle_event(event)
        finally:
            if self._live is not None:
                self._live.abandon()
            await self.disconnect()
            self.writer.close()

    async def handle_event(self, event: Event) -> bool:
        started, status = time.perf_counter(), "ok"
        try:
            await self._dispatch(event)
        except (ServiceError, AudioError) as e:
            error = e if isinstance(e, ServiceError) else InvalidRequest(str(e))
            status = error.code
            await self.write_event(Error(text=error.message, code=error.code).event())
        if self._timings is not None and event.type in TIMED:
            self._timings.labels(f"wyoming {event.type}", status).observe(time.perf_counter() - started)
        return True

    async def _dispatch(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(unit_info(self._manager.specs()).event())
        elif Transcribe.is_type(event.type):
            self._start_transcription(Transcribe.from_event(event))
        elif AudioStart.is_type(event.type):
            self._start_audio()
        elif AudioChunk.is_type(event.type):
            await self._take(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._stop_audio()
        elif SynthesizeStart.is_type(event.type):
            self._start_text_stream(SynthesizeStart.from_event(event))
        elif SynthesizeChunk.is_type(event.type):
            await self._stream_text(SynthesizeChunk.from_event(event).text)
        elif SynthesizeStop.is_type(event.type):
            await self._stop_text_stream()
        elif Synthesize.is_type(event.type):
            if not self._in_text_stream:  # inside a stream: its copy for older servers
                await self._synthesize(Synthesize.from_event(event))
        elif Transcript.is_type(event.type):
            await self._answer(Transcript.from_event(event))
        else:
            log.debug("wyoming: ignored a %s event", event.type)

    # -- speech to text ------------------------------------------------------------------------

    def _start_transcription(self, transcribe: Transcribe) -> None:
        """Check the model, language and VAD sensitivity now, before the audio arrives."""
        model = transcribe.name or DEFAULT_MODELS["asr"]
        spec = self._manager.spec(model)
        if spec.task != "asr":
            raise InvalidRequest(f"the model {model!r} is a {spec.task} model; it cannot transcribe audio")
        language = transcribe.language or None
        self._silence = silence_for(transcribe.vad_sensitivity)
        self._options = transcription_options(self._manager, spec, {"language": language} if language else {})
        self._model = model

    def _start_audio(self) -> None:
        options = self._options or self._default_options()
        if self._live is not None:  # a command left without its audio-stop: what it decodes is not sent
            self._live.abandon()
        send = self.write_event
        self._live = LiveTranscription(self._manager, self._model, options, self._max_audio_bytes, send, self._silence)
        self._ended = False
        self._loading = asyncio.create_task(self._prefetch(self._model))

    def _default_options(self) -> TranscriptionOptions:
        return transcription_options(self._manager, self._manager.spec(self._model), {})

    async def _prefetch(self, model: str) -> None:
        """Load the model while the person speaks; a failure is the transcription's to report."""
        try:
            await asyncio.to_thread(self._manager.load, model, "wyoming")
        except ServiceError as e:
            log.info("wyoming: %s did not load ahead of its audio: %s", model, e.message)

    async def _take(self, chunk: AudioChunk) -> None:
        if self._ended:
            return
        if self._live is None:
            raise InvalidRequest("audio-chunk before audio-start")
        self._live.take(chunk)
        if self._live.heard_end:  # the command ended (the VAD heard it): answer now, once
            live, self._live, self._ended = self._live, None, True
            await live.finish()

    async def _stop_audio(self) -> None:
        live, self._live = self._live, None
        if self._ended:  # answered when the command ended
            self._ended = False
            return
        if live is None:
            raise InvalidRequest("audio-stop without audio")
        if not live.over_limit:  # else its error was the answer
            await live.finish()

    # -- text to speech ------------------------------------------------------------------------

    def _voice(self, name: str | None) -> Voice:
        return requested_voice(self._manager, name, None)

    async def _synthesize(self, synthesize: Synthesize) -> None:
        text = synthesize.text.strip()
        if not text:
            raise InvalidRequest("synthesize needs text")
        voice = self._voice(synthesize.voice.name if synthesize.voice else None)
        await self._speak(voice, text[:MAX_INPUT_CHARS], start=True)
        await self.write_event(AudioStop().event())

    def _start_text_stream(self, start: SynthesizeStart) -> None:
        self._text_stream, self._speaking = None, False
        self._in_text_stream = True  # from here the stream's events are its own, even if its voice is refused
        self._text_stream = (self._voice(start.voice.name if start.voice else None), SentenceBoundaryDetector())

    async def _stream_text(self, text: str) -> None:
        if not self._in_text_stream:
            raise InvalidRequest("synthesize-chunk before synthesize-start")
        if self._text_stream is None:  # its voice was refused at synthesize-start: said then
            return
        voice, sentences = self._text_stream
        for sentence in sentences.add_chunk(text):
            await self._speak_streamed(voice, sentence)

    async def _stop_text_stream(self) -> None:
        if not self._in_text_stream:
            raise InvalidRequest("synthesize-stop before synthesize-start")
        stream, self._text_stream, self._in_text_stream = self._text_stream, None, False
        try:
            if stream is not None:
                voice, sentences = stream
                await self._speak_streamed(voice, sentences.finish())
        finally:  # the client waits for these, whatever failed
            if self._speaking:
                await self.write_event(AudioStop().event())
            await self.write_event(SynthesizeStopped().event())

    async def _speak_streamed(self, voice: Voice, sentence: str) -> None:
        if sentence.strip():
            start, self._speaking = not self._speaking, True  # audio-start goes out once
            await self._speak(voice, sentence.strip()[:MAX_INPUT_CHARS], start=start)

    async def _speak(self, voice: Voice, text: str, start: bool) -> None:
        """``text`` in ``voice``: an ``audio-chunk`` per sentence as it is made (after
        ``audio-start`` when ``start``)."""

        def speak(emit: Callable[[Event], None]) -> None:
            with self._manager.lease(voice.model, reason="wyoming") as lease:
                if start:
                    emit(AudioStart(rate=voice.sample_rate, width=2, channels=1).event())
                for part in lease.synthesize(text):  # each sentence as it is made
                    emit(AudioChunk(rate=voice.sample_rate, width=2, channels=1, audio=part["audio"]).event())

        await self._streamed(speak)

    # -- the conversation agent ----------------------------------------------------------------

    async def _answer(self, transcript: Transcript) -> None:
        conversation = (transcript.context or {}).get("conversation_id")
        messages = self._conversations.messages(conversation, transcript.text)

        def chat() -> str:
            with self._manager.lease(DEFAULT_MODELS["llm"], reason="wyoming") as lease:
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
