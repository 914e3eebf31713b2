"""``POST /api/pipeline``: audio in, transcript and the LLM's work on it out.

The two steps take their models in turn through the manager: when both do not fit (the memory
reserve or budget), admission unloads the idle speech model before the LLM loads, and the reply
lists the lifecycle events the request caused."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, jsonify, request

from edge_asr.errors import InvalidRequest
from edge_asr.manager import ModelManager
from edge_asr.server.uploads import uploaded_audio

bp = Blueprint("pipeline", __name__)
DEFAULTS = {
    "asr_model": "whisper-tiny-en",
    "llm_model": "smollm2-135m-instruct",
    "instruction": "Summarize the following transcript in a few sentences.",
}


def manager() -> ModelManager:
    return current_app.extensions["edge_asr.manager"]


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
    audio = uploaded_audio()

    since, start = time.time(), time.monotonic()
    with manager().lease(form["asr_model"]) as lease:
        settings = lease.settings
        transcript = lease.call(
            "transcribe",
            audio=audio,
            language=request.form.get("language") or settings.get("language"),
            prompt=settings.get("prompt"),
        )
    transcribed = time.monotonic()
    messages = [{"role": "system", "content": form["instruction"]}, {"role": "user", "content": transcript["text"]}]
    with manager().lease(form["llm_model"]) as lease:
        answer = lease.call("chat", messages=messages, max_tokens=max_tokens, temperature=0.0)
    done = time.monotonic()
    return jsonify(
        {
            "transcript": {"text": transcript["text"], "duration": transcript["duration"]},
            "output": answer["text"],
            "finish_reason": answer["finish_reason"],
            "timings": {"transcribe_s": round(transcribed - start, 3), "generate_s": round(done - transcribed, 3)},
            "events": manager().events.recent(since),
        }
    )
