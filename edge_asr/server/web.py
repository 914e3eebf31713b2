"""The web page at ``/`` (its files in ``edge_asr/web``, served by Flask: the unit has no internet,
so nothing comes from a CDN) and ``GET /api/stream``, which feeds it: memory readings and
lifecycle events as server-sent events, as they happen.

A stream holds a handler thread while it lasts, so at most ``MAX_STREAMS`` run at once (beyond:
503) and each ends after ``STREAM_SECONDS`` (the page reconnects), and ``admission`` counts
streams with the requests that take a slot, not with the reads that always find a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from edge_asr.errors import QueueFull
from edge_asr.lifecycle import ModelManager
from edge_asr.server.admission import LONG_READS
from edge_asr.server.current import config, manager
from edge_asr.server.sse import event

PAGE = Path(__file__).resolve().parent.parent / "web"
STREAM_PATH = LONG_READS[0]
MAX_STREAMS = 4
STREAM_SECONDS = 300

bp = Blueprint("web", __name__, static_folder=PAGE, static_url_path="/web")
_streams = threading.BoundedSemaphore(MAX_STREAMS)


@bp.get("/")
def page() -> Response:
    return send_from_directory(PAGE, "index.html")


@bp.get(STREAM_PATH)
def stream() -> Response:
    """``{"type": "memory", ...reading}`` at each reading (every ``memory_interval_ms``) and
    ``{"type": "event", ...event}`` for each lifecycle event, from the moment of the request; the
    page takes what happened before from ``/api/system/memory`` and ``/api/events``."""
    if not _streams.acquire(blocking=False):
        raise QueueFull(f"{MAX_STREAMS} streams are open already; close a page", retry_after=STREAM_SECONDS)
    response = Response(
        _follow(manager(), config().memory_interval_ms / 1000, time.time()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(_streams.release)
    return response


def _follow(manager: ModelManager, interval: float, since: float) -> Iterator[str]:
    readings_since = events_since = since
    ends = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < ends:
        for reading in manager.memory.history(readings_since):
            readings_since = reading.time
            yield event({"type": "memory", **reading.as_dict()})
        for change in manager.events.recent(events_since):
            events_since = change["time"]
            yield event({"type": "event", **change})
        time.sleep(interval)
