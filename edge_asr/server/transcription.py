"""OpenAI's speech recognition endpoints under ``/v1``: transcriptions and translations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import numpy as np
from flask import Blueprint, Response, request

from edge_asr.choices import Task, transcription_options
from edge_asr.diarization.speakers import with_speakers
from edge_asr.errors import InvalidRequest, ServiceError
from edge_asr.formats import DIARIZED_FORMATS, MIME_TYPES, RESPONSE_FORMATS, render, usage
from edge_asr.lifecycle import Lease, result
from edge_asr.manifest import DEFAULT_MODELS
from edge_asr.server.bodies import uploaded_audio
from edge_asr.server.checks import flag, transcription_request
from edge_asr.server.current import manager
from edge_asr.server.diarization import diarize, speakers_asked
from edge_asr.server.sse import error_event, event, relay, stream_response, text_deltas
from edge_asr.settings import request_keep_alive
from edge_asr.workers.protocol import TranscriptionOptions

bp = Blueprint("transcription", __name__, url_prefix="/v1")


@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    """OpenAI's transcription endpoint. Requests for one model are served one at a time by its
    worker (the others wait their turn: queued, not batched)."""
    return _speech_to_text("transcribe")


@bp.post("/audio/translations")
def translations() -> Response:
    """OpenAI's translation endpoint: speech in any language the model knows, as English text. A
    ``language`` (the spoken one; an extension) skips the detection."""
    return _speech_to_text("translate")


def _speech_to_text(task: Task) -> Response:
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
    stream = flag(form, "stream")
    if stream and response_format not in ("json", "text"):
        raise InvalidRequest("stream=true sends text deltas; use response_format json or text with it")
    speakers = response_format == "diarized_json" or flag(form, "diarize")
    if speakers and (task != "transcribe" or response_format not in DIARIZED_FORMATS):
        raise InvalidRequest(f"speakers come with a transcription, as {', '.join(DIARIZED_FORMATS)}")
    options = transcription_options(manager(), spec, transcription_request(form), task)
    keep_alive = request_keep_alive(form.get("keep_alive"))

    with ExitStack() as holds:  # the audio's memory and the lease, handed to a stream if there is one
        audio = uploaded_audio(holds)
        if stream:
            lease = holds.enter_context(manager().lease(model_id, keep_alive))
            return stream_response(_sse(lease, audio, options), holds.pop_all())
        asked = speakers_asked(holds, "diarization_model") if speakers else None  # checked before any model works
        with manager().lease(model_id, keep_alive) as lease:  # given back before the diarization's
            if asked is not None:
                manager().prefetch([asked.model])  # loading meanwhile, where it fits beside
            transcript = result(lease.transcribe(audio, options))
        if asked is not None:
            found, labels = diarize(manager(), asked, audio, keep_alive)
            transcript["segments"] = with_speakers(transcript["segments"], found["turns"], labels)
    return Response(render(transcript, response_format, task), mimetype=MIME_TYPES[response_format])


def _sse(lease: Lease, audio: np.ndarray, options: TranscriptionOptions) -> Iterator[str]:
    """OpenAI's transcription stream: a ``transcript.text.delta`` per segment as each piece of the
    audio is decoded, then ``transcript.text.done`` with the whole text."""
    try:
        deltas = text_deltas()
        transcript = yield from relay(lease.transcribe(audio, options), lambda part: map(event, deltas(part)))
        yield event({"type": "transcript.text.done", "text": transcript["text"], "usage": usage(transcript)})
    except ServiceError as e:
        yield error_event(e)
