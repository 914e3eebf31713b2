"""Advertising the Wyoming server on the LAN as ``_wyoming._tcp.local.`` (mDNS, python-zeroconf),
so Home Assistant discovers the unit and offers to add it.

The name is ``wyoming_zeroconf`` (empty: not advertised; a name another unit holds gets a number
added). The address announced is the first of ``wyoming_zeroconf_interfaces`` when given (then
announcements go out on those interfaces only), else ``wyoming_host`` when it is an address
other than loopback or any, else the IPv4 address this machine reaches the mDNS group from
(found without sending anything).
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from zeroconf import InterfaceChoice
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from edge_asr.config import Config

log = logging.getLogger(__name__)
SERVICE_TYPE = "_wyoming._tcp.local."
MDNS_GROUP = "224.0.0.251"


def announced_address(config: Config) -> str:
    if config.wyoming_zeroconf_interfaces:
        return config.wyoming_zeroconf_interfaces[0]
    host = config.wyoming_host or config.host
    try:
        listening = ipaddress.ip_address(host)
    except ValueError:  # a name: the route to the group says which address
        listening = None
    if listening is not None and not (listening.is_unspecified or listening.is_loopback):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((MDNS_GROUP, 5353))  # a UDP connect picks the route; no packet is sent
        return probe.getsockname()[0]


class Discovery:
    def __init__(self, config: Config, port: int):
        self._config, self._port = config, port
        self._zeroconf: AsyncZeroconf | None = None
        self._info: AsyncServiceInfo | None = None

    async def start(self) -> None:
        name, interfaces = self._config.wyoming_zeroconf, list(self._config.wyoming_zeroconf_interfaces)
        address = announced_address(self._config)
        self._zeroconf = AsyncZeroconf(interfaces=interfaces or InterfaceChoice.All)
        self._info = AsyncServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            addresses=[socket.inet_aton(address)],
            port=self._port,
            server=f"{socket.gethostname()}.local.",
        )
        await self._zeroconf.async_register_service(self._info, allow_name_change=True)
        log.info("Wyoming server advertised as %r on %s:%d", self._info.name, address, self._port)

    async def stop(self) -> None:
        if self._zeroconf is None:
            return
        if self._info is not None:
            await self._zeroconf.async_unregister_service(self._info)
        await self._zeroconf.async_close()
