"""What requests ask for, checked before any model loads: the checks more than one blueprint
makes (a transcription's options, a voice, a yes/no form field)."""

from __future__ import annotations

from typing import Any, Literal

from edge_asr.errors import InvalidRequest
from edge_asr.manifest import DEFAULT_MODELS, ModelSpec
from edge_asr.server.current import manager
from edge_asr.settings import MAX_BEAM, VALIDATORS, beam_size, check_transcription
from edge_asr.tts import Voice, voice_of
from edge_asr.workers.protocol import TranscriptionOptions

TRUE = ("true", "1", "yes")


def flag(form: Any, key: str) -> bool:
    """A form field's yes or no (``true``, ``1``, ``yes``: yes; anything else or absent: no)."""
    return str(form.get(key, "false")).lower() in TRUE


def _temperature(form: Any) -> float:
    raw = form.get("temperature", "0")
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"temperature must be a number between 0 and 1, not {raw!r}") from None
    if not 0 <= value <= 1:
        raise InvalidRequest(f"temperature must be between 0 and 1, not {value}")
    return value


def transcription_request(form: Any) -> dict[str, Any]:
    """A transcription's own options from its form: ``language``, ``prompt``, ``temperature``, and
    ``beam_size`` (an extension of OpenAI's API)."""
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


Task = Literal["transcribe", "translate"]


def transcription_options(
    spec: ModelSpec, requested: dict[str, Any], task: Task = "transcribe"
) -> TranscriptionOptions:
    """What the worker transcribes with: the request's options, else the model's settings; a
    language or task the model cannot do is refused here."""
    settings = manager().settings(spec.id)
    options = TranscriptionOptions(
        language=requested.get("language") or settings.get("language"),
        task=task,
        prompt=requested.get("prompt") or settings.get("prompt"),
        temperature=requested.get("temperature", 0.0),
        beam_size=requested.get("beam_size") or settings["beam_size"],
        condition_on_previous_text=settings["condition_on_previous_text"],
    )
    check_transcription(spec, options.language, task)
    return options


def requested_voice(model_id: Any, voice: Any) -> Voice:
    """The voice a request names (its TTS model, default ``piper-joe-en``): another task's model,
    or a voice the model does not have, is a 400."""
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
