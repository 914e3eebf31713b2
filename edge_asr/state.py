"""What the service remembers across restarts, in ``state_dir``: each model's settings and its
measured footprint. Every write is atomic (a crash leaves the old file or the new, never half).

A settings write that fails is the user's to know (``StorageFull``, and the stored settings stay
as they were); a footprint write that fails is logged once and the service goes on with the
figure in memory (admission still has it until a restart)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_asr.errors import StorageFull
from edge_asr.fsutil import WriteFailures, atomic_write_text

log = logging.getLogger(__name__)


class StateStore:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self._lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}  # read once: this store is the only writer
        self._write_failures = WriteFailures(log)
        (self.dir / "settings").mkdir(parents=True, exist_ok=True)
        # Temp files of writes a crash interrupted (their target kept its previous content).
        for stale in [*self.dir.glob(".*.json.*"), *(self.dir / "settings").glob(".*.json.*")]:
            stale.unlink(missing_ok=True)

    def _settings_path(self, model_id: str) -> Path:
        return self.dir / "settings" / f"{model_id}.json"

    def settings(self, model_id: str) -> dict[str, Any]:
        """The user's settings for a model (empty if none were stored)."""
        with self._lock:
            return dict(self._stored(model_id))

    def _stored(self, model_id: str) -> dict[str, Any]:
        """(Under the lock.) The model's stored settings, read from disk once."""
        if model_id not in self._settings:
            path = self._settings_path(model_id)
            self._settings[model_id] = json.loads(path.read_text()) if path.is_file() else {}
        return self._settings[model_id]

    def update_settings(self, model_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Store ``change(stored settings)``: read, changed and written under one lock (two
        updates never lose one another); what ``change`` raises leaves everything as it was."""
        with self._lock:
            settings = change(dict(self._stored(model_id)))
            try:
                atomic_write_text(self._settings_path(model_id), json.dumps(settings, indent=1, sort_keys=True))
            except OSError as e:
                raise StorageFull(f"the settings could not be stored ({e.strerror}); they are unchanged") from None
            self._settings[model_id] = dict(settings)

    def footprints(self) -> dict[str, int]:
        path = self.dir / "footprints.json"
        try:
            return {k: int(v) for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
        except (ValueError, AttributeError, OSError):
            log.warning("%s is unreadable; footprints will be measured again", path)
            return {}

    def save_footprints(self, footprints: dict[str, int]) -> None:
        with self._lock, self._write_failures.guard(f"footprints to {self.dir}"):
            atomic_write_text(self.dir / "footprints.json", json.dumps(footprints, indent=1, sort_keys=True))
