"""The routers docs/fleet.md recommends, each run on its file under ``deploy/`` as it is, in front of
units on loopback (tests/test_fleet.py, bench/fleet.py): Debian's HAProxy, and the LiteLLM proxy in
a virtual environment of its own (``tests.peers``). Both say which unit answered a request."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import requests

from edge_asr.config import Config
from tests.peers import PEER_ENV, peer_python
from tests.service import Service, free_port, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
LITELLM = ["litellm[proxy]==1.100.5"]  # 1.108 and later need packages PyPI does not have
# LiteLLM fetches its model price list from GitHub and reports usage unless told not to: loopback only
LITELLM_OFFLINE = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}


class Router:
    """A router process in front of ``units`` (named ``a`` and ``b``, as the files under ``deploy/``
    name them), up once it answers."""

    name = ""
    rejoin_s = 0.0  # the longest a unit back from an upgrade waits before the router sends it work again

    def __init__(self, command: list[str], env: dict[str, str], log: Path, alive: str):
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)
        try:
            wait_for(lambda: self._answers(alive), timeout=120)
        except BaseException:
            self.close()
            raise

    def _answers(self, path: str) -> bool:
        assert self.process.poll() is None, "the router exited: see its log"
        try:
            return requests.get(self.url + path, timeout=2).ok
        except requests.RequestException:
            return False

    def unit(self, response: requests.Response) -> str:
        """The unit that answered ``response`` (its ``X-Edge-Asr-Unit``), or the body of an error."""
        return response.headers.get("X-Edge-Asr-Unit") or response.text[:200]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


class HAProxy(Router):
    name, rejoin_s = "haproxy", 10.0  # two health checks a second apart

    def __init__(self, units: dict[str, Service], log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        addresses = {f"EDGE_ASR_UNIT_{name.upper()}": svc.url.removeprefix("http://") for name, svc in units.items()}
        env = {**os.environ, "EDGE_ASR_ROUTER": self.url.removeprefix("http://"), **addresses}
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"  # scripts/test.sh installs Debian's
        super().__init__([haproxy, "-db", "-f", str(DEPLOY / "haproxy.cfg")], env, log, "/readyz")


class LiteLLMProxy(Router):
    name, rejoin_s = "litellm", 10.0  # its cooldown_time

    def __init__(self, units: dict[str, Service], log: Path, config: Config):
        self.url = f"http://127.0.0.1:{free_port()}"
        litellm = peer_python(config, "litellm", LITELLM).parent / "litellm"
        addresses = {f"EDGE_ASR_UNIT_{name.upper()}": svc.url + "/v1" for name, svc in units.items()}
        self._units = {svc.url + "/v1": name for name, svc in units.items()}
        env = {**PEER_ENV, **LITELLM_OFFLINE, **addresses, "EDGE_ASR_UNIT_KEY": "unused"}
        command = [str(litellm), "--config", str(DEPLOY / "litellm.yaml"), "--host", "127.0.0.1"]
        super().__init__(
            [*command, "--port", self.url.rsplit(":", 1)[1], "--telemetry", "False"], env, log, "/health/liveliness"
        )

    def unit(self, response: requests.Response) -> str:
        """LiteLLM keeps the unit's headers to itself; its own says which deployment answered."""
        return self._units.get(response.headers.get("x-litellm-model-api-base", ""), response.text[:200])
