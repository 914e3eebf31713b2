"""Server-sent events, as OpenAI streams them: ``data: <json>`` lines, a blank line between."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from typing import Any, TypeVar

from flask import Response

from edge_asr.errors import ServiceError
from edge_asr.workers.protocol import TranscriptPart

Part, Item, Result = TypeVar("Part"), TypeVar("Item"), TypeVar("Result")


def event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def error_event(e: ServiceError) -> str:
    """An error after the stream began (its status line is gone): it travels as an event."""
    return event({"type": "error", "error": {"message": e.message, "type": e.type, "code": e.code}})


def relay(
    stream: Generator[Part, None, Result], convert: Callable[[Part], Iterable[Item]]
) -> Generator[Item, None, Result]:
    """Yield what ``convert`` makes of each partial result of a worker stream; return its result.
    Closed early (the client left), it closes the stream, which tells the worker to stop."""
    try:
        while True:
            try:
                part = next(stream)
            except StopIteration as done:
                return done.value
            yield from convert(part)
    finally:
        with contextlib.suppress(ServiceError):  # the worker died while we read past a client that left
            stream.close()


def stream_response(events: Iterator[str], holds: ExitStack) -> Response:
    """Stream ``events``; what the request ``holds`` (its leases, its audio's memory) is given back
    when the stream ends or the client leaves."""
    response = Response(events, mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})
    response.call_on_close(holds.close)
    return response


def text_deltas() -> Callable[[TranscriptPart], Iterator[dict[str, str]]]:
    """Turns a transcription's partial results into ``transcript.text.delta`` events, the segments
    separated by a space as in the whole text."""
    first = True

    def deltas(part: TranscriptPart) -> Iterator[dict[str, str]]:
        nonlocal first
        for segment in part["segments"]:
            yield {"type": "transcript.text.delta", "delta": ("" if first else " ") + segment["text"]}
            first = False

    return deltas
