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
    """The names the unit answers to (no DNS lookup: an offline unit must start at once)."""
    host = socket.gethostname().lower()
    names = {"localhost", host, f"{host}.local", settings.host.lower()}
    return frozenset(names | {h.lower().rstrip(".") for h in settings.allowed_hosts})


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (an IPv6 address in brackets) as (host, port), port None when absent; None
    when it is not one (a bad port, brackets, user info or a path)."""
    if any(c in value for c in "@/?#\\ "):
        return None
    try:
        parsed = urlsplit(f"//{value}")
        host, port = (parsed.hostname or "").lower().rstrip("."), parsed.port
    except ValueError:
        return None
    return (host, port) if host else None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str, names: frozenset[str]) -> bool:
    found = split_host(host_header)
    return found is not None and (is_ip(found[0]) or found[0] in names or "*" in names)


def same_origin(origin: str, host_header: str) -> bool:
    """Whether ``origin`` is the service's own: the origin the ``Host`` header names."""
    scheme, _, rest = origin.partition("://")
    if scheme.lower() not in DEFAULT_PORTS:
        return False
    theirs, ours = split_host(rest.rstrip("/")), split_host(host_header)
    if theirs is None or ours is None:
        return False
    default = DEFAULT_PORTS[scheme.lower()]
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def origin_allowed(origin: str) -> bool:
    allowed = config().allowed_origins
    return "*" in allowed or origin.rstrip("/").lower() in {o.rstrip("/").lower() for o in allowed}


def check_request(names: frozenset[str]) -> None:
    host_header = request.headers.get("Host", "")
    if host_header and not host_allowed(host_header, names):
        raise Forbidden(
            f"this service does not answer to the host {host_header[:100]!r}; add its name to allowed_hosts if it is "
            "the unit's"
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
    response.vary.add("Origin")  # caches keep one answer per origin
    if origin and not same_origin(origin, request.headers.get("Host", "")) and origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            asked = request.headers.get("Access-Control-Request-Headers", "Authorization, Content-Type")
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = asked[:1000]  # the SDKs' own headers too
            response.headers["Access-Control-Max-Age"] = "600"
    return response
