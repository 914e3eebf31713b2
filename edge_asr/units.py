"""Parsing the human units of the configuration and the API: sizes ("600MB") and durations ("5m")."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_size(value: str | int | float) -> int:
    """Bytes from an int or a string like ``600MB``, ``1.5GiB``, ``4096``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 600MB, 2GiB or a number of bytes)")
    unit = (match.group(2) or "").lower().removesuffix("b")
    return int(float(match.group(1)) * _SIZE_FACTORS[unit])


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number or a Go-style duration (``90``, ``"5m"``, ``"1h30m"``, ``"-1"``).
    Negative means "forever" (Ollama's keep_alive semantics)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 1h, 0 or -1)")
    return sign * sum(float(n) * _SECONDS[u] for n, u in parts)


def format_size(size: float) -> str:
    """Bytes as people read them, in the decimal units ``parse_size`` takes: ``100 kB``,
    ``200 MB``, ``1.5 GB`` (three significant figures at most; a negative size keeps its sign)."""
    for unit, factor in (("B", 1), ("kB", 10**3), ("MB", 10**6), ("GB", 10**9)):
        shown = f"{size / factor:.3g}"
        if abs(float(shown)) < 1000:  # 999.6 MB rounds to "1e+03": it is 1 GB
            return f"{shown} {unit}"
    return f"{size / 10**12:.3g} TB"
