"""OpenAI-compatible endpoints under ``/v1``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from flask import Blueprint, Response, jsonify, request

from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.formats import MIME_TYPES, RESPONSE_FORMATS, render
from edge_asr.lifecycle import Lease
from edge_asr.manifest import DEFAULT_MODELS, ModelSpec
from edge_asr.server.bodies import uploaded_audio
from edge_asr.server.current import manager
from edge_asr.server.sse import error_event, event, relay, stream_response
from edge_asr.settings import MAX_BEAM, VALIDATORS, beam_size, check_speech, request_keep_alive

bp = Blueprint("openai_api", __name__, url_prefix="/v1")
TRUE = ("true", "1", "yes")


@bp.get("/models")
def list_models() -> Response:
    return jsonify(
        {
            "object": "list",
            "data": [
                {"id": s.id, "object": "model", "created": 0, "owned_by": "edge-asr", "task": s.task}
                for s in manager().specs()
            ],
        }
    )


def _temperature(form: Any) -> float:
    raw = form.get("temperature", "0")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"temperature must be a number between 0 and 1, not {raw!r}") from None
    if not 0 <= value <= 1:
        raise InvalidRequest(f"temperature must be between 0 and 1, not {value}")
    return value


def speech_request(form: Any) -> dict[str, Any]:
    """A transcription's own options from its form (checked before any model loads): ``language``,
    ``prompt``, ``temperature``, and ``beam_size`` (an extension of OpenAI's API)."""
    requested: dict[str, Any] = {}
    for key in ("language", "prompt"):
        if form.get(key):
            try:
                requested[key] = VALIDATORS[key](form[key])
            except ValueError as e:
                raise InvalidRequest(f"{key} {e}") from None
    requested["temperature"] = _temperature(form)
    if form.get("beam_size"):
        raw = form["beam_size"]
        try:
            requested["beam_size"] = beam_size(int(raw))
        except ValueError:
            raise InvalidRequest(f"beam_size must be an integer from 1 to {MAX_BEAM}, not {raw!r}") from None
    return requested


def speech_options(spec: ModelSpec, requested: dict[str, Any], task: str = "transcribe") -> dict[str, Any]:
    """What the worker's ``transcribe`` takes: the request's options, else the model's settings;
    a language or task the model cannot do is refused here, before it loads."""
    settings = manager().settings(spec.id)
    options = {
        "language": requested.get("language") or settings.get("language"),
        "task": task,
        "prompt": requested.get("prompt") or settings.get("prompt"),
        "temperature": requested.get("temperature", 0.0),
        "beam_size": requested.get("beam_size") or settings["beam_size"],
        "condition_on_previous_text": settings["condition_on_previous_text"],
    }
    check_speech(spec, options["language"], task)
    return options


def detected(lease: Lease, transcript: dict[str, Any]) -> dict[str, Any]:
    """The transcript, its detected language (if it was detected) noted in the model's events."""
    if transcript["language_probability"] is not None:
        lease.note("language detected", language=transcript["language"], probability=transcript["language_probability"])
    return transcript


@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    """OpenAI's transcription endpoint. Requests for one model are served one at a time by its
    worker, in arrival order (each waits for the previous: queued, not batched)."""
    return _speech_to_text("transcribe")


@bp.post("/audio/translations")
def translations() -> Response:
    """OpenAI's translation endpoint: speech in any language the model knows, as English text. A
    ``language`` (the spoken one; an extension) skips the detection."""
    return _speech_to_text("translate")


def _speech_to_text(task: str) -> Response:
    form = request.form
    model_id = form.get("model") or DEFAULT_MODELS["asr"]
    spec = manager().spec(model_id)
    if spec.task != "asr":
        raise InvalidRequest(f"the model {model_id!r} is a {spec.task} model; it cannot transcribe audio")
    response_format = form.get("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}")
    granularities = form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
    if set(granularities) - {"segment"}:
        raise InvalidRequest("timestamp_granularities supports 'segment' only (no word timestamps)")
    stream = form.get("stream", "false").lower() in TRUE
    if stream and response_format not in ("json", "text"):
        raise InvalidRequest("stream=true sends text deltas; use response_format json or text with it")
    options = speech_options(spec, speech_request(form), task)
    keep_alive = request_keep_alive(form.get("keep_alive"))

    with ExitStack() as holds:  # the audio's memory and the lease, handed to a stream if there is one
        audio = uploaded_audio(holds)
        lease = holds.enter_context(manager().lease(model_id, keep_alive))
        if stream:
            return stream_response(_sse(lease, {"audio": audio, **options}), holds.pop_all())
        transcript = detected(lease, lease.call("transcribe", audio=audio, **options))
    return Response(render(transcript, response_format, task), mimetype=MIME_TYPES[response_format])


def _sse(lease: Lease, options: dict[str, Any]) -> Iterator[str]:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per segment as each piece of the
    audio is decoded, then ``transcript.text.done`` with the whole text."""
    try:
        deltas = text_deltas()
        transcript = yield from relay(lease.stream("transcribe", **options), lambda part: map(event, deltas(part)))
        detected(lease, transcript)
        usage = {"type": "duration", "seconds": round(transcript["duration"] + 0.5)}
        yield event({"type": "transcript.text.done", "text": transcript["text"], "usage": usage})
    except ServiceError as e:
        yield error_event(e)


def text_deltas() -> Callable[[dict[str, Any]], Iterator[dict[str, str]]]:
    """Turns a transcription's partial results into ``transcript.text.delta`` events, the segments
    separated by a space as in the whole text."""
    first = True

    def deltas(part: dict[str, Any]) -> Iterator[dict[str, str]]:
        nonlocal first
        for segment in part["segments"]:
            yield {"type": "transcript.text.delta", "delta": ("" if first else " ") + segment["text"]}
            first = False

    return deltas
