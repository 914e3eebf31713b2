"""HAProxy on ``deploy/haproxy.cfg`` as it is, in front of units on loopback (tests/test_fleet.py,
bench/fleet.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import requests

from tests.service import Service, free_port, wait_for

CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"


class Router:
    """Debian's haproxy in front of ``units`` (the file names two: a and b), up once both are."""

    def __init__(self, units: dict[str, Service], log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        addresses = {f"EDGE_ASR_UNIT_{name.upper()}": svc.url.removeprefix("http://") for name, svc in units.items()}
        env = {**os.environ, "EDGE_ASR_ROUTER": self.url.removeprefix("http://"), **addresses}
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"  # scripts/test.sh installs Debian's
        self.log = log.open("ab")
        self.process = subprocess.Popen([haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=self.log, stderr=self.log)
        wait_for(lambda: self.units_up() == set(units), timeout=30)

    def units_up(self) -> set[str]:
        """The units the router's health checks find ready, by what answers through it."""
        try:
            return {requests.get(self.url + "/readyz", timeout=2).headers.get("X-Edge-Asr-Unit") for _ in range(6)}
        except requests.RequestException:
            return set()

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()
