"""The Realtime API's events for transcription sessions, as the ``openai`` SDK types them.

The client's ``session.update`` (GA: ``session.audio.input.{format, transcription,
turn_detection}``) and ``transcription_session.update`` (beta: ``input_audio_format``,
``input_audio_transcription``, ``turn_detection``) become one ``SessionConfig``; the server's
events are made here, each a dict ready for JSON; both updates are answered with the GA
``session.updated`` (the beta's answer carries fields only OpenAI's service has, such as a
client secret). 16-kHz PCM is accepted besides the API's 24 kHz, an extension: GA
``{"type": "audio/pcm", "rate": 16000}``, beta ``"pcm16_16k"``.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

from edge_asr.errors import InvalidRequest

RATES = (24000, 16000)
BETA_FORMATS = {"pcm16": 24000, "pcm16_16k": 16000}


@dataclass(frozen=True)
class TurnDetection:
    """``server_vad``: the VAD cuts turns. OpenAI's defaults."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500


@dataclass(frozen=True)
class SessionConfig:
    model: str
    language: str | None = None
    prompt: str | None = None
    rate: int = 24000
    turn_detection: TurnDetection | None = TurnDetection()  # None: the client commits each turn


def new_id(kind: str) -> str:
    return f"{kind}_{uuid.uuid4().hex[:20]}"


def event(type_: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error_event(message: str, code: str, type_: str = "invalid_request_error", about: str | None = None) -> dict:
    """An ``error``: ``about`` is the ``event_id`` of the client event it answers."""
    return event("error", error={"type": type_, "code": code, "message": message, "param": None, "event_id": about})


def session_object(config: SessionConfig) -> dict[str, Any]:
    """The GA session, as ``session.created`` and ``session.updated`` carry it."""
    detection = config.turn_detection
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": config.rate},
                "transcription": {"model": config.model, "language": config.language, "prompt": config.prompt},
                "turn_detection": None
                if detection is None
                else {"type": "server_vad", **dataclasses.asdict(detection)},
            }
        },
    }


def updated_config(config: SessionConfig, session: Any, beta: bool) -> SessionConfig:
    """``config`` with what a ``session.update`` (or beta ``transcription_session.update``) sets;
    what it leaves out stays. A field of the wrong shape is an InvalidRequest."""
    session = _object(session, "session")
    if beta:
        audio_format, transcription = session.get("input_audio_format"), session.get("input_audio_transcription")
        rate = BETA_FORMATS.get(audio_format) if isinstance(audio_format, str) else None
        if audio_format is not None and rate is None:
            raise InvalidRequest(f"input_audio_format must be one of {', '.join(BETA_FORMATS)}, not {audio_format!r}")
    else:
        if session.get("type", "transcription") != "transcription":
            raise InvalidRequest("this endpoint serves transcription sessions: session.type must be 'transcription'")
        audio_input = _object(_object(session.get("audio"), "session.audio").get("input"), "session.audio.input")
        session = audio_input
        rate = _rate(audio_input.get("format"))
        transcription = audio_input.get("transcription")
    changes: dict[str, Any] = {} if rate is None else {"rate": rate}
    if transcription is not None:
        transcription = _object(transcription, "transcription")
        for name in ("model", "language", "prompt"):
            value = transcription.get(name)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"transcription.{name} must be a string")
            if name in transcription and (value or name != "model"):  # a model stays until another is named
                changes[name] = value or None
    if "turn_detection" in session:
        changes["turn_detection"] = _turn_detection(session["turn_detection"])
    return dataclasses.replace(config, **changes)


def _object(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be an object")
    return value


def _rate(audio_format: Any) -> int | None:
    if audio_format is None:
        return None
    audio_format = _object(audio_format, "session.audio.input.format")
    if audio_format.get("type", "audio/pcm") != "audio/pcm":
        raise InvalidRequest(f"the audio format must be audio/pcm (16-bit mono), not {audio_format.get('type')!r}")
    rate = audio_format.get("rate", 24000)
    if rate not in RATES:
        raise InvalidRequest(f"the audio rate must be 24000 (or 16000), not {rate!r}")
    return rate


def _turn_detection(value: Any) -> TurnDetection | None:
    if value is None:
        return None
    value = _object(value, "turn_detection")
    if value.get("type", "server_vad") != "server_vad":
        raise InvalidRequest(
            f"turn_detection.type must be 'server_vad' (or turn_detection null), not {value['type']!r}"
        )
    defaults = TurnDetection()
    threshold = value.get("threshold", defaults.threshold)
    padding = value.get("prefix_padding_ms", defaults.prefix_padding_ms)
    silence = value.get("silence_duration_ms", defaults.silence_duration_ms)
    if not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise InvalidRequest("turn_detection.threshold must be a number between 0 and 1")
    for name, ms in (("prefix_padding_ms", padding), ("silence_duration_ms", silence)):
        if not isinstance(ms, int) or not 0 <= ms <= 10000:
            raise InvalidRequest(f"turn_detection.{name} must be a whole number of milliseconds up to 10000")
    return TurnDetection(float(threshold), padding, silence)
