"""The spare worker: one process with the interpreter up, the heavy imports done (numpy, ONNX
Runtime, onnxruntime-genai, the runners' modules) and no model. A wake hands it its model
(``WorkerHandle(spec, config, spare)``) instead of starting a process, so a hibernated model pays
for its sessions only, not for a Python start and its imports again. The ModelManager owns it:
kept ready when memory allows (its footprint counted against the budget and the watermarks), given
up first under pressure."""

from __future__ import annotations

import importlib
import logging
import os
from multiprocessing.connection import Connection
from typing import Any

from edge_asr.config import Config
from edge_asr.workers import protocol
from edge_asr.workers.processes import KILL_GRACE, start_process
from edge_asr.workers.runners import RUNNERS
from edge_asr.workers.worker import prepare, rss_bytes, serve


def spare_main(conn: Connection, config: Config) -> None:
    """Import what every runner needs, say so, and wait for a model (or a release)."""
    prepare(config)
    for module in (module for runner in RUNNERS.values() for module in runner.modules):
        try:
            importlib.import_module(module)
        except Exception as e:  # that runner's load will say why; the others still gain
            logging.getLogger(__name__).warning("spare worker: %s not imported: %s: %s", module, type(e).__name__, e)
    try:
        conn.send(protocol.Idle({"pid": os.getpid(), "rss": rss_bytes()}))
        message = conn.recv()
    except (EOFError, OSError):  # the front process is gone
        return
    if isinstance(message, protocol.Load):
        serve(conn, message.spec, config, message.nice)


class Spare:
    """The front's side of the spare process: started at once, ready once its imports are done;
    a WorkerHandle takes over its process and pipe, or ``release()`` ends it unused."""

    def __init__(self, config: Config):
        self.process, self.conn = start_process("edge-asr-spare", spare_main, config)
        self.report: dict[str, Any] | None = None  # its Idle report (pid, rss) once ready

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def poll(self) -> bool:
        """Whether its imports are done (its report read if it came). Only its owner calls it: the
        pipe is read by one thread."""
        if self.report is None and not self.conn.closed:
            try:
                if self.conn.poll():
                    self.report = self.conn.recv().report
            except (EOFError, OSError):
                pass
        return self.report is not None

    def alive(self) -> bool:
        return not self.conn.closed and self.process.is_alive()

    def release(self) -> None:
        """End it unused: it holds nothing worth a clean exit, so it is killed and reaped."""
        self.conn.close()
        self.process.kill()
        self.process.join(KILL_GRACE)
