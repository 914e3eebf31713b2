"""Configuration in one place: defaults, then the TOML file, then environment variables.

Every other module receives a ``Config``; none reads the environment itself.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
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
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edge-asr"


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "edge-asr"


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


def _keys(value: Any) -> tuple[str, ...]:
    return tuple(k.strip() for k in (value.split(",") if isinstance(value, str) else value) if k.strip())


def key(
    default: Any,
    convert: Callable[[Any], Any],
    doc: str,
    *,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    **kw: Any,
) -> Any:
    """A configuration key: its default (or a ``factory`` of it), how a value from the file or the
    environment becomes one, and what it means. ``docs/configuration.md`` is made from these
    (``reference``); ``shown`` is the default as the reference writes it, where the value itself
    depends on the machine."""
    metadata = {"convert": convert, "doc": doc, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, **kw)
    return field(default=default, metadata=metadata, **kw)


@dataclass(frozen=True)
class Config:
    """Where things live, how the service listens, and the limits it keeps."""

    # paths
    cache_dir: Path = key(
        None,
        Path,
        "Prepared models, the conversion environment.",
        factory=_default_cache_dir,
        shown="`$XDG_CACHE_HOME/edge-asr`",
    )
    models_dir: Path | None = key(None, Path, "Prepared models.", shown="`<cache_dir>/models`")
    manifest: Path = key(BUILTIN_MANIFEST, Path, "The model manifest.", shown="the built-in `engines/models.toml`")
    state_dir: Path = key(
        None,
        Path,
        "Settings, footprints and the event log.",
        factory=_default_state_dir,
        shown="`$XDG_STATE_HOME/edge-asr`",
    )
    # service
    host: str = key("127.0.0.1", str, "Address to listen on (`0.0.0.0`: the LAN).")
    port: int = key(8000, int, "HTTP port.")
    unit_name: str = key(
        None,
        str,
        "This unit's name: in every response's `X-Edge-Asr-Unit` header, the metrics and the page (which unit of a "
        "fleet answered).",
        factory=socket.gethostname,
        shown="the host name",
    )
    threads: int = key(16, int, "HTTP handler threads (one process: CUDA does not survive fork); 2 kept for reads.")
    api_key: tuple[str, ...] = key(
        (),
        _keys,
        "When set, every endpoint but `/healthz` needs `Authorization: Bearer <key>`; several keys (one per"
        " device) separated by commas. Never shown in a log.",
        repr=False,
    )
    metrics_public: bool = key(False, _bool, "`/metrics` without a key (a Prometheus on the LAN without one).")
    max_upload_bytes: int = key(200 * 10**6, parse_size, "Largest upload; larger: 413.")
    max_json_bytes: int = key(10**6, parse_size, "Largest JSON body (chat, settings); larger: 413.")
    max_queue: int = key(8, int, "Requests that may wait per model behind the one it serves; more: 503 at once.")
    request_memory_budget: int = key(
        256 * 10**6, parse_size, "Decoded audio the front process holds at once, all requests together."
    )
    client_timeout: float = key(
        30.0,
        parse_duration,
        "Time a client may take to send a request's head, each part of its body, or to take each part of an "
        "answer; slower: the connection is closed.",
    )
    max_client_connections: int = key(
        64, int, "Connections one address may hold open at once (raise it behind a router); more are closed at once."
    )
    realtime_max_sessions: int = key(
        4, int, "Realtime API sessions (`/v1/realtime`) at once; more are refused at the upgrade with a 503."
    )
    realtime_idle_timeout: float = key(
        300.0, parse_duration, "A Realtime session without any event for this long is closed (its model freed)."
    )
    realtime_max_buffer: float = key(
        300.0,
        parse_duration,
        "Audio a Realtime session may hold that is not yet transcribed; more: an error, and the session closes.",
    )
    # browsers and names
    allowed_hosts: tuple[str, ...] = key(
        (),
        _keys,
        "Host names the service answers to besides IP addresses, `localhost` and the unit's own names, separated "
        "by commas; `*`: any (behind a router that passes its own name on).",
    )
    allowed_origins: tuple[str, ...] = key(
        (),
        _keys,
        "Web origins (`http://host:port`) besides the service's own whose pages may call it (CORS) and change "
        "what it holds, separated by commas; `*`: any.",
    )
    # Wyoming (Home Assistant's voice protocol)
    wyoming_port: int = key(10300, int, "Wyoming server's TCP port (speech-to-text, text-to-speech, the LLM); 0: off.")
    wyoming_host: str = key("", str, "Address the Wyoming server listens on.", shown="`host`")
    wyoming_allow: tuple[str, ...] = key(
        PRIVATE_NETWORKS,
        _keys,
        "Networks allowed to connect over Wyoming (it has no authentication), separated by commas.",
        shown="loopback and the private ranges",
    )
    wyoming_zeroconf: str = key(
        "", str, "Name the Wyoming server is advertised under (mDNS `_wyoming._tcp.local.`); empty: not advertised."
    )
    wyoming_zeroconf_interfaces: tuple[str, ...] = key(
        (), _keys, "Addresses of the interfaces discovery announces on, separated by commas.", shown="all"
    )
    wyoming_max_clients: int = key(16, int, "Wyoming connections at once; more are closed at once.")
    wyoming_timeout: float = key(
        60.0, parse_duration, "Time a Wyoming connection may stay silent, inside an event or between two."
    )
    # runtimes
    ort_threads: int = key(
        0, int, "CPU threads of a model worker (its ONNX Runtime pool, or llama.cpp); 0: one per physical core."
    )
    gpu_mem_limit: int = key(0, parse_size, "CUDA execution provider arena limit; 0: no limit.")
    llm_context: int = key(
        8192, int, "Most tokens an LLM's prompt and answer take together (llama.cpp holds its KV cache for all of it)."
    )
    # lifecycle
    memory_reserve: int = key(256 * 10**6, parse_size, "Loads never leave less memory available than this.")
    memory_budget: int = key(0, parse_size, "Memory all loaded models may take together; 0: what is available.")
    load_timeout: float = key(120.0, parse_duration, "Time a worker may take to load its model.")
    unload_timeout: float = key(
        20.0, parse_duration, "Time a worker may take to release its model before it is killed."
    )
    stall_timeout: float = key(120.0, parse_duration, "Time a worker may stay silent mid-request before it is killed.")
    wait_timeout: float = key(
        30.0, parse_duration, "Time a request waits for a loading or unloading model before a 503."
    )
    drain_timeout: float = key(
        30.0, parse_duration, "Longest `?wait=` an unload or a drain (`/api/system/drain`) may ask for."
    )
    drain_grace: float = key(
        5.0,
        parse_duration,
        "Time a drained unit still takes new requests, while routers' health checks notice it; then: 503 `draining`.",
    )
    failure_backoff: float = key(
        2.0, parse_duration, "Wait before reloading after a second failure in a row, doubling with each."
    )
    keep_alive: float = key(
        300.0, parse_duration, "Idle time before a model hibernates, unless its manifest entry or settings say."
    )
    spare_worker: bool = key(
        True, _bool, "Keep a worker process with its imports done and no model when memory allows: wakes use it."
    )
    prefetch: bool = key(
        True, _bool, "Load a request's next model (a pipeline's next stage) at once when it fits beside the others."
    )
    # supervisor
    memory_source: str = key("auto", str, "`auto`, `tegrastats`, `jtop` or `meminfo` (see `edge_asr/memory.py`).")
    tegrastats: str = key("tegrastats", str, "The tegrastats executable (a name on `PATH` or a path).")
    memory_interval_ms: int = key(1000, int, "How often memory is read and the supervisor looks at the models (ms).")
    memory_low_watermark: int = key(512 * 10**6, parse_size, "Below this much available, idle models hibernate...")
    memory_high_watermark: int = key(1024 * 10**6, parse_size, "...until this much is available again.")
    min_residency: float = key(30.0, parse_duration, "Time a freshly loaded model is safe from pressure hibernation.")
    thrash_window: float = key(
        120.0, parse_duration, "A reload this soon after a pressure hibernation counts as thrash (logged)."
    )

    @property
    def models_path(self) -> Path:
        return self.models_dir or self.cache_dir / "models"

    @property
    def user_manifest(self) -> Path:
        """Models the user imported; overlays the built-in manifest."""
        return self.models_path / "manifest.toml"


_CONVERT: dict[str, Callable[[Any], Any]] = {f.name: f.metadata["convert"] for f in fields(Config)}
# Every key can be set from the environment as EDGE_ASR_<KEY>.
_ENV = {f"EDGE_ASR_{name.upper()}": name for name in _CONVERT}


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from an optional TOML file (or ``EDGE_ASR_CONFIG``) and the environment.

    The TOML file holds the keys of ``Config``, at its top level or in a table named by the key's
    first word (``[memory] budget = "600MB"`` is ``memory_budget``, as is ``EDGE_ASR_MEMORY_BUDGET``);
    sizes may be written ``"600MB"`` and durations ``"5m"``.
    """
    environ = os.environ if environ is None else environ
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
    for network in config.wyoming_allow:
        ipaddress.ip_network(network)  # a ValueError names the bad one
    if config.memory_high_watermark < config.memory_low_watermark:
        raise ValueError("memory_high_watermark must not be below memory_low_watermark")
    if config.llm_context < 1:
        raise ValueError(f"llm_context must be a number of tokens, at least 1, not {config.llm_context}")
    return config


