"""What HTTP requests ask for, read from their forms and checked before any model loads: the
checks more than one blueprint makes (a transcription's own options, a yes/no field)."""

from __future__ import annotations

from typing import Any

from edge_asr.errors import InvalidRequest
from edge_asr.settings import MAX_BEAM, VALIDATORS, beam_size

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
