"""Enrolled voices: the named voice embeddings a unit keeps (``/api/speakers``), so that a meeting
room names its regular speakers without sending their clips each time. Only the embeddings are
kept (192 numbers a voice, not the audio), in ``<state_dir>/voices.json``, written atomically."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from edge_asr.errors import InvalidRequest, StorageFull
from edge_asr.fsutil import atomic_write_text

MAX_VOICES = 32


class EnrolledVoices:
    def __init__(self, state_dir: Path):
        self.path = state_dir / "voices.json"
        self._lock = threading.Lock()
        self._voices: dict[str, dict[str, Any]] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def listed(self) -> list[dict[str, Any]]:
        """Each voice's name, the seconds of speech it was made from and when, without the numbers."""
        with self._lock:
            return [
                {"name": n, "speech": v["speech"], "enrolled_at": v["enrolled_at"]} for n, v in self._voices.items()
            ]

    def embeddings(self) -> dict[str, list[float]]:
        with self._lock:
            return {name: v["voice"] for name, v in self._voices.items()}

    def enrol(self, name: str, voice: list[float], speech: float) -> bool:
        """Keep ``voice`` under ``name`` (a name enrolled again takes the new voice); whether it
        replaced one. A full store, or one that cannot be written, keeps what it had."""
        with self._lock:
            if name not in self._voices and len(self._voices) >= MAX_VOICES:
                raise InvalidRequest(f"{MAX_VOICES} voices are enrolled: delete one first")
            entry = {"voice": voice, "speech": speech, "enrolled_at": round(time.time(), 3)}
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
