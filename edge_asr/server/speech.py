"""OpenAI's ``POST /v1/audio/speech`` on the manifest's Piper voices, and ``GET /v1/audio/voices``.

``wav`` and ``pcm`` answers are streamed sentence by sentence, so the first audio arrives before
the whole text is spoken (the WAV header says "length unknown", as streaming recorders write);
``flac``, ``mp3`` and ``opus`` are encoded once the text is spoken. ``stream_format=sse`` sends
OpenAI's ``speech.audio.delta`` events (base64 16-bit PCM) and ``speech.audio.done`` instead.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify

from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.lifecycle import Lease
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.server.bodies import json_body
from edge_asr.server.current import manager
from edge_asr.server.sse import error_event, event, relay, stream_response
from edge_asr.settings import request_keep_alive
from edge_asr.speech import (
    FORMATS,
    MAX_INPUT_CHARS,
    MIME_TYPES,
    SPEEDS,
    STREAMED,
    Voice,
    encode,
    streaming_wav_header,
    voice_of,
)

bp = Blueprint("speech", __name__, url_prefix="/v1")


@bp.get("/audio/voices")
def list_voices() -> Response:
    specs = [s for s in manager().specs() if s.task == "tts" and s.present]
    return jsonify({"voices": [voice_of(s).as_dict() for s in specs]})


def requested_voice(model_id: Any, voice: Any) -> Voice:
    """The voice a request names (its TTS model, default ``piper-joe-en``), checked before any
    model loads: another task's model, or a voice the model does not have, is a 400."""
    model_id = model_id or DEFAULT_MODELS["tts"]
    if not isinstance(model_id, str):
        raise InvalidRequest("model must be a string")
    spec = manager().spec(model_id)
    if spec.task != "tts":
        raise InvalidRequest(f"the model {model_id!r} is a {spec.task} model; it cannot speak")
    named = voice_of(spec)
    if voice not in (None, "", named.id):
        raise InvalidRequest(f"the model {model_id!r} has the voice {named.id!r} only, not {voice!r}")
    return named


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
    voice = requested_voice(body.get("model"), body.get("voice"))
    request = synthesis_request(body)
    keep_alive = request_keep_alive(body.get("keep_alive"))
    options = {"text": request["text"], "speed": request["speed"]}
    fmt = request["response_format"]
    with ExitStack() as holds:
        lease = holds.enter_context(manager().lease(voice.model, keep_alive))
        if request["sse"]:
            return stream_response(_sse(lease, options), holds.pop_all())
        if fmt in STREAMED:
            header = streaming_wav_header(voice.sample_rate) if fmt == "wav" else b""
            chunks = _audio(lease, options, header)
            response = stream_response(chunks, holds.pop_all())
            response.mimetype = MIME_TYPES[fmt]
            return response
        parts: list[bytes] = []
        spoken = _collect(lease.stream("speak", **options), parts)
    samples = np.frombuffer(b"".join(parts), "<i2")
    return Response(encode(samples, spoken["sample_rate"], fmt), mimetype=MIME_TYPES[fmt])


def _collect(stream: Iterator[dict[str, Any]], parts: list[bytes]) -> dict[str, Any]:
    """Run a ``speak`` stream to its end, collecting its audio; its result."""
    while True:
        try:
            parts.append(next(stream)["audio"])
        except StopIteration as done:
            return done.value


def _audio(lease: Lease, options: dict[str, Any], header: bytes) -> Iterator[bytes]:
    """The header, then each sentence's samples as the worker sends them. An error after the
    first byte can only end the stream early (the status line is gone)."""
    yield header
    try:
        yield from relay(lease.stream("speak", **options), lambda part: [part["audio"]])
    except ServiceError:
        return


def _sse(lease: Lease, options: dict[str, Any]) -> Iterator[str]:
    """OpenAI's speech events: ``speech.audio.delta`` (base64 PCM) per sentence, then ``done``."""

    def delta(part: dict[str, bytes]) -> list[str]:
        return [event({"type": "speech.audio.delta", "audio": base64.b64encode(part["audio"]).decode()})]

    try:
        spoken = yield from relay(lease.stream("speak", **options), delta)
        yield event({"type": "speech.audio.done", "sample_rate": spoken["sample_rate"], "samples": spoken["samples"]})
    except ServiceError as e:
        yield error_event(e)
