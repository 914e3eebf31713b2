"""Run the service: one process, uvicorn's event loop at the front (HTTP and the Realtime API's
WebSockets on one port), the Flask app in a pool of handler threads behind it, an event loop for
Wyoming, models in spawned workers.

One process because CUDA contexts do not survive ``fork``; threads because requests spend their
time waiting on workers; an event loop at the front because a WebSocket, a slow upload or a
stalled client should cost a socket, not a thread (``front``, ``bridge``). SIGTERM/SIGINT stop
accepting requests, give those under way ``STOP_GRACE`` to end, then release every worker.
"""

from __future__ import annotations

import logging
import signal
import socket
from types import FrameType

import uvicorn

from edge_asr.config import Config
from edge_asr.memory import limit_malloc_arenas
from edge_asr.server import create_app
from edge_asr.server.bridge import WsgiBridge
from edge_asr.server.front import Front, front_protocol
from edge_asr.systemd import notify
from edge_asr.wyoming.server import WyomingServer

log = logging.getLogger(__name__)
STOP_GRACE = 5  # seconds requests under way get to end at a stop (streams and sessions are cut)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class Server(uvicorn.Server):
    """uvicorn's server, telling systemd (and the log) once its socket listens."""

    def __init__(self, config: uvicorn.Config, models: str):
        super().__init__(config)
        self.models = models

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            config = self.config
            log.info("edge-asr listening on http://%s:%d (models: %s)", config.host, config.port, self.models)
            notify("READY=1")


def serve(config: Config) -> None:
    limit_malloc_arenas()
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start-up lines repeat ours
    app = create_app(config)
    manager, supervisor = app.extensions["edge_asr.manager"], app.extensions["edge_asr.supervisor"]
    bridge = WsgiBridge(app, config.threads, config.client_timeout, config.max_upload_bytes)
    server = Server(
        uvicorn.Config(
            Front(bridge),
            host=config.host,
            port=config.port,
            http=front_protocol(config.max_client_connections, config.client_timeout),
            ws="websockets-sansio",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=STOP_GRACE,
        ),
        ", ".join(s.id for s in manager.specs()),
    )
    timings = app.extensions["edge_asr.metrics"].requests
    wyoming = WyomingServer(manager, config, timings) if config.wyoming_port else None
    if wyoming is not None:
        wyoming.start()
    supervisor.start()
    signal.signal(signal.SIGTERM, _stop)  # uvicorn raises the signal again once it has shut down
    try:
        server.run()  # until SIGTERM or SIGINT
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        notify("STOPPING=1")
        log.info("stopping")
        if wyoming is not None:
            wyoming.stop()
        supervisor.stop()
        manager.shutdown()
        bridge.executor.shutdown(wait=False, cancel_futures=True)
        log.info("stopped; all workers released")
    if not server.started:
        raise SystemExit(f"edge-asr could not listen on {config.host}:{config.port}")
