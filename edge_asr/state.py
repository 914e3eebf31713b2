"""What the service remembers across restarts, in ``state_dir``: each model's settings and its
measured footprint. Every write is atomic (a crash leaves the old file or the new, never half)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from edge_asr.fsutil import atomic_write_text


class StateStore:
    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self._lock = threading.Lock()
        self._settings: dict[str, dict[str, Any]] = {}  # read once: this store is the only writer
        (self.dir / "settings").mkdir(parents=True, exist_ok=True)
        # Temp files of writes a crash interrupted (their target kept its previous content).
        for stale in [*self.dir.glob(".*.json.*"), *(self.dir / "settings").glob(".*.json.*")]:
            stale.unlink(missing_ok=True)

    def _settings_path(self, model_id: str) -> Path:
        return self.dir / "settings" / f"{model_id}.json"

    def settings(self, model_id: str) -> dict[str, Any]:
        """The user's settings for a model (empty if none were stored)."""
        with self._lock:
            if model_id not in self._settings:
                path = self._settings_path(model_id)
                self._settings[model_id] = json.loads(path.read_text()) if path.is_file() else {}
            return dict(self._settings[model_id])

    def save_settings(self, model_id: str, settings: dict[str, Any]) -> None:
        with self._lock:
            atomic_write_text(self._settings_path(model_id), json.dumps(settings, indent=1, sort_keys=True))
            self._settings[model_id] = dict(settings)

    def footprints(self) -> dict[str, int]:
        path = self.dir / "footprints.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save_footprint(self, model_id: str, footprint: int) -> None:
        with self._lock:
            footprints = self.footprints()
            footprints[model_id] = footprint
            atomic_write_text(self.dir / "footprints.json", json.dumps(footprints, indent=1, sort_keys=True))
