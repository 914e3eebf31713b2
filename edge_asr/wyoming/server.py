"""The Wyoming server: an asyncio TCP server in a thread of its own beside HTTP, one
``ConnectionHandler`` per connection.

Wyoming has no authentication (by design: Home Assistant and satellites speak it on a trusted
LAN), so the API key does not cover it; who may connect is ``wyoming_allow`` (networks), and at
most ``wyoming_max_clients`` at once. A connection refused for either, or one that breaks the
framing or stays silent for ``wyoming_timeout`` (``framing``), is closed and logged once per kind
and address; nothing else is affected. With ``wyoming_zeroconf`` the server is advertised for Home
Assistant to discover (``discovery``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from concurrent.futures import Future

from prometheus_client import Histogram

from edge_asr.config import Config
from edge_asr.lifecycle import ModelManager
from edge_asr.wyoming.discovery import Discovery
from edge_asr.wyoming.framing import ProtocolViolation
from edge_asr.wyoming.handler import ConnectionHandler, Conversations

log = logging.getLogger(__name__)
LOGGED_MAX = 1024


class WyomingServer:
    def __init__(self, manager: ModelManager, config: Config, timings: Histogram | None = None):
        """``timings``: where each answered event's time goes (the service's request histogram)."""
        self._manager, self._config, self._timings = manager, config, timings
        self.host, self.port = config.wyoming_host or config.host, config.wyoming_port
        self._allowed = [ipaddress.ip_network(n) for n in config.wyoming_allow]
        self._conversations = Conversations()
        self._clients: set[asyncio.Task] = set()
        self._logged: set[tuple[str, str]] = set()  # (why, address) already logged
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._discovery = Discovery(config, self.port) if config.wyoming_zeroconf else None
        self._thread = threading.Thread(target=self._loop.run_forever, name="edge-asr-wyoming", daemon=True)

    def start(self) -> None:
        """Listen (a port in use raises here, at start-up), then serve in the thread."""
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, self.host, self.port))
        self._thread.start()
        if self._discovery is not None:  # probing the name takes a second or two: not awaited
            announcing = asyncio.run_coroutine_threadsafe(self._discovery.start(), self._loop)
            announcing.add_done_callback(_log_failure)
        log.info("edge-asr Wyoming server on tcp://%s:%d", self.host, self.port)

    def stop(self) -> None:
        """Stop listening and close every connection; their model work ends with its lease."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for client in list(self._clients):
            client.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._discovery is not None:
            try:
                await self._discovery.stop()
            except Exception as e:
                log.warning("wyoming: the mDNS announcement did not end cleanly: %s", e)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        address = writer.get_extra_info("peername")[0]
        why = self._refusal(address)
        if why is not None:
            self._log_once(why, address, f"refused a connection from {address} ({why})")
            writer.close()
            return
        config = self._config
        handler = ConnectionHandler(
            reader,
            writer,
            self._manager,
            self._conversations,
            config.max_upload_bytes,
            config.wyoming_timeout,
            self._timings,
        )
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            await handler.run()
        except ProtocolViolation as e:
            self._log_once(e.kind, address, f"closed the connection of {address} ({e})")
        except ConnectionError as e:
            log.info("wyoming: the connection of %s ended: %s", address, e)
        finally:
            self._clients.discard(task)

    def _log_once(self, kind: str, address: str, line: str) -> None:
        """Log ``line`` the first time ``kind`` happens from ``address`` (forgetting all after
        ``LOGGED_MAX``, so a scan from many addresses cannot grow the set)."""
        if (kind, address) in self._logged:
            return
        if len(self._logged) >= LOGGED_MAX:
            self._logged.clear()
        self._logged.add((kind, address))
        log.warning("wyoming: %s", line)

    def _refusal(self, address: str) -> str | None:
        """Why a connection from ``address`` is refused, or None."""
        ip = ipaddress.ip_address(address.split("%")[0])
        if not any(ip in network for network in self._allowed):
            return "not in wyoming_allow"
        if len(self._clients) >= self._config.wyoming_max_clients:
            return f"wyoming_max_clients {self._config.wyoming_max_clients} connected"
        return None


def _log_failure(announcing: Future) -> None:
    if (error := announcing.exception()) is not None:
        log.warning("wyoming: the server is not advertised over mDNS: %s", error)
