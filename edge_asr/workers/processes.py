"""Starting the front's child processes (a model's worker, the spare worker): spawned, never forked
(CUDA does not survive fork), each with a pipe to the front."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

SPAWN = multiprocessing.get_context("spawn")
KILL_GRACE = 5.0  # seconds a killed process may take to be reaped


def start_process(name: str, target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Connection]:
    """A new process running ``target(its end of a pipe, *args)``, and the front's end; if the
    process cannot start (out of memory, of descriptors), no pipe end is left open."""
    conn, child = SPAWN.Pipe()
    try:
        process = SPAWN.Process(target=target, args=(child, *args), name=name, daemon=True)
        process.start()
    except BaseException:
        conn.close()
        raise
    finally:
        child.close()  # the child's end is the child's
    return process, conn
