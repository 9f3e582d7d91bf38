"""What the client's connection was: its address for ip=1 (the socket peer, or a
forwarded header from a proxy we were told to trust: a header from anyone else is a
lie we must not believe), and whether it used HTTPS."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def parse_networks(specs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(s, strict=False) for s in specs)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(
    peer: str | None, headers: Mapping[str, str], trusted: tuple[str, ...]
) -> str | None:
    if peer is None:
        return None
    networks = parse_networks(trusted)
    if not networks or not _trusted(peer, networks):
        return peer
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        # Walk from the nearest hop outwards; the first address that is not one of our
        # proxies is the client (anything further left could be forged by it).
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _trusted(hop, networks):
                return hop if _is_ip(hop) else peer
    real = headers.get("x-real-ip", "").strip()
    if real and _is_ip(real):
        return real
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def client_used_https(
    scheme: str | None, peer: str | None, headers: Mapping[str, str], trusted: tuple[str, ...]
) -> bool:
    """Whether the client's own connection was HTTPS: ours, or a trusted proxy's
    X-Forwarded-Proto (TLS ended at the proxy)."""
    if scheme == "https":
        return True
    forwarded = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return forwarded == "https" and peer is not None and _trusted(peer, parse_networks(trusted))
