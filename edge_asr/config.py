"""Configuration in one place: defaults, then the TOML file, then environment variables.

Every other module receives a ``Config``; none reads the environment itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_asr.units import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Jetson JetPack 6 ships Python 3.10
    import tomli as tomllib

# engines/models.toml, reached through the package (edge_asr/models.toml links to it, and a wheel
# carries its content), so an installed wheel serves the same models as a checkout.
BUILTIN_MANIFEST = Path(__file__).resolve().parent / "models.toml"
MEMORY_SOURCES = ("auto", "tegrastats", "jtop", "meminfo")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-asr"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "edge-asr"


@dataclass(frozen=True)
class Config:
    """Where things live, how the service listens, and the limits it keeps."""

    # paths
    cache_dir: Path = field(default_factory=_default_cache_dir)
    models_dir: Path | None = None  # default: <cache_dir>/models
    manifest: Path = BUILTIN_MANIFEST
    state_dir: Path = field(default_factory=_default_state_dir)  # settings, footprints, events
    # service
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 16  # HTTP worker threads (one process: CUDA does not survive fork); 2 kept for reads
    # When set, every endpoint but /healthz needs "Authorization: Bearer <key>"; several keys
    # (one per client device) are separated by commas. Never shown in a repr or a log.
    api_key: tuple[str, ...] = field(default=(), repr=False)
    metrics_public: bool = False  # /metrics without a key (a Prometheus on the LAN without one)
    max_upload_bytes: int = 200 * 10**6
    max_json_bytes: int = 10**6  # a JSON body (chat, settings) larger than this is a 413
    max_queue: int = 8  # requests that may wait per model behind the one it serves; more: 503 at once
    request_memory_budget: int = 256 * 10**6  # decoded audio the front process holds at once, all requests
    # runtimes
    ort_threads: int = 0  # 0 = let ONNX Runtime decide (one per physical core)
    gpu_mem_limit: int = 0  # CUDA execution provider arena limit in bytes; 0 = no limit
    # lifecycle
    memory_reserve: int = 256 * 10**6  # loads never leave less available than this
    memory_budget: int = 0  # bytes all loaded models may take together; 0 = what is available
    load_timeout: float = 120.0  # seconds a worker may take to load its model
    unload_timeout: float = 20.0  # seconds a worker may take to release its model before it is killed
    stall_timeout: float = 120.0  # seconds a worker may stay silent mid-request before it is killed
    wait_timeout: float = 30.0  # seconds a request waits for a loading/unloading model before 503
    drain_timeout: float = 30.0  # longest ?wait= an unload may ask for
    failure_backoff: float = 2.0  # seconds before reloading after a second crash in a row, doubling
    keep_alive: float = 300.0  # idle seconds before a model hibernates, unless its manifest/settings say
    # supervisor
    memory_source: str = "auto"  # auto | tegrastats | jtop | meminfo (see edge_asr.memory)
    tegrastats: str = "tegrastats"  # the executable (a name on PATH or a path)
    memory_interval_ms: int = 1000  # how often memory is read and the supervisor looks at the models
    memory_low_watermark: int = 512 * 10**6  # below this much available, idle models hibernate...
    memory_high_watermark: int = 1024 * 10**6  # ...until this much is available again
    min_residency: float = 30.0  # seconds a freshly loaded model is safe from pressure hibernation
    thrash_window: float = 120.0  # a reload this soon after a pressure hibernation counts as thrash

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.cache_dir / "models"

    @property
    def user_manifest(self) -> Path:
        """Models the user imported; overlays the built-in manifest."""
        return self.models_path / "manifest.toml"


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "cache_dir": Path,
    "models_dir": Path,
    "manifest": Path,
    "state_dir": Path,
    "host": str,
    "port": int,
    "threads": int,
    "api_key": lambda v: tuple(k.strip() for k in (v.split(",") if isinstance(v, str) else v) if k.strip()),
    "metrics_public": lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes"),
    "max_upload_bytes": parse_size,
    "max_json_bytes": parse_size,
    "max_queue": int,
    "request_memory_budget": parse_size,
    "ort_threads": int,
    "gpu_mem_limit": parse_size,
    "memory_reserve": parse_size,
    "memory_budget": parse_size,
    "load_timeout": parse_duration,
    "unload_timeout": parse_duration,
    "stall_timeout": parse_duration,
    "wait_timeout": parse_duration,
    "drain_timeout": parse_duration,
    "failure_backoff": parse_duration,
    "keep_alive": parse_duration,
    "memory_source": str,
    "tegrastats": str,
    "memory_interval_ms": int,
    "memory_low_watermark": parse_size,
    "memory_high_watermark": parse_size,
    "min_residency": parse_duration,
    "thrash_window": parse_duration,
}
# Every key can be set from the environment as EDGE_ASR_<KEY>.
_ENV = {f"EDGE_ASR_{key.upper()}": key for key in _CONVERT}


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from an optional TOML file (or ``EDGE_ASR_CONFIG``) and the environment.

    The TOML file holds the keys of ``Config``, at its top level or in a table named by the key's
    first word (``[memory] budget = "600MB"`` is ``memory_budget``, as is ``EDGE_ASR_MEMORY_BUDGET``);
    sizes may be written ``"600MB"`` and durations ``"5m"``.
    """
    environ = os.environ if environ is None else environ
    assert {f.name for f in fields(Config)} == set(_CONVERT), "every Config field needs a converter"
    values: dict[str, Any] = {}
    path = path or environ.get("EDGE_ASR_CONFIG")
    if path:
        with open(path, "rb") as f:
            for key, value in _flatten(tomllib.load(f)).items():
                if key not in _CONVERT:
                    raise ValueError(f"{path}: unknown configuration key {key!r}")
                values[key] = value
    for var, key in _ENV.items():
        if environ.get(var):
            values[key] = environ[var]
    config = Config(**{key: _CONVERT[key](value) for key, value in values.items()})
    if config.memory_source not in MEMORY_SOURCES:
        raise ValueError(f"memory_source must be one of {', '.join(MEMORY_SOURCES)}, not {config.memory_source!r}")
    if config.memory_high_watermark < config.memory_low_watermark:
        raise ValueError("memory_high_watermark must not be below memory_low_watermark")
    return config


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= {f"{key}_{inner}": v for inner, v in value.items()}
        else:
            flat[key] = value
    return flat
