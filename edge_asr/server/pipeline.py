"""``POST /api/pipeline``: audio in, transcript and the LLM's work on it out, and with
``speak=true`` that work spoken by a voice.

The steps take their models in turn through the manager: once Whisper is leased, the LLM and the
voice are prefetched (``ModelManager.prefetch``: loaded meanwhile where they fit beside it); when
they do not fit together (the memory reserve or budget), admission unloads the idle model of the
step before the next loads, and the reply lists the lifecycle events the request caused. With
``stream=true`` the same steps arrive as server-sent events while they happen:

    {"type": "pipeline.stage", "stage": "transcribing", "model": ...}
    {"type": "transcript.text.delta", "delta": ...}          one per segment
    {"type": "pipeline.stage", "stage": "diarizing", "model": ...}   with diarize=true
    {"type": "pipeline.stage", "stage": "swapping", "model": ...}    when the next model must load
    {"type": "pipeline.stage", "stage": "generating", "model": ...}
    {"type": "output.text.delta", "delta": ...}              as tokens are generated
    {"type": "pipeline.stage", "stage": "speaking", "model": ...}    with speak=true
    {"type": "output.audio.delta", "delta": <base64 16-bit PCM>}     a sentence at a time
    {"type": "pipeline.done", ...the JSON reply without stream}
"""

from __future__ import annotations

import base64
import time
from collections.abc import Generator, Iterator
from contextlib import ExitStack, closing
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from edge_asr.choices import requested_voice, transcription_options
from edge_asr.diarization.speakers import who_said_what, with_speakers
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import ModelManager
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.server.bodies import uploaded_audio
from edge_asr.server.checks import flag, transcription_request
from edge_asr.server.current import manager
from edge_asr.server.diarization import SpeakersAsked, diarize, speakers_asked
from edge_asr.server.sse import error_event, event, relay, stream_response, text_deltas
from edge_asr.settings import request_keep_alive
from edge_asr.tts import MAX_INPUT_CHARS, Voice, encode
from edge_asr.workers.protocol import AudioPart, ChatOptions, TranscriptionOptions

bp = Blueprint("pipeline", __name__)
DEFAULTS = {
    "asr_model": DEFAULT_MODELS["asr"],
    "llm_model": DEFAULT_MODELS["llm"],
    "instruction": "Summarize the following transcript in a few sentences.",
}


@bp.post("/api/pipeline")
def pipeline() -> Response:
    form = {key: request.form.get(key) or default for key, default in DEFAULTS.items()}
    for key, task in (("asr_model", "asr"), ("llm_model", "llm")):
        if manager().spec(form[key]).task != task:
            raise InvalidRequest(f"{key} must name a {task} model; {form[key]!r} is not one")
    try:
        max_tokens = int(request.form.get("max_tokens", "256"))
    except ValueError:
        raise InvalidRequest("max_tokens must be an integer") from None
    if max_tokens < 1:
        raise InvalidRequest(f"max_tokens must be a positive integer, not {max_tokens}")
    speak = flag(request.form, "speak")
    options = {
        **form,
        "max_tokens": max_tokens,
        "transcription": transcription_options(
            manager(), manager().spec(form["asr_model"]), transcription_request(request.form)
        ),
        "voice": requested_voice(manager(), request.form.get("tts_model"), request.form.get("voice"))
        if speak
        else None,
        "keep_alive": request_keep_alive(request.form.get("keep_alive")),  # for every model
    }
    with ExitStack() as holds:
        audio = uploaded_audio(holds)
        options["speakers"] = speakers_asked(holds, "diarization_model") if flag(request.form, "diarize") else None
        steps = _steps(manager(), audio, **options)
        if flag(request.form, "stream"):
            return stream_response(_sse(steps), holds.pop_all())
        *_, done = steps
    return jsonify({k: v for k, v in done.items() if k != "type"})


def _sse(steps: Generator[dict[str, Any], None, None]) -> Iterator[str]:
    """The steps as events; a client that leaves closes the steps, and with them their lease."""
    with closing(steps):
        try:
            for step in steps:
                yield event(step)
        except ServiceError as e:
            yield error_event(e)


