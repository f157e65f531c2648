"""Where a module fetch may read from: this process's files, and which network addresses.

Module URLs come from people who may only create a Flight or an instance. Without a policy, a URL
could read a file of the service (``/proc/self/environ``, its ServiceAccount token) or make the
service call an address only it can reach (a cloud metadata endpoint, an admin port on loopback).
``FetchPolicy`` says what is allowed:

- ``allow_local_files``: local paths and ``file://`` URLs (``MODULE_ALLOW_LOCAL_FILES``);
- ``allowed_networks``: the non-public networks a fetch may connect to
  (``MODULE_FETCH_ALLOWED_NETWORKS``, CIDRs); public (globally routable) addresses are always
  allowed, everything else (loopback, link-local, private, shared, reserved) only when listed.

The network rule is enforced where the socket is made (``socket_factory``, given to every
aiohttp connector the fetchers open), so it holds for names that resolve to several addresses,
for IP literals and for every redirect. Built from the settings by ``atc.service.runtime``; used by
``atc.wasm.sources`` and ``atc.wasm.oci`` through ``atc.wasm.transfer.open_session``.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from aiohappyeyeballs import AddrInfoType

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY_NETWORK: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
SETTING_HINT = "MODULE_FETCH_ALLOWED_NETWORKS"


class DestinationRefusedError(OSError):
    """A module fetch tried to connect to an address the policy does not allow."""

    def __init__(self, address: str) -> None:
        super().__init__(
            errno.EACCES,
            f"connecting to {address} is not allowed: not a public address (allow its network with {SETTING_HINT})",
        )


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; ``ValueError`` names the first bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network in CIDR notation") from None
    return tuple(networks)


@dataclass(frozen=True)
class FetchPolicy:
    """What a module fetch may read. The default allows everything (for direct library use and tests);
    the services build theirs from settings whose defaults allow only public addresses and no files."""

    allow_local_files: bool = True
    allowed_networks: tuple[Network, ...] = ANY_NETWORK

    @classmethod
    def strict(cls, *, allow_local_files: bool = False, allowed_networks: Sequence[str] = ()) -> FetchPolicy:
        return cls(allow_local_files, parse_networks(allowed_networks))

    def permits(self, address: str) -> bool:
        """Whether a fetch may connect to ``address`` (an IP address as text)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            return True
        return any(ip.version == network.version and ip in network for network in self.allowed_networks)

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """Make the socket for one resolved address, or refuse it (aiohttp's connector calls this)."""
        family, type_, proto, _, sockaddr = addr_info
        if not self.permits(str(sockaddr[0])):
            raise DestinationRefusedError(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)
