"""Who may address the service from a browser on the LAN, as Ollama guards its API.

- **Host** (DNS rebinding): a page on another site can make its own name resolve to the unit
  and then read every answer as same-origin. So the ``Host`` a request names must be an IP
  address, ``localhost``, one of the unit's own names (its host name, fully qualified and
  ``.local``) or in ``allowed_hosts``; a request without one (HTTP/1.0 health checks) passes.
- **Origin** (cross-site requests): a page on any site can POST a form to the unit without a
  preflight, or open a WebSocket to it. So a request that can change what the service holds
  (any method but GET, HEAD and OPTIONS), or that upgrades to a WebSocket, is refused when its
  ``Origin`` is neither the service's own (the origin the ``Host`` header names) nor in
  ``allowed_origins``. Programs that send no ``Origin`` (SDKs, curl, routers) pass.
- **CORS**: only an allowed origin gets ``Access-Control-Allow-*`` headers (and its preflight
  answered), so only its pages may read what they ask for.

Refusals are 403 in OpenAI's error shape. The API key (``auth``) is checked after these.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from flask import Flask, Response, request

from edge_asr.config import Config
from edge_asr.errors import Forbidden
from edge_asr.server.current import config

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def register(app: Flask) -> None:
    names = own_names(app.extensions["edge_asr.config"])
    app.before_request(lambda: check_request(names))
    app.after_request(allow_cross_origin)


def own_names(settings: Config) -> frozenset[str]:
    """The names the unit answers to."""
    host = socket.gethostname().lower()
    names = {"localhost", host, f"{host}.local", socket.getfqdn().lower(), settings.host.lower()}
    return frozenset(names | {h.lower() for h in settings.allowed_hosts})


def split_host(value: str) -> tuple[str, int | None]:
    """``host[:port]`` (an IPv6 address in brackets) as (host, port); port None when absent."""
    parsed = urlsplit(f"//{value}")
    try:
        return (parsed.hostname or "").lower(), parsed.port
    except ValueError:  # a port that is not a number
        return value.lower(), -1


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str, names: frozenset[str]) -> bool:
    host, port = split_host(host_header)
    return port != -1 and (is_ip(host) or host in names or "*" in names)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``origin`` is the service's own: the origin the ``Host`` header names."""
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False
    host, port = split_host(host_header)
    default = DEFAULT_PORTS[parts.scheme]
    return parts.hostname.lower() == host and (parts.port or default) == (port or default)


def origin_allowed(origin: str) -> bool:
    allowed = config().allowed_origins
    return "*" in allowed or origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}


def check_request(names: frozenset[str]) -> None:
    host_header = request.headers.get("Host", "")
    if host_header and not host_allowed(host_header, names):
        raise Forbidden(
            f"this service does not answer to the host name {split_host(host_header)[0]!r}; "
            "add it to allowed_hosts if it is the unit's"
        )
    origin = request.headers.get("Origin")
    upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
    if origin is None or (request.method in SAFE_METHODS and not upgrade):
        return
    if not (same_origin(origin, host_header) or origin_allowed(origin)):
        raise Forbidden(f"requests from pages on {origin} are refused; add it to allowed_origins to allow them")


def allow_cross_origin(response: Response) -> Response:
    """CORS headers for an allowed origin, and its preflight answered; none for any other."""
    origin = request.headers.get("Origin")
    if origin and not same_origin(origin, request.headers.get("Host", "")) and origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
    return response
