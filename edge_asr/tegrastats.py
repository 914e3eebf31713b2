"""Parsing tegrastats lines, every published variant (see ``shared/tegrastats/samples.txt``).

A line is a run of fields separated by spaces. Each field is matched on its own, so an unknown
field (a new engine, a new rail) never breaks a reading; only ``RAM used/totalMB`` is required.
Variants handled: an optional leading ``MM-DD-YYYY HH:MM:SS``; SWAP present or absent; ``lfb
NxMB`` with 4/2/1 MB blocks or ``NxkB``; ``CPU [..]``/``cpu [..]`` with ``off`` cores;
``EMC``/``EMC_FREQ``; ``GR3D``/``GR3D_FREQ`` as ``3%@76``, ``0%``, ``0%@[0,0]`` or ``@[314,314]``;
temperatures ``name@41.5C`` (``-256C``: sensor off) or ``name@52.9C/52.9C``; rails ``VDD_IN
1931/1931`` (mW, no unit), ``2340mW/2340mW`` or ``5139mW/5139mW/5139mW``. RAM and SWAP are MiB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

MIB = 2**20

_TIMESTAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s+")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB\b")
_LFB = re.compile(r"\(lfb (\d+)x(\d+)([kM])B\)")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]", re.IGNORECASE)
_CORE = re.compile(r"(\d+)%")
_GPU = re.compile(r"\bGR3D(?:_FREQ)? (\d+)?%?")
_EMC = re.compile(r"\bEMC(?:_FREQ)? (\d+)%")
_TEMPERATURE = re.compile(r"(?:^|\s)([A-Za-z][\w]*)@(-?\d+(?:\.\d+)?)C(?:/-?\d+(?:\.\d+)?C)?(?=\s|$)")
_RAIL = re.compile(r"(?:^|\s)([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)")
SENSOR_OFF = -256.0


class NoRamField(ValueError):
    """The line has no RAM field: it is skipped (and counted) by the reader."""


@dataclass(frozen=True)
class TegrastatsReading:
    ram_used_bytes: int
    ram_total_bytes: int
    timestamp: datetime | None = None  # the device clock, when the line carries one (Orin on)
    swap_used_bytes: int | None = None  # None: no swap configured (the field is absent)
    swap_total_bytes: int | None = None
    swap_cached_bytes: int | None = None
    largest_free_block_bytes: int | None = None  # lfb: blocks times the block size
    cpu_loads: list[int | None] = field(default_factory=list)  # per core, None where the core is off
    gpu_load: int | None = None  # GR3D percent, when shown
    emc_load: int | None = None
    temperatures: dict[str, float | None] = field(default_factory=dict)  # None: the sensor is off
    power_mw: dict[str, int] = field(default_factory=dict)  # rail -> current draw

    @property
    def ram_available_bytes(self) -> int:
        return self.ram_total_bytes - self.ram_used_bytes


def parse_line(line: str) -> TegrastatsReading:
    """One tegrastats line; raises ``NoRamField`` when the line has none (garbage, truncated)."""
    line = line.strip()
    ram = _RAM.search(line)
    if not ram:
        raise NoRamField(f"no RAM field in tegrastats line {line[:80]!r}")
    stamp = _TIMESTAMP.match(line)
    lfb = _LFB.search(line)
    swap = _SWAP.search(line)
    cpu = _CPU.search(line)
    gpu = _GPU.search(line)
    emc = _EMC.search(line)
    return TegrastatsReading(
        ram_used_bytes=int(ram.group(1)) * MIB,
        ram_total_bytes=int(ram.group(2)) * MIB,
        timestamp=datetime.strptime(stamp.group(1), "%m-%d-%Y %H:%M:%S") if stamp else None,
        swap_used_bytes=int(swap.group(1)) * MIB if swap else None,
        swap_total_bytes=int(swap.group(2)) * MIB if swap else None,
        swap_cached_bytes=int(swap.group(3)) * MIB if swap and swap.group(3) else None,
        largest_free_block_bytes=(
            int(lfb.group(1)) * int(lfb.group(2)) * (MIB if lfb.group(3) == "M" else 1024) if lfb else None
        ),
        cpu_loads=[_core(core) for core in cpu.group(1).split(",")] if cpu else [],
        gpu_load=int(gpu.group(1)) if gpu and gpu.group(1) else None,
        emc_load=int(emc.group(1)) if emc else None,
        temperatures={
            name: None if float(value) == SENSOR_OFF else float(value) for name, value in _TEMPERATURE.findall(line)
        },
        power_mw={rail: int(now) for rail, now, *_ in _RAIL.findall(line) if rail not in ("RAM", "SWAP")},
    )


def _core(text: str) -> int | None:
    match = _CORE.search(text)
    return int(match.group(1)) if match else None
