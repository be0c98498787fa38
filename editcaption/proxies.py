"""Who is asking: the client's address, behind reverse proxies only when they are trusted.

`X-Forwarded-For` is written by whoever sends the request, so it is read only when the TCP peer is a
trusted proxy (a configured CIDR), and then from the right: each proxy appends the address it saw,
so the first entry from the right that is not itself a trusted proxy is the client. With no trusted
proxies (the default) the header is ignored and the peer is the client. Both HTTP services (the
review app, the Serve ingress) throttle and audit by this address; the servers in front of them
(uvicorn, Ray Serve's proxy) must not rewrite the peer from the header themselves (see docs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) as networks; a clear ValueError names a malformed one."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError as e:
            raise ValueError(f"trusted proxy {cidr!r} is not an IP address or CIDR: {e}") from None
    return tuple(networks)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address from a peer or forwarded entry (`1.2.3.4`, `1.2.3.4:5`, `[::1]:5`, `::1`); None if not one."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: `peer` unless it is a trusted proxy, then the right-most entry of the
    `X-Forwarded-For` values that is not a trusted proxy. An unparsable entry ends the walk at the
    last trusted hop (a proxy we trust wrote garbage: we know no more than its address)."""
    peer_ip = _address(peer or "")
    if peer_ip is None:
        return peer or "unknown"
    current = peer_ip
    entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
    while _trusted(current, trusted) and entries:
        hop = _address(entries.pop())
        if hop is None:
            break
        current = hop
    return str(current)


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in trusted)