def reference(config_class: type = Config) -> str:
    """``docs/configuration.md``: every key with its environment variable, default and meaning.
    A key declared without ``key`` (so without a doc) is an error, not a blank row."""
    undocumented = [f.name for f in fields(config_class) if not f.metadata.get("doc")]
    if undocumented:
        raise ValueError(f"configuration keys without a doc: {', '.join(undocumented)} (declare them with key())")
    lines = [
        "# Configuration",
        "",
        "<!-- Generated from edge_asr/config.py by `python -m edge_asr.config > docs/configuration.md`;",
        "     tests/test_config.py fails when the two differ. -->",
        "",
        "Every key has a default; a TOML file (`edge-asr --config FILE serve`, or the path in",
        "`EDGE_ASR_CONFIG`) overrides it, and an environment variable `EDGE_ASR_<KEY>` overrides both.",
        "In the file a key stands at the top level or in a table named by its first word:",
        '`[memory] budget = "600MB"` is `memory_budget`, as is `EDGE_ASR_MEMORY_BUDGET=600MB`.',
        "Sizes are bytes or `600MB`, `1.5GiB`; durations are seconds or `30s`, `5m`, `1h`",
        "(`-1`: never, where a key says so). An unknown key in the file is an error.",
        "",
        "| key | environment variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for f in fields(config_class):
        lines.append(f"| `{f.name}` | `EDGE_ASR_{f.name.upper()}` | {_shown(f)} | {f.metadata['doc']} |")
    return "\n".join(lines) + "\n"


def _shown(f: Field) -> str:
    if f.metadata["shown"]:
        return f.metadata["shown"]
    value, convert = f.default, f.metadata["convert"]
    if value in (None, ()):
        return "none"
    if convert is parse_size:  # exact, in the largest unit that divides it
        units = ((10**9, "GB"), (10**6, "MB"), (10**3, "kB"))
        factor, unit = next(((n, u) for n, u in units if value >= n and value % n == 0), (1, ""))
        return f"`{value // factor}{unit}`"
    if convert is parse_duration:
        return f"`{value:g}s`"
    return f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _flatten(table: dict[str, Any]) -> dict[str, Any]:
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= {f"{key}_{inner}": v for inner, v in value.items()}
        else:
            flat[key] = value
    return flat


if __name__ == "__main__":
    sys.stdout.write(reference())
