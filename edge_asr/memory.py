"""Memory readings: how much the system has available, which decides admission, shows residue and
tells the supervisor when memory is under pressure.

Three sources behind one interface (``memory_source`` in the configuration):
- ``tegrastats`` (Jetson): its RAM line (``edge_asr.tegrastats``), RAM used counting the GPU's
  NvMap allocations; tegrastats runs as a child process and is restarted if it dies.
- ``jtop`` (jetson-stats), when its service runs: the same figures over its socket.
- ``meminfo``: ``/proc/meminfo`` (MemAvailable; NvMapMemUsed on Jetson kernels), everywhere.
``auto`` takes the first available of these. ``read()`` is the source's latest reading;
``sample()`` reads and keeps the reading in the ring buffer the page charts (the supervisor samples
once per interval, so a scrape of ``/metrics`` or a look at the API does not add points);
``measure()`` is the kernel's figure at this instant, which load and unload accounting need (a
tegrastats line can be an interval old).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import subprocess
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_asr.config import Config
from edge_asr.loops import LoopErrors
from edge_asr.tegrastats import NoRamField, parse_line

log = logging.getLogger(__name__)
JTOP_SOCKET = Path("/run/jtop.sock")

M_ARENA_MAX = -8  # glibc mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas. Each thread of a threaded server otherwise gets an
    arena that keeps its freed memory, and RSS creeps up with the number of threads that served."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)


def trim_heap() -> None:
    """Give glibc's freed heap back to the system. It keeps it otherwise (docs/lifecycle.md): after a
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
    source: str = "meminfo"

    def as_dict(self) -> dict:
        return asdict(self)


class MemorySource:
    """Base of the memory sources: ``read()`` gives the latest reading, ``sample()`` also keeps it
    in the history."""

    name = "abstract"

    def __init__(self, history: int = 600):
        self._history: deque[MemoryReading] = deque(maxlen=history)
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin producing readings (a child process, a client); a no-op for on-demand sources."""

    def stop(self) -> None:
        """Stop what ``start`` began."""

    def read(self) -> MemoryReading:
        raise NotImplementedError

    def sample(self) -> MemoryReading:
        """The latest reading, kept in the history."""
        return self._remember(self.read())

    def measure(self) -> MemoryReading:
        """The system's figure at this instant (lifecycle accounting), not remembered."""
        return meminfo()

    def loops(self) -> list[LoopErrors]:
        """The source's own threads' failed iterations (none for on-demand sources)."""
        return []

    def info(self) -> dict[str, Any]:
        """What the API shows about the source besides its readings."""
        return {"source": self.name}

    def _remember(self, reading: MemoryReading) -> MemoryReading:
        with self._lock:
            self._history.append(reading)
        return reading

    def history(self, since: float = 0.0) -> list[MemoryReading]:
        with self._lock:
            return [r for r in self._history if r.time > since]


def meminfo() -> MemoryReading:
    kib: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
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


class MemInfoSource(MemorySource):
    name = "meminfo"

    def read(self) -> MemoryReading:
        return meminfo()


