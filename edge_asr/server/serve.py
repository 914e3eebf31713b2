"""Run the service: one process, a thread pool (waitress) for HTTP and an event loop for Wyoming,
models in spawned workers.

One process because CUDA contexts do not survive ``fork``; threads because requests spend their
time waiting on workers. SIGTERM/SIGINT stop accepting requests, then release every worker.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import waitress

from edge_asr.config import Config
from edge_asr.memory import limit_malloc_arenas
from edge_asr.server import create_app
from edge_asr.systemd import notify
from edge_asr.wyoming.server import WyomingServer

log = logging.getLogger(__name__)


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(config: Config) -> None:
    limit_malloc_arenas()
    app = create_app(config)
    manager, supervisor = app.extensions["edge_asr.manager"], app.extensions["edge_asr.supervisor"]
    server = waitress.create_server(app, host=config.host, port=config.port, threads=config.threads)
    signal.signal(signal.SIGTERM, _stop)
    log.info(
        "edge-asr listening on http://%s:%d (models: %s)",
        config.host,
        config.port,
        ", ".join(s.id for s in manager.specs()),
    )
    timings = app.extensions["edge_asr.metrics"].requests
    wyoming = WyomingServer(manager, config, timings) if config.wyoming_port else None
    if wyoming is not None:
        wyoming.start()
    supervisor.start()
    notify("READY=1")  # the socket listens: connections queue until the loop below serves them
    try:
        server.run()
    except (KeyboardInterrupt, SystemExit):
        log.info("stopping")
    finally:
        notify("STOPPING=1")
        server.close()
        if wyoming is not None:
            wyoming.stop()
        supervisor.stop()
        manager.shutdown()
        log.info("stopped; all workers released")
