"""The front door: the ASGI app uvicorn serves, and the bounds it keeps on the LAN's clients.

HTTP requests go to the Flask app (``bridge``). A WebSocket upgrade is first an HTTP request to
the Flask app like any other (origins, host, API key, and its route's own checks in
``server.realtime``); the route's 101 carries the session it opened, which then runs here, on the
event loop. Anything else the route answers is sent as the upgrade's refusal.

``FrontProtocol`` is uvicorn's HTTP/1.1 protocol with two bounds per client address: at most
``max_client_connections`` connections at once, WebSockets included (more are closed at once), and
``client_timeout`` to send each request's head. A client that opens hundreds of sockets and stalls holds a few sockets
of its own and nothing anyone else needs.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from edge_asr.server.admission import UNIT_HEADER
from edge_asr.server.bridge import Receive, Scope, Send, WsgiBridge, encoded, wsgi_environ

log = logging.getLogger(__name__)
SESSION_KEY = "edge_asr.websocket_session"  # where the upgrade's route leaves the session it opened


class Front:
    def __init__(self, bridge: WsgiBridge):
        self.bridge = bridge

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.bridge(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        environ = wsgi_environ(scope, io.BytesIO(), 0)
        environ[SESSION_KEY] = None  # the route sets it: this GET is an upgrade
        status, headers, body = await self.bridge.call(environ)
        session = environ[SESSION_KEY]
        if status != 101 or session is None:
            await send({"type": "websocket.http.response.start", "status": status, "headers": encoded(headers)})
            await send({"type": "websocket.http.response.body", "body": body})
            return
        unit = [(name, value) for name, value in headers if name == UNIT_HEADER]
        await session.run(receive, send, dict(headers).get("Sec-WebSocket-Protocol"), encoded(unit))


def front_protocol(max_client_connections: int, client_timeout: float) -> type[H11Protocol]:
    """``FrontProtocol`` with these bounds, shared by every connection of one server."""
    open_by_client: Counter[str] = Counter()
    warned: set[str] = set()  # addresses whose refusals are logged (once each)

    class FrontProtocol(H11Protocol):
        _address: str | None = None
        _head_deadline: asyncio.TimerHandle | None = None
        _head_cycle: object = None  # the request under way when the deadline was set

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else ""
            if open_by_client[address] >= max_client_connections:
                if address not in warned and len(warned) < 1024:
                    warned.add(address)
                    log.warning(
                        "%s holds %d connections (max_client_connections): closing more",
                        address,
                        max_client_connections,
                    )
                transport.close()
                return
            self._address = address
            open_by_client[address] += 1
            self._await_head()

        def _await_head(self) -> None:
            """The next request's head must begin and end within ``client_timeout``."""
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            self._head_cycle = self.cycle
            self._head_deadline = self.loop.call_later(client_timeout, self._head_late)

        def _head_late(self) -> None:
            if self.cycle is self._head_cycle:  # no request has started since: its head did not come
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def _forget(self) -> None:
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            if self._address is not None:
                open_by_client[self._address] -= 1
                if not open_by_client[self._address]:
                    del open_by_client[self._address]
                self._address = None

        def connection_lost(self, exc: Exception | None) -> None:
            self._forget()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event: Any) -> None:
            """The WebSocket protocol takes the connection over; it stays counted until it closes."""
            if self._head_deadline is not None:
                self._head_deadline.cancel()
            super().handle_websocket_upgrade(event)
            websocket = self.transport.get_protocol()
            lost = websocket.connection_lost

            def connection_lost(exc: Exception | None) -> None:
                self._forget()
                lost(exc)

            websocket.connection_lost = connection_lost  # type: ignore[method-assign]

    return FrontProtocol
