"""Per-model settings a user may change: what they mean, their defaults, their validation.

Stored overrides live in the ``StateStore``; the effective settings are the manifest's defaults
overlaid with them. They survive unloads and restarts and apply at the next request or load.
"""

from __future__ import annotations

from typing import Any

from edge_asr.errors import InvalidRequest
from edge_asr.manifest import ModelSpec
from edge_asr.units import parse_duration
from edge_asr.whisper.languages import model_languages

ASR_ONLY = {"language", "prompt", "beam_size", "condition_on_previous_text"}
MAX_BEAM = 5  # also the most sequences TensorRT engines are built to decode at once (--max-batch)
DEFAULT_BEAM_SIZE = 5  # as faster-whisper and openai-whisper
MAX_PROMPT_CHARS = 2000  # Whisper reads at most 223 tokens of it (about 1000 characters)
MAX_LANGUAGE_CHARS = 16  # a language code ("en", "haw")


def text(value: Any, limit: int) -> str:
    """A string of at most ``limit`` characters (settings and form fields alike)."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) > limit:
        raise ValueError(f"must be at most {limit} characters, not {len(value)}")
    return value


def _keep_alive(value: Any) -> str | float:
    parse_duration(value)
    return value


def request_keep_alive(value: Any) -> float | None:
    """A request's own ``keep_alive`` (seconds or a duration string; 0 = unload once idle, negative
    = keep), or None when the request names none and the model's setting applies."""
    if value is None or value == "":
        return None
    try:
        return parse_duration(value)
    except ValueError as e:
        raise InvalidRequest(f"keep_alive: {e}") from None


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def beam_size(value: Any) -> int:
    """A beam size: 1 (greedy) to ``MAX_BEAM``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BEAM:
        raise ValueError(f"must be an integer from 1 to {MAX_BEAM}, not {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


VALIDATORS = {
    "language": lambda v: text(v, MAX_LANGUAGE_CHARS).lower(),  # spoken language, ISO 639-1 ("de")
    "prompt": lambda v: text(v, MAX_PROMPT_CHARS),  # initial prompt / hotwords, biases every transcription
    "beam_size": beam_size,  # beam search width at temperature 0; 1 = greedy
    "condition_on_previous_text": _flag,  # each window also prompted with the text before it
    "keep_alive": _keep_alive,  # idle time before hibernation: "5m", 300, 0 (after each request), -1 (never)
    "priority": _priority,  # lower is evicted first
    "pinned": _flag,  # never evicted to make room
}


def check_transcription(spec: ModelSpec, language: str | None, task: str = "transcribe") -> None:
    """Refuse (400) a language or a task the speech recognition model cannot do, before it loads: an
    English-only model transcribes English only, a multilingual one the languages it knows."""
    known = model_languages(spec.directory)
    if known is None:  # not prepared: loading it says so
        return
    if not known and (task == "translate" or language not in (None, "en")):
        wanted = "translate" if task == "translate" else f"transcribe {language!r}"
        raise InvalidRequest(f"the model {spec.id!r} is English-only; it cannot {wanted} (a multilingual model can)")
    if known and language is not None and language not in known:
        known_list = ", ".join(sorted(known))
        raise InvalidRequest(f"the model {spec.id!r} does not know the language {language!r}; it knows {known_list}")


def defaults(spec: ModelSpec, keep_alive: float) -> dict[str, Any]:
    """The manifest's settings for ``spec``; ``keep_alive`` is the configuration's default."""
    base: dict[str, Any] = {"keep_alive": spec.keep_alive or keep_alive, "priority": spec.priority, "pinned": False}
    if spec.task == "asr":
        base |= {"language": None, "prompt": None, "beam_size": DEFAULT_BEAM_SIZE, "condition_on_previous_text": False}
    return base | {k: v for k, v in spec.settings.items() if k in VALIDATORS}


def merge(spec: ModelSpec, stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored overrides after ``patch``; a ``null`` value returns that setting to its default."""
    if not isinstance(patch, dict):
        raise InvalidRequest("settings must be a JSON object")
    updated = dict(stored)
    for key, value in patch.items():
        if key not in VALIDATORS or (key in ASR_ONLY and spec.task != "asr"):
            allowed = sorted(k for k in VALIDATORS if spec.task == "asr" or k not in ASR_ONLY)
            raise InvalidRequest(f"unknown setting {key!r} for model {spec.id!r}; known: {', '.join(allowed)}")
        if value is None:
            updated.pop(key, None)
            continue
        try:
            updated[key] = VALIDATORS[key](value)
        except ValueError as e:
            raise InvalidRequest(f"setting {key!r}: {e}") from None
        if key == "language":
            check_transcription(spec, value)
    return updated
