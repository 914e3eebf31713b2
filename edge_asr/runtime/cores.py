"""How many threads a runtime that takes a number (llama.cpp, sherpa-onnx) gets by default."""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """The cores this process may run on, each counted once however many hardware threads it has
    (llama.cpp's threads spin on a core's sibling thread rather than share its work)."""
    cores = set()
    for cpu in os.sched_getaffinity(0):
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        cores.add(siblings.read_text().strip() if siblings.is_file() else str(cpu))
    return len(cores)
