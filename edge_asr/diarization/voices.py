"""Enrolled voices: the named voice embeddings a unit keeps (``/api/speakers``), so that a meeting
room names its regular speakers without sending their clips each time. Only the embeddings are
kept (192 numbers a voice, not the audio), with the model that made them (another model's voices
are not comparable), in ``<state_dir>/voices.json``, written atomically. An unreadable file is
set aside (``voices.json.unreadable``) and the unit starts with none."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_asr.errors import InvalidRequest, StorageFull
from edge_asr.fsutil import atomic_write_text

MAX_VOICES = 32
log = logging.getLogger(__name__)


class EnrolledVoices:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "voices.json"
        self._lock = threading.Lock()
        self._voices: dict[str, dict[str, Any]] = {}
        try:
            self._voices = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (ValueError, OSError) as e:
            log.warning("%s is unreadable (%s): set aside, no voices enrolled", self.path, e)
            self.path.replace(self.path.with_name("voices.json.unreadable"))

    def listed(self) -> list[dict[str, Any]]:
        """Each voice's name, its model, the seconds of speech it was made from and when (not the
        numbers)."""
        with self._lock:
            return [
                {"name": n, **{k: v[k] for k in ("model", "speech", "enrolled_at")}} for n, v in self._voices.items()
            ]

    def embeddings(self, model_id: str) -> dict[str, list[float]]:
        """The voices ``model_id`` made, by name."""
        with self._lock:
            return {name: v["voice"] for name, v in self._voices.items() if v["model"] == model_id}

    def enrol(self, name: str, model_id: str, voice: list[float], speech: float) -> bool:
        """Keep ``voice`` under ``name`` (a name enrolled again takes the new voice); whether it
        replaced one. A full store, or one that cannot be written, keeps what it had."""
        with self._lock:
            if name not in self._voices and len(self._voices) >= MAX_VOICES:
                raise InvalidRequest(f"{MAX_VOICES} voices are enrolled: delete one first")
            entry = {"model": model_id, "voice": voice, "speech": speech, "enrolled_at": round(time.time(), 3)}
            self._write({**self._voices, name: entry})
            replaced = name in self._voices
            self._voices[name] = entry
            return replaced

    def delete(self, name: str) -> bool:
        with self._lock:
            if name not in self._voices:
                return False
            self._write({n: v for n, v in self._voices.items() if n != name})
            del self._voices[name]
            return True

    def _write(self, voices: dict[str, dict[str, Any]]) -> None:
        try:
            atomic_write_text(self.path, json.dumps(voices))
        except OSError as e:
            raise StorageFull(f"the voices could not be stored ({e.strerror}); they are unchanged") from None
