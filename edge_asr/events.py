"""Lifecycle events: one JSON line per model state transition, appended to ``events.jsonl`` in the
state directory, logged, and kept in memory for ``GET /api/events``."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("edge_asr.events")


class EventLog:
    def __init__(self, path: Path, keep: int = 1000):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []  # e.g. the metrics

    def record(self, model: str, from_state: str, to_state: str, reason: str, **details: Any) -> dict[str, Any]:
        event = {"time": time.time(), "model": model, "from": from_state, "to": to_state, "reason": reason, **details}
        line = json.dumps(event)
        with self._lock:
            self._recent.append(event)
            with open(self.path, "a") as f:
                f.write(line + "\n")
        log.info(line)
        for listener in self.listeners:
            listener(event)
        return event

    def recent(self, since: float = 0.0, model: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._recent if e["time"] > since and model in (None, e["model"])]
