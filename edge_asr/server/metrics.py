"""``GET /metrics`` in Prometheus' text format, and the request latency it reports."""

from __future__ import annotations

import time

from flask import Blueprint, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from edge_asr.server.current import metrics

bp = Blueprint("metrics", __name__)


@bp.before_app_request
def _start_clock() -> None:
    g.request_started = time.perf_counter()


@bp.after_app_request
def _observe(response: Response) -> Response:
    endpoint = request.url_rule.rule if request.url_rule else "unknown"
    if "request_started" in g:
        metrics().requests.labels(endpoint, str(response.status_code)).observe(time.perf_counter() - g.request_started)
    return response


@bp.get("/metrics")
def exposition() -> Response:
    return Response(metrics().exposition(), mimetype=CONTENT_TYPE_LATEST)
