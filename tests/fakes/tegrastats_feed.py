"""Feeding the fake ``tegrastats`` (tests/fakes/tegrastats): recorded AGX Orin lines, replayed
every ``INTERVAL_MS``, with RAM used raised to simulate memory pressure."""

from __future__ import annotations

import re
from pathlib import Path

FAKE_TEGRASTATS = Path(__file__).parent / "tegrastats"
SAMPLES = Path(__file__).parent.parent / "data" / "tegrastats-samples.txt"
RECORDED = [line for line in SAMPLES.read_text().splitlines() if line.startswith("05-09-2026")]  # AGX Orin, JP 6.2
INTERVAL_MS = 250


def replay(feed: Path, lines: list[str]) -> None:
    """Switch what the fake tegrastats prints from its next tick on (atomically)."""
    tmp = feed.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(feed)


def under_pressure(line: str, available_mib: int) -> str:
    """The recorded line with RAM used raised so that only ``available_mib`` remain."""
    used, total = (int(x) for x in re.search(r"RAM (\d+)/(\d+)MB", line).groups())
    return line.replace(f"RAM {used}/{total}MB", f"RAM {total - available_mib}/{total}MB")


def pressure_env(feed: Path, source: str = "tegrastats") -> dict[str, str]:
    """A service's environment: memory from the fake tegrastats replaying ``feed`` (or from
    ``source``) every INTERVAL_MS, watermarks 1 and 2 GiB, no minimum residency."""
    return {
        "EDGE_ASR_MEMORY_SOURCE": source,
        "EDGE_ASR_TEGRASTATS": str(FAKE_TEGRASTATS),
        "EDGE_ASR_MEMORY_INTERVAL_MS": str(INTERVAL_MS),
        "EDGE_ASR_MEMORY_LOW_WATERMARK": "1GiB",
        "EDGE_ASR_MEMORY_HIGH_WATERMARK": "2GiB",
        "EDGE_ASR_MIN_RESIDENCY": "0",
        "FAKE_TEGRASTATS_LINES": str(feed),
    }
