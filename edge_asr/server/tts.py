"""Text-to-speech: OpenAI's ``POST /v1/audio/speech`` on the manifest's Piper voices, and
``GET /v1/audio/voices``.

``wav`` and ``pcm`` answers are streamed sentence by sentence, so the first audio arrives before
the whole text is spoken (the WAV header says "length unknown", as streaming recorders write);
``flac``, ``mp3`` and ``opus`` are encoded once the text is spoken. ``stream_format=sse`` sends
OpenAI's ``speech.audio.delta`` events (base64 16-bit PCM) and ``speech.audio.done`` instead.
"""

from __future__ import annotations

import base64
from collections.abc import Generator, Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify

from edge_asr.choices import requested_voice
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.server.bodies import json_body
from edge_asr.server.current import manager
from edge_asr.server.sse import error_event, event, relay, stream_response
from edge_asr.settings import request_keep_alive
from edge_asr.tts import (
    FORMATS,
    MAX_INPUT_CHARS,
    MIME_TYPES,
    SPEEDS,
    STREAMED,
    encode,
    streaming_wav_header,
    voice_of,
)
from edge_asr.workers.protocol import AudioPart, SynthesisResult

bp = Blueprint("tts", __name__, url_prefix="/v1")


@bp.get("/audio/voices")
def list_voices() -> Response:
    specs = [s for s in manager().specs() if s.task == "tts" and s.present]
    return jsonify({"voices": [voice_of(s).as_dict() for s in specs]})


def synthesis_request(body: dict[str, Any]) -> dict[str, Any]:
    """The request's text and options, checked before any model loads."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("input must be a non-empty string (the text to speak)")
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidRequest(f"input is {len(text)} characters; at most {MAX_INPUT_CHARS}")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not SPEEDS[0] <= speed <= SPEEDS[1]:
        raise InvalidRequest(f"speed must be a number from {SPEEDS[0]} to {SPEEDS[1]}, not {speed!r}")
    response_format = body.get("response_format", "wav")
    if response_format not in FORMATS:
        raise InvalidRequest(f"response_format must be one of {', '.join(FORMATS)}, not {response_format!r}")
    stream_format = body.get("stream_format", "audio")
    if stream_format not in ("audio", "sse"):
        raise InvalidRequest(f"stream_format must be audio or sse, not {stream_format!r}")
    return {"text": text, "speed": float(speed), "response_format": response_format, "sse": stream_format == "sse"}


@bp.post("/audio/speech")
def speech() -> Response:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    voice = requested_voice(manager(), body.get("model"), body.get("voice"))
    request = synthesis_request(body)
    keep_alive = request_keep_alive(body.get("keep_alive"))
    fmt = request["response_format"]
    with ExitStack() as holds:
        lease = holds.enter_context(manager().lease(voice.model, keep_alive))
        spoken = lease.synthesize(request["text"], request["speed"])
        if request["sse"]:
            return stream_response(_sse(spoken), holds.pop_all())
        if fmt in STREAMED:
            header = streaming_wav_header(voice.sample_rate) if fmt == "wav" else b""
            response = stream_response(_audio(spoken, header), holds.pop_all())
            response.mimetype = MIME_TYPES[fmt]
            return response
        parts: list[bytes] = []
        done = _collect(spoken, parts)
    samples = np.frombuffer(b"".join(parts), "<i2")
    return Response(encode(samples, done["sample_rate"], fmt), mimetype=MIME_TYPES[fmt])


Spoken = Generator[AudioPart, None, SynthesisResult]


def _collect(spoken: Spoken, parts: list[bytes]) -> SynthesisResult:
    """Run a synthesis to its end, collecting its audio; its result."""
    while True:
        try:
            parts.append(next(spoken)["audio"])
        except StopIteration as done:
            return done.value


def _audio(spoken: Spoken, header: bytes) -> Iterator[bytes]:
    """The header, then each sentence's samples as the worker sends them. An error after the
    first byte can only end the stream early (the status line is gone)."""
    yield header
    try:
        yield from relay(spoken, lambda part: [part["audio"]])
    except ServiceError:
        return


def _sse(spoken: Spoken) -> Iterator[str]:
    """OpenAI's speech events: ``speech.audio.delta`` (base64 PCM) per sentence, then ``done``."""

    def delta(part: AudioPart) -> list[str]:
        return [event({"type": "speech.audio.delta", "audio": base64.b64encode(part["audio"]).decode()})]

    try:
        done = yield from relay(spoken, delta)
        yield event({"type": "speech.audio.done", "sample_rate": done["sample_rate"], "samples": done["samples"]})
    except ServiceError as e:
        yield error_event(e)
