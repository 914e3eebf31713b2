"""OpenAI-compatible endpoints under ``/v1``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from edge_asr.audio import AudioError, decode_audio
from edge_asr.errors import InvalidRequest
from edge_asr.manager import ModelManager

bp = Blueprint("openai_api", __name__, url_prefix="/v1")
DEFAULT_ASR_MODEL = "whisper-tiny-en"
RESPONSE_FORMATS = ("json", "text")


def manager() -> ModelManager:
    return current_app.extensions["edge_asr.manager"]


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


@bp.post("/audio/transcriptions")
def transcriptions() -> Response:
    form = request.form
    model_id = form.get("model") or DEFAULT_ASR_MODEL
    spec = manager().spec(model_id)
    if spec.task != "asr":
        raise InvalidRequest(f"the model {model_id!r} is a {spec.task} model; it cannot transcribe audio")
    response_format = form.get("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, not {response_format!r}")
    upload = request.files.get("file")
    if upload is None:
        raise InvalidRequest("the multipart field 'file' (the audio) is missing")
    try:
        audio = decode_audio(upload.read())
    except AudioError as e:
        raise InvalidRequest(f"{upload.filename or 'file'}: {e}") from None
    with manager().lease(model_id) as lease:
        settings = lease.settings
        result: dict[str, Any] = lease.call(
            "transcribe",
            audio=audio,
            language=form.get("language") or settings.get("language"),
            prompt=form.get("prompt") or settings.get("prompt"),
        )
    if response_format == "text":
        return Response(result["text"] + "\n", mimetype="text/plain")
    return jsonify({"text": result["text"]})
