"""systemd's notify protocol (sd_notify(3)), without a library: a datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the service listens, ``STOPPING=1`` when it stops, ``WATCHDOG=1`` from the
supervisor's loop while it is healthy; with ``WatchdogSec=`` systemd restarts the service when
the pings stop. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(address)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify %r failed: %s", message, e)
        return False
    return True


class Watchdog:
    """Pings systemd's watchdog at most every third of ``WatchdogSec`` (``$WATCHDOG_USEC``), and
    only when the watchdog is meant for this process (``$WATCHDOG_PID``, when set)."""

    def __init__(self) -> None:
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        pid = os.environ.get("WATCHDOG_PID")
        self.enabled = usec > 0 and (not pid or int(pid) == os.getpid())
        self.period = usec / 3e6
        self._last = 0.0

    def ping(self) -> None:
        now = time.monotonic()
        if self.enabled and now - self._last >= self.period:
            notify("WATCHDOG=1")
            self._last = now
