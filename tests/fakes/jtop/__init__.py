"""FAKE jetson-stats ``jtop`` (no Jetson here), for JtopSource's tests: the same names and
signatures as jetson-stats 4.x (``jtop(interval=...)``, ``start()``, ``close()``, the ``memory``
property with RAM and SWAP in kB as jtop/core/memory.py builds them, ``JtopException``). The
figures are those of a recorded AGX Orin tegrastats line (RAM 18207/62841MB, SWAP 86/31420MB)."""

from __future__ import annotations

MEMORY = {
    "RAM": {
        "tot": 62841 * 1024,
        "used": 18207 * 1024,
        "free": 40000 * 1024,
        "buffers": 0,
        "cached": 0,
        "shared": 1200 * 1024,
        "lfb": 466,
    },
    "SWAP": {"tot": 31420 * 1024, "used": 86 * 1024, "cached": 0, "table": {}},
}


class JtopException(Exception):
    pass


class jtop:  # jetson-stats' name
    service_running = True  # a test sets False to play the jtop service going away

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.started = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.started = False

    @property
    def memory(self) -> dict:
        if not (self.started and jtop.service_running):
            raise JtopException("The jtop.service is not active")
        return MEMORY
