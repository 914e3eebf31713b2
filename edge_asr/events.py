"""Lifecycle events: one JSON line per settled model state change (and per thing a ready model
found while serving, such as a detected language: from and to ``ready``), appended to
``events.jsonl`` in the state directory, logged, and kept in memory for ``GET /api/events``.

The file rotates (``events.jsonl.1`` ... ``.3``, at ``MAX_FILE_BYTES`` each) so months on a shelf
do not fill the disk; a write that fails (a full disk) is logged once and the event still reaches
the log, the listeners and the API.

The lifecycle *stages* its events under its condition (cheap: stamped, in the API's list at once)
and *delivers* them once it has released it: the disk write, the log line and the listeners never
hold up a status read or a lease, a listener that raises is logged and changes nothing, and
delivery keeps the order the events were staged in."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_asr.fsutil import WriteFailures

log = logging.getLogger("edge_asr.events")
MAX_FILE_BYTES = 4 * 10**6
KEEP_FILES = 3  # rotated files besides the current one


class EventLog:
    def __init__(self, path: Path, keep: int = 1000, max_file_bytes: int = MAX_FILE_BYTES):
        self.path = path
        self.max_file_bytes = max_file_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()  # the lists
        self._staged: deque[dict[str, Any]] = deque()  # stamped, not yet delivered
        self._delivering = threading.Lock()  # one deliverer at a time: the order holds
        self._stager = threading.local()  # ``staged``: this thread has staged events since it delivered
        self._write_failures = WriteFailures(log)
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # e.g. the metrics

    def record(self, model: str, from_state: str, to_state: str, reason: str, **details: Any) -> dict[str, Any]:
        """Stage the event and deliver it now (a caller that holds no lock)."""
        event = self.stage(model, from_state, to_state, reason, **details)
        self.deliver()
        return event

    def stage(self, model: str, from_state: str, to_state: str, reason: str, **details: Any) -> dict[str, Any]:
        """Stamp the event and list it for the API; ``deliver`` writes it and tells the listeners."""
        with self._lock:  # stamped under the lock, so times come in the order of the log (readers follow by time)
            event = {"time": time.time(), "model": model, "from": from_state, "to": to_state, "reason": reason}
            event |= details
            self._recent.append(event)
            self._staged.append(event)
        self._stager.staged = True
        return event

    def deliver(self) -> None:
        """Write, log and tell the listeners of every staged event, in the order staged. It never
        waits: while another thread delivers, that one takes these events too. Only a thread that
        staged delivers (a status read that happens to release the lock does not)."""
        if not getattr(self._stager, "staged", False):
            return
        self._stager.staged = False
        while self._staged and self._delivering.acquire(blocking=False):
            try:
                while event := self._next_staged():
                    self._deliver(event)
            finally:
                self._delivering.release()  # an event staged since the last look is taken by the loop

    def _next_staged(self) -> dict[str, Any] | None:
        with self._lock:
            return self._staged.popleft() if self._staged else None

    def _deliver(self, event: dict[str, Any]) -> None:
        """Whatever fails here is logged: the event stays in the API's list, the next ones go on."""
        try:
            line = json.dumps(event, default=repr)
            with self._write_failures.guard(f"events to {self.path}"):
                self._append(line + "\n")
            log.info(line)
        except Exception:
            log.exception("an event could not be written: %r", event)
            line = repr(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("an event listener failed on %s", line)

    def _append(self, line: str) -> None:
        """(Delivering.) Append, rotating first when the file is full."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size + len(line) > self.max_file_bytes:
            for n in range(KEEP_FILES - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        with open(self.path, "a") as f:
            f.write(line)

    def recent(self, since: float = 0.0, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._recent if e["time"] > since and model in (None, e["model"])]
