"""Crash-safe file writes: a reader sees the old content or the new, never a torn file."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class WriteFailures:
    """Writes that may fail without stopping the service (a full or read-only state directory):
    each kind is logged once when it starts failing and once when it works again, not at every
    attempt, so a full disk does not also flood the journal."""

    def __init__(self, log: logging.Logger):
        self._log = log
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def guard(self, kind: str) -> Iterator[None]:
        """Run a write of ``kind``; an ``OSError`` is logged (once) and swallowed."""
        try:
            yield
        except OSError as e:
            with self._lock:
                first = kind not in self._failing
                self._failing.add(kind)
            if first:
                self._log.error("cannot write %s (%s); the service goes on without it", kind, e)
        else:
            with self._lock:
                recovered = kind in self._failing
                self._failing.discard(kind)
            if recovered:
                self._log.warning("writing %s works again", kind)
