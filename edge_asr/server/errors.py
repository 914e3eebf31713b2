"""Every error leaves the service as JSON in OpenAI's shape:
``{"error": {"message", "type", "param", "code"}}`` with the matching status (and on a 503,
``Retry-After`` and the code in ``X-Edge-Asr-Reason``, for a router's log), never an HTML page or a
traceback."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from edge_asr.errors import PayloadTooLarge, QueueFull, ServiceError
from edge_asr.units import format_size

log = logging.getLogger(__name__)

REASON_HEADER = "X-Edge-Asr-Reason"  # a 503's error code, where a router's log can take it


def error_json(message: str, type_: str, code: str, **facts: Any) -> bytes:
    """The error, and beside it any ``facts`` the endpoint adds (``/readyz``'s)."""
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}, **facts}).encode()


def error_response(
    status: int, message: str, type_: str, code: str, retry_after: float | None = None, **facts: Any
) -> Response:
    response = Response(error_json(message, type_, code, **facts), status=status, mimetype="application/json")
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    if status == 503:
        response.headers[REASON_HEADER] = code
    return response


def register(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def service_error(e: ServiceError) -> Response:
        if e.status >= 500 and not isinstance(e, QueueFull):  # a full queue is the load, not a fault
            log.warning("%s: %s", e.code, e.message)
        retry_after = e.retry_after if e.retry_after is not None or e.status != 503 else 1  # every 503 says when
        return error_response(e.status, e.message, e.type, e.code, retry_after)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(e: RequestEntityTooLarge) -> Response:
        limit, field = app.config["MAX_CONTENT_LENGTH"], app.config["MAX_FORM_MEMORY_SIZE"]
        if (request.content_length or 0) <= limit:  # the body fits: one of its form fields does not
            err = PayloadTooLarge(f"a form field is larger than {format_size(field)}; send long data as a file")
        else:
            err = PayloadTooLarge(f"the upload is larger than the limit of {format_size(limit)}")
        return error_response(err.status, err.message, err.type, err.code)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Response:
        code = (e.name or "error").lower().replace(" ", "_")
        type_ = "invalid_request_error" if (e.code or 500) < 500 else "server_error"
        return error_response(e.code or 500, e.description or e.name, type_, code)

    @app.errorhandler(Exception)
    def unexpected(e: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, f"internal error: {type(e).__name__}", "server_error", "internal_error")
