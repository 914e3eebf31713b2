"""Memory readings: how much the system has available, which decides admission and shows residue.

``MemInfoSource`` reads ``/proc/meminfo`` (MemAvailable; NvMapMemUsed on Jetson kernels, the
GPU's share of the unified memory). Sources keep their recent readings for the API.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas. Each thread of a threaded server otherwise gets an
    arena that keeps its freed memory, and RSS creeps up with the number of threads that served."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


def trim_heap() -> None:
    """Give glibc's freed heap back to the system. It keeps it otherwise (see DESIGN.md): after a
    model is destroyed, and in the threaded front process after each unload."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass(frozen=True)
class MemoryReading:
    time: float
    total_bytes: int
    available_bytes: int
    used_bytes: int
    swap_total_bytes: int = 0
    swap_used_bytes: int = 0
    gpu_shared_bytes: int | None = None  # NvMap (Jetson): GPU allocations in the shared memory

    def as_dict(self) -> dict:
        return asdict(self)


class MemorySource:
    """Base of the memory sources: ``read()`` takes a reading and remembers it."""

    name = "abstract"

    def __init__(self, history: int = 600):
        self._history: deque[MemoryReading] = deque(maxlen=history)
        self._lock = threading.Lock()

    def _take(self) -> MemoryReading:
        raise NotImplementedError

    def read(self) -> MemoryReading:
        reading = self._take()
        with self._lock:
            self._history.append(reading)
        return reading

    def history(self, since: float = 0.0) -> list[MemoryReading]:
        with self._lock:
            return [r for r in self._history if r.time > since]


class MemInfoSource(MemorySource):
    name = "meminfo"

    def __init__(self, path: Path = Path("/proc/meminfo"), history: int = 600):
        super().__init__(history)
        self.path = path

    def _take(self) -> MemoryReading:
        kib: dict[str, int] = {}
        for line in self.path.read_text().splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                kib[key] = int(fields[0])
        total, available = kib["MemTotal"] * 1024, kib["MemAvailable"] * 1024
        return MemoryReading(
            time=time.time(),
            total_bytes=total,
            available_bytes=available,
            used_bytes=total - available,
            swap_total_bytes=kib.get("SwapTotal", 0) * 1024,
            swap_used_bytes=(kib.get("SwapTotal", 0) - kib.get("SwapFree", 0)) * 1024,
            gpu_shared_bytes=kib["NvMapMemUsed"] * 1024 if "NvMapMemUsed" in kib else None,
        )