class TegrastatsSource(MemorySource):
    """``tegrastats --interval MS`` as a child process; each line it prints becomes the latest
    reading and goes into the history. A line without RAM is skipped and counted; if tegrastats
    dies it is restarted (back-off up to 30 s); while it has said nothing for three intervals (on
    the monotonic clock: a unit without an RTC battery steps its wall clock), ``read()`` falls back
    to meminfo (and ``sample()`` keeps that reading). An exception in the reader is logged and
    counted (``errors``), and tegrastats is restarted as if it had died. tegrastats prints RAM,
    SWAP and CPU without root; only some rails and clocks need it."""

    name = "tegrastats"

    def __init__(self, executable: str, interval_ms: int, history: int = 600):
        super().__init__(history)
        self.executable, self.interval_ms = executable, interval_ms
        self.lines = self.skipped = self.restarts = 0
        self.errors = LoopErrors("tegrastats reader")
        self._latest: tuple[float, MemoryReading] | None = None  # (monotonic time, reading)
        self._process: subprocess.Popen | None = None
        self._process_lock = threading.Lock()  # a child is started and stopped under it, never both at once
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edge-asr-tegrastats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._process_lock:  # a start under way finishes first, and no other begins
            self._stopping.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
        self._thread.join(5)

    def read(self) -> MemoryReading:
        return self._fresh() or meminfo()

    def sample(self) -> MemoryReading:
        return self._fresh() or self._remember(meminfo())

    def _fresh(self) -> MemoryReading | None:
        """The latest line's reading, unless tegrastats has been silent for three intervals."""
        latest = self._latest
        if latest is None or time.monotonic() - latest[0] > 3 * self.interval_ms / 1000:
            return None
        return latest[1]

    def loops(self) -> list[LoopErrors]:
        return [self.errors]

    def info(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "executable": self.executable,
            "interval_ms": self.interval_ms,
            "lines": self.lines,
            "skipped_lines": self.skipped,
            "restarts": self.restarts,
        }

    def _run(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            read = False
            with self.errors.guard():
                read = self._follow()
            if self._stopping.is_set():
                break
            backoff = 1.0 if read else min(30.0, backoff * 2)
            self.restarts += 1
            self._stopping.wait(backoff)

    def _follow(self) -> bool:
        """Run tegrastats and take its lines until it ends (or ``stop``); whether it gave a
        reading. Whatever ends it, the child is gone and reaped, its pipe closed."""
        with self._process_lock:
            if self._stopping.is_set():
                return False
            try:
                process = subprocess.Popen(
                    [self.executable, "--interval", str(self.interval_ms)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    errors="replace",
                )
            except OSError as e:
                log.warning("cannot run %s: %s", self.executable, e)
                return False
            self._process = process
        assert process.stdout is not None
        read = False
        try:
            for line in process.stdout:
                read = self._take(line) or read
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdout.close()
            if not self._stopping.is_set():
                log.warning("tegrastats exited with status %s; restarting it", process.returncode)
        return read

    def _take(self, line: str) -> bool:
        try:
            t = parse_line(line)
        except NoRamField:
            self.skipped += 1
            return False
        self.lines += 1
        reading = MemoryReading(
            time=time.time(),
            total_bytes=t.ram_total_bytes,
            available_bytes=t.ram_available_bytes,
            used_bytes=t.ram_used_bytes,
            swap_total_bytes=t.swap_total_bytes or 0,
            swap_used_bytes=t.swap_used_bytes or 0,
            source=self.name,
        )
        self._latest = (time.monotonic(), self._remember(reading))
        return True


class JtopSource(MemorySource):
    """jetson-stats' ``jtop`` service (jtop/core/memory.py: RAM and SWAP in kB, RAM ``used``
    without buffers and cache, ``shared`` the GPU's NvMap). If the service goes away, readings
    fall back to /proc/meminfo until it is back."""

    name = "jtop"

    def __init__(self, interval_ms: int, history: int = 600):
        super().__init__(history)
        from jtop import jtop  # optional dependency: jetson-stats, on Jetson only

        self._jetson = jtop(interval=interval_ms / 1000)

    def start(self) -> None:
        self._jetson.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._jetson.close()

    def read(self) -> MemoryReading:
        try:
            ram, swap = self._jetson.memory["RAM"], self._jetson.memory.get("SWAP", {})
        except Exception:  # JtopException: the jtop service stopped or restarted
            return meminfo()
        total, used = ram["tot"] * 1024, ram["used"] * 1024
        return MemoryReading(
            time=time.time(),
            total_bytes=total,
            available_bytes=total - used,
            used_bytes=used,
            swap_total_bytes=swap.get("tot", 0) * 1024,
            swap_used_bytes=swap.get("used", 0) * 1024,
            gpu_shared_bytes=ram["shared"] * 1024 if "shared" in ram else None,
            source=self.name,
        )


def create_memory_source(config: Config) -> MemorySource:
    """The configured source, started; ``auto`` = tegrastats if installed, else jtop if its service
    runs, else meminfo. A source that cannot start falls back to meminfo, with a warning."""
    choice = config.memory_source
    tegrastats = shutil.which(config.tegrastats)
    if choice == "auto":
        choice = "tegrastats" if tegrastats else "jtop" if JTOP_SOCKET.exists() else "meminfo"
    source: MemorySource
    try:
        if choice == "tegrastats":
            if not tegrastats:
                raise FileNotFoundError(f"{config.tegrastats} not found")
            source = TegrastatsSource(tegrastats, config.memory_interval_ms)
        elif choice == "jtop":
            source = JtopSource(config.memory_interval_ms)
        else:
            source = MemInfoSource()
        source.start()
    except Exception as e:  # jtop missing or its JtopException, tegrastats absent
        log.warning("memory source %s unavailable (%s: %s); reading /proc/meminfo", choice, type(e).__name__, e)
        source = MemInfoSource()
    return source
