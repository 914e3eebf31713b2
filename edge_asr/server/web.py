"""The web page at ``/`` (its files in ``edge_asr/web``, served by Flask: the unit has no internet,
so nothing comes from a CDN) and ``GET /api/stream``, which feeds it: memory readings and
lifecycle events as server-sent events, as they happen.

A stream holds a handler thread while it lasts, so ``admission`` counts streams with the requests
that take a slot (not with the reads that always find a thread); at most ``stream_limit`` run at
once (beyond: 503), each ends after ``STREAM_SECONDS`` (the page reconnects), and each writes at
least once per reading interval, so a client that left is noticed within it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Response, current_app, send_from_directory
from flask.blueprints import BlueprintSetupState

from edge_asr.errors import QueueFull
from edge_asr.lifecycle import ModelManager
from edge_asr.server.admission import LONG_READS, request_slots
from edge_asr.server.bodies import seconds_arg
from edge_asr.server.current import config, manager
from edge_asr.server.sse import event

PAGE = Path(__file__).resolve().parent.parent / "web"
MAX_STREAMS = 4
STREAM_SECONDS = 300
STREAM_RETRY = 5  # seconds a refused page is told to wait

bp = Blueprint("web", __name__, static_folder=PAGE, static_url_path="/web")


def stream_limit(threads: int) -> int:
    """Streams at once: ``MAX_STREAMS``, and at most half the request slots."""
    return max(1, min(MAX_STREAMS, request_slots(threads) // 2))


@bp.record_once
def _stream_slots(state: BlueprintSetupState) -> None:
    threads = state.app.extensions["edge_asr.config"].threads
    state.app.extensions["edge_asr.streams"] = threading.BoundedSemaphore(stream_limit(threads))


@bp.get("/")
def page() -> Response:
    return send_from_directory(PAGE, "index.html")


@bp.get(LONG_READS[0])
def stream() -> Response:
    """``{"type": "memory", ...reading}`` at each reading (every ``memory_interval_ms``) and
    ``{"type": "event", ...event}`` for each lifecycle event, since ``?since=`` (a time; default:
    now). The page first takes what happened before from ``/api/system/memory`` and
    ``/api/events``, then follows from the last of it, so a reconnect loses nothing."""
    since = seconds_arg("since")
    slots = current_app.extensions["edge_asr.streams"]
    if not slots.acquire(blocking=False):
        raise QueueFull("as many pages as the service follows at once are open; close one", retry_after=STREAM_RETRY)
    response = Response(
        _follow(manager(), config().memory_interval_ms / 1000, time.time() if since is None else since),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.call_on_close(slots.release)
    return response


def _follow(models: ModelManager, interval: float, since: float) -> Iterator[str]:
    readings_since = events_since = since
    ends = time.monotonic() + STREAM_SECONDS
    while time.monotonic() < ends:
        sent = False
        for reading in models.memory_history(readings_since):
            readings_since, sent = reading.time, True
            yield event({"type": "memory", **reading.as_dict()})
        for change in models.recent_events(events_since):
            events_since, sent = change["time"], True
            yield event({"type": "event", **change})
        if not sent:
            yield ": nothing new\n\n"  # an SSE comment: a client that left is noticed at this write
        time.sleep(interval)
