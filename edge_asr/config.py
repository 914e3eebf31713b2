"""Configuration in one place: defaults, then the TOML file, then environment variables.

Every other module receives a ``Config``; none reads the environment itself.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Jetson JetPack 6 ships Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_MANIFEST = REPO_ROOT / "engines" / "models.toml"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-asr"


@dataclass(frozen=True)
class Config:
    """Where things live and how runtimes are tuned."""

    cache_dir: Path = field(default_factory=_default_cache_dir)
    models_dir: Path | None = None  # default: <cache_dir>/models
    manifest: Path = BUILTIN_MANIFEST
    ort_threads: int = 0  # 0 = let ONNX Runtime decide (one per physical core)

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.cache_dir / "models"

    @property
    def user_manifest(self) -> Path:
        """Models the user imported; overlays the built-in manifest."""
        return self.models_path / "manifest.toml"


_ENV = {
    "EDGE_ASR_CACHE_DIR": ("cache_dir", Path),
    "EDGE_ASR_MODELS_DIR": ("models_dir", Path),
    "EDGE_ASR_MANIFEST": ("manifest", Path),
    "EDGE_ASR_ORT_THREADS": ("ort_threads", int),
}


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> Config:
    """Build the configuration from an optional TOML file (or ``EDGE_ASR_CONFIG``) and the environment.

    The TOML file holds the same keys as ``Config`` at its top level.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    path = path or environ.get("EDGE_ASR_CONFIG")
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        for key, value in data.items():
            if key not in Config.__dataclass_fields__:
                raise ValueError(f"{path}: unknown configuration key {key!r}")
            values[key] = value
    for var, (key, _) in _ENV.items():
        if environ.get(var):
            values[key] = environ[var]
    for key, convert in _ENV.values():
        if key in values:
            values[key] = convert(values[key])
    return Config(**values)
