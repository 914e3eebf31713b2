"""What a request asks of the models, resolved against the manager before any model loads, for
every protocol (HTTP, Wyoming): the transcription options from the request and the model's
settings, and the voice a request names. A model or language the unit cannot serve is a 400 here."""

from __future__ import annotations

from typing import Any, Literal

from edge_asr.errors import InvalidRequest
from edge_asr.lifecycle import ModelManager
from edge_asr.manifest import DEFAULT_MODELS, ModelSpec
from edge_asr.settings import check_transcription
from edge_asr.tts import Voice, voice_of
from edge_asr.workers.protocol import TranscriptionOptions

Task = Literal["transcribe", "translate"]


def transcription_options(
    manager: ModelManager, spec: ModelSpec, requested: dict[str, Any], task: Task = "transcribe"
) -> TranscriptionOptions:
    """What the worker transcribes with: the request's options, else the model's settings; a
    language or task the model cannot do is refused here."""
    settings = manager.settings(spec.id)
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


def requested_voice(manager: ModelManager, model_id: Any, voice: Any) -> Voice:
    """The voice a request names (its TTS model, default ``piper-joe-en``): another task's model,
    or a voice the model does not have, is a 400."""
    model_id = model_id or DEFAULT_MODELS["tts"]
    if not isinstance(model_id, str):
        raise InvalidRequest("model must be a string")
    spec = manager.spec(model_id)
    if spec.task != "tts":
        raise InvalidRequest(f"the model {model_id!r} is a {spec.task} model; it cannot speak")
    named = voice_of(spec)
    if voice not in (None, "", named.id):
        raise InvalidRequest(f"the model {model_id!r} has the voice {named.id!r} only, not {voice!r}")
    return named
