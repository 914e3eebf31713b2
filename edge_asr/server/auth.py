"""API keys. When ``api_key`` is configured, every request needs ``Authorization: Bearer <key>``
(what the OpenAI SDKs send) with one of the keys, compared in constant time; the exceptions are
``/healthz`` (systemd and load balancers probe it), the web page's own files (it asks for the key
and sends it with every call it makes), a CORS preflight (``OPTIONS``: browsers send it without
credentials, and it answers nothing but what is allowed) and, with ``metrics_public``,
``/metrics``."""

from __future__ import annotations

import hmac

from flask import Flask, request

from edge_asr.errors import Unauthorized
from edge_asr.server.current import config

PUBLIC = ("/healthz", "/")
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
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    token = given.strip().encode()
    # every key compared, so the time taken does not tell which one came close
    matches = [hmac.compare_digest(token, key.encode()) for key in settings.api_key]
    if scheme.lower() != "bearer" or not any(matches):
        raise Unauthorized("this service needs 'Authorization: Bearer <key>' with a valid API key")
