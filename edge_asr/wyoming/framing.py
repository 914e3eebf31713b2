"""Reading one Wyoming event within bounds: a JSON header line, then the ``data_length`` bytes of
more JSON data and the ``payload_length`` bytes of payload it announces.

The ``wyoming`` library's reader trusts what a header claims (it waits for and buffers any length)
and turns a malformed line into an end of stream. Here a client that breaks the framing is told
apart, so the server can close it and say why: a header, data or payload over its bound is
refused before anything it claims is read, so memory never grows with a claim; a connection
silent for ``timeout`` seconds, between events or inside one, is closed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from wyoming.event import Event

MAX_HEADER_BYTES = 64 * 1024  # the header line (asyncio's default stream limit)
MAX_DATA_BYTES = 64 * 1024  # the JSON data: text to speak, a context
MAX_PAYLOAD_BYTES = 1024 * 1024  # one audio chunk (a satellite sends about 2 kB at a time)


class ProtocolViolation(Exception):
    """The client broke the framing; ``kind`` names how (for a log line once per kind)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


async def read_event(reader: asyncio.StreamReader, timeout: float) -> Event | None:
    """The next event, or None at the end of the stream."""
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        raise ProtocolViolation("silent", f"nothing for {timeout:.0f} s") from None
    except ValueError:  # asyncio's limit: a line longer than the stream's buffer
        raise ProtocolViolation("header too large", f"a header line over {MAX_HEADER_BYTES} bytes") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise ProtocolViolation("half-sent event", "the stream ended inside a header")
    header = _json(line, "header")
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolViolation("malformed header", "a header that is not an object with a type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolViolation("malformed header", "data that is not an object")
    data_length = _length(header, "data_length", MAX_DATA_BYTES)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD_BYTES)
    if data_length:
        more = _json(await _read(reader, data_length, timeout), "data")
        if not isinstance(more, dict):
            raise ProtocolViolation("malformed data", "data that is not an object")
        data = {**data, **more}
    payload = await _read(reader, payload_length, timeout) if payload_length else None
    return Event(type=header["type"], data=data, payload=payload)


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolViolation(f"malformed {what}", f"{what} that is not JSON") from None


def _length(header: dict[str, Any], key: str, bound: int) -> int:
    value = header.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolViolation("malformed header", f"{key} {value!r}")
    if value > bound:
        raise ProtocolViolation(f"{key.split('_')[0]} too large", f"{key} {value} over {bound}")
    return value


async def _read(reader: asyncio.StreamReader, length: int, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reader.readexactly(length), timeout)
    except asyncio.TimeoutError:
        raise ProtocolViolation("stalled event", f"the rest of an event not sent within {timeout:.0f} s") from None
    except asyncio.IncompleteReadError:
        raise ProtocolViolation("half-sent event", "the stream ended inside an event") from None