def _steps(
    manager: ModelManager,
    audio: np.ndarray,
    asr_model: str,
    llm_model: str,
    instruction: str,
    max_tokens: int,
    transcription: TranscriptionOptions,
    voice: Voice | None,
    keep_alive: float | None,
    speakers: SpeakersAsked | None,
) -> Generator[dict[str, Any], None, None]:
    """The pipeline as it happens: progress events, the last one ``pipeline.done`` with the whole
    result. With ``speakers``, the LLM reads the transcript as lines of who said what."""
    since, start = time.time(), time.monotonic()
    yield {"type": "pipeline.stage", "stage": "transcribing", "model": asr_model}
    with manager.lease(asr_model, keep_alive) as lease:
        following = [*([speakers.model] if speakers else []), llm_model, *([voice.model] if voice else [])]
        manager.prefetch(following)  # where they fit: loading meanwhile
        transcript = yield from relay(lease.transcribe(audio, transcription), text_deltas())
    text, said, heard = transcript["text"], {}, time.monotonic()
    if speakers is not None:
        yield {"type": "pipeline.stage", "stage": "diarizing", "model": speakers.model}
        found, labels = diarize(manager, speakers, audio, keep_alive)
        segments = with_speakers(transcript["segments"], found["turns"], labels)
        said = {"segments": [{k: s[k] for k in ("start", "end", "text", "speaker")} for s in segments]}
        text = who_said_what(segments)
    transcribed = time.monotonic()
    if manager.status(llm_model)["state"] != "ready":
        yield {"type": "pipeline.stage", "stage": "swapping", "model": llm_model}
    messages = [{"role": "system", "content": instruction}, {"role": "user", "content": text}]
    with manager.lease(llm_model, keep_alive) as lease:
        loaded = time.monotonic()
        yield {"type": "pipeline.stage", "stage": "generating", "model": llm_model}
        chat = lease.chat(messages, ChatOptions(max_tokens=max_tokens, temperature=0.0))
        answer = yield from relay(chat, lambda part: [{"type": "output.text.delta", "delta": part["delta"]}])
    done = time.monotonic()
    timings = {
        "transcribe_s": round(heard - start, 3),
        **({"diarize_s": round(transcribed - heard, 3)} if speakers is not None else {}),
        "swap_s": round(loaded - transcribed, 3),
        "generate_s": round(done - loaded, 3),
    }
    spoken = None
    if voice is not None:
        spoken = yield from _speak(manager, voice, answer["text"], keep_alive, timings)
    yield {
        "type": "pipeline.done",
        "transcript": {k: transcript[k] for k in ("text", "duration", "language", "language_probability")} | said,
        "output": answer["text"],
        "finish_reason": answer["finish_reason"],
        **({"audio": spoken} if spoken is not None else {}),
        "timings": timings,
        "events": manager.recent_events(since),
    }


def _speak(
    manager: ModelManager, voice: Voice, text: str, keep_alive: float | None, timings: dict[str, float]
) -> Generator[dict[str, Any], None, dict[str, Any]]:
    """The LLM's text spoken (its first 4096 characters, as /v1/audio/speech takes): audio deltas
    as each sentence is made; returns the whole as a base64 WAV. Adds its swap and speak times."""
    start = time.monotonic()
    if manager.status(voice.model)["state"] != "ready":
        yield {"type": "pipeline.stage", "stage": "swapping", "model": voice.model}
    parts: list[bytes] = []

    def delta(part: AudioPart) -> list[dict[str, str]]:
        parts.append(part["audio"])
        return [{"type": "output.audio.delta", "delta": base64.b64encode(part["audio"]).decode()}]

    with manager.lease(voice.model, keep_alive) as lease:
        loaded = time.monotonic()
        yield {"type": "pipeline.stage", "stage": "speaking", "model": voice.model}
        spoken = yield from relay(lease.synthesize(text[:MAX_INPUT_CHARS] or " "), delta)
    timings |= {"speech_swap_s": round(loaded - start, 3), "speak_s": round(time.monotonic() - loaded, 3)}
    wav = encode(np.frombuffer(b"".join(parts), "<i2"), spoken["sample_rate"], "wav")
    return {"format": "wav", "sample_rate": spoken["sample_rate"], "data": base64.b64encode(wav).decode()}
