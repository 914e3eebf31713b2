"""An unload's residue, judged once the memory reading settles.

Some kernels hand a dead process's pages back lazily: in a Firecracker VM (this development
machine) a 300 MB worker's exit shows a few kB at once and the rest at ~15 MB/s over half a minute.
Judged at the exit, every unload would cry residue for memory that came back; waited for under the
lifecycle lock, every eviction would take that long. So the unload's event carries what came back
at the exit, and a thread of its own follows the reading until it stops rising (or all of it is
back, or a bound), then records the residue in a second event (``memory settled``). Another
lifecycle move meanwhile moves memory too: then nothing is judged (a guess is worse than none)."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL = 0.5  # seconds between readings
QUIET = 10.0  # a reading that has not risen for this long has settled (this VM pauses for seconds)
BOUND = 60.0  # the longest a judgement follows the reading
SLACK = 4 * 2**20  # a rise smaller than this is noise


def settle(
    available: Callable[[], int],
    before: int,
    held: int,
    disturbed: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[int, float] | None:
    """Follow ``available()`` from an unload that started at ``before`` and should give back
    ``held`` bytes until all of it is back, or it has not risen for ``QUIET`` seconds, or
    ``BOUND``: (the bytes that came back, the seconds it took). None if ``disturbed()``."""
    start = clock()
    best = level = available() - before  # ``level``: where it stood at the last rise that counted
    risen_at = start
    while best < held - SLACK and clock() - risen_at < QUIET and clock() - start < BOUND:
        sleep(POLL)
        if disturbed():
            return None
        best = max(best, available() - before)
        if best > level + SLACK:  # a slow return counts too, once it adds up
            level, risen_at = best, clock()
    return best, round(clock() - start, 3)
