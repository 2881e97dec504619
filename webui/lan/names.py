"""The names this machine answers to on its networks: the host name, `localhost` and every local
IPv4/IPv6 address (psutil's view of the interfaces), and the URLs a phone on the network would
open, best first. Nothing here sends a packet.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import psutil

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
PROBE = ("192.0.2.1", 9)  # TEST-NET-1: connecting a UDP socket only picks a route, nothing is sent


@dataclass(frozen=True)
class LocalNames:
    """dns: host names (the machine's, its `.local` name, `localhost`); ips: every local address, loopback included."""

    dns: tuple[str, ...]
    ips: tuple[Address, ...]

    def urls(self, port: int, scheme: str = "https") -> list[str]:
        """Where a phone on the network reaches the app: the addresses other machines can use
        (not loopback, not IPv6 link-local, which needs an interface name), the one of the
        default route first, IPv4 before IPv6."""
        primary = default_route_address()
        usable = [ip for ip in self.ips if not ip.is_loopback and not ip.is_link_local]
        usable.sort(key=lambda ip: (ip != primary, ip.version, ip.packed))
        return [f"{scheme}://{ip if ip.version == 4 else f'[{ip}]'}:{port}/" for ip in usable]


def local_names() -> LocalNames:
    """This machine's names now (the certificate is renewed when they change)."""
    ips: set[Address] = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    ips.add(ipaddress.ip_address(address.address.split("%", 1)[0]))
                except ValueError:
                    continue
    hostname = socket.gethostname().strip().rstrip(".").lower()
    mdns = f"{hostname}.local" if hostname and "." not in hostname else ""  # Bonjour / Avahi's name
    dns = tuple(dict.fromkeys(name for name in (hostname, mdns, "localhost") if name and name.isascii()))
    return LocalNames(dns, tuple(sorted(ips, key=lambda ip: (ip.version, ip.packed))))


def default_route_address() -> Address | None:
    """The address this machine sends from by default (a UDP socket's source after `connect`,
    which sends nothing), or None without a route."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(PROBE)
            return ipaddress.ip_address(s.getsockname()[0])
    except OSError:
        return None
