"""API keys. When ``api_key`` is configured, every request needs ``Authorization: Bearer <key>``
(what the OpenAI SDKs send) with one of the keys, compared in constant time; the exceptions are
``/healthz`` and ``/readyz`` (systemd and load balancers probe them), the web page's own files (it asks for the key
and sends it with every call it makes), a CORS preflight (``OPTIONS``: browsers send it without
credentials, and it answers nothing but what is allowed) and, with ``metrics_public``,
``/metrics``. A browser's WebSocket cannot send headers: it may send the key as the subprotocol
``openai-insecure-api-key.<key>``, as OpenAI's Realtime API takes it."""

from __future__ import annotations

import hmac

from flask import Flask, request

from edge_asr.errors import Unauthorized
from edge_asr.server.current import config

PUBLIC = ("/healthz", "/readyz", "/")
KEY_SUBPROTOCOL = "openai-insecure-api-key."
PUBLIC_PREFIXES = ("/web/",)


def register(app: Flask) -> None:
    app.before_request(require_api_key)


def require_api_key() -> None:
    settings = config()
    path = request.path
    if not settings.api_key or path in PUBLIC or path.startswith(PUBLIC_PREFIXES) or request.method == "OPTIONS":
        return
    if settings.metrics_public and path == "/metrics":
        return
    token = presented_key().encode()
    # every key compared, so the time taken does not tell which one came close
    matches = [hmac.compare_digest(token, key.encode()) for key in settings.api_key]
    if not any(matches):
        raise Unauthorized("this service needs 'Authorization: Bearer <key>' with a valid API key")


def presented_key() -> str:
    """The bearer token, or on a WebSocket upgrade the key a browser sends as a subprotocol."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return given.strip()
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if protocol.strip().startswith(KEY_SUBPROTOCOL):
            return protocol.strip().removeprefix(KEY_SUBPROTOCOL)
    return ""
