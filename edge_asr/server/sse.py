"""Server-sent events, as OpenAI streams them: ``data: <json>`` lines, a blank line between."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

from flask import Response

from edge_asr.errors import ServiceError


def event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def error_event(e: ServiceError) -> str:
    """An error after the stream began (its status line is gone): it travels as an event."""
    return event({"type": "error", "error": {"message": e.message, "type": e.type, "code": e.code}})


def stream_response(events: Iterator[str], leases: ExitStack) -> Response:
    """Stream ``events``; the leases return when the stream ends or the client leaves."""
    response = Response(events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
    response.call_on_close(leases.close)
    return response
