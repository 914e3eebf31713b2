"""Request inputs, read within bounds: the uploaded audio (decoded only once the front process's
audio budget has room for it), JSON bodies (capped in size and depth) and query arguments in
seconds. Bad ones are a 4xx."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import numpy as np
from flask import request

from edge_asr.audio import AudioError, decode_audio, decoding_peak_bytes
from edge_asr.errors import InvalidRequest, PayloadTooLarge
from edge_asr.server.current import audio_budget, config


def uploaded_audio(holds: ExitStack) -> np.ndarray:
    """The multipart field ``file`` decoded to 16 kHz mono float32. The upload stays where the
    server spooled it (on disk past 500 kB) and is decoded straight from there, once ``holds``
    holds its share of ``request_memory_budget`` (released when ``holds`` closes: the audio lives
    until the request's worker call ends)."""
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequest("the multipart field 'file' (the audio) is missing")
    name = (upload.filename or "file")[:100]
    try:
        holds.enter_context(audio_budget().hold(decoding_peak_bytes(upload.stream)))
        return decode_audio(upload.stream)
    except AudioError as e:
        raise InvalidRequest(f"{name}: {e}") from None


def json_body() -> Any:
    """The request's JSON, at most ``max_json_bytes``; a body too deeply nested to parse is a 400."""
    limit = config().max_json_bytes
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"the JSON body is larger than the limit of {limit} bytes")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the JSON body is larger than the limit of {limit} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise InvalidRequest(f"the body must be a JSON object; it is not valid JSON ({reason})") from None


def seconds_arg(name: str) -> float | None:
    """The query argument ``?name=`` as a non-negative number of seconds (a time or a wait), or
    None when absent."""
    value = request.args.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise InvalidRequest(f"?{name}= must be a number of seconds, not {value!r}") from None
    if number < 0:
        raise InvalidRequest(f"?{name}= must not be negative")
    return number
