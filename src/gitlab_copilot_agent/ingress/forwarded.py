"""The address to audit and rate-limit: the TCP peer, or behind trusted proxies the client."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_HOPS: Final = 64
"""A chain longer than this (all of it through trusted proxies) is garbled, not believed."""

_MAX_HOP_CHARS: Final = 45  # the longest textual IPv6 address (with an embedded IPv4 tail)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The peer, or behind trusted proxies the rightmost untrusted ``X-Forwarded-For`` hop.

    Every ``X-Forwarded-For`` line counts, joined in order: a proxy that adds
    its own line after the client's (instead of appending to it) would
    otherwise leave the client's forged line first. The chain is read right
    to left and believed only while each hop is a trusted proxy, so a client
    cannot choose its address by sending the header itself. A hop that is
    not an address stops the walk at the last address verified.

    Returns:
        A canonical address (``str(ipaddress.ip_address(...))``, at most 45
        characters), or ``"unknown"`` when there is no peer.
    """
    if isinstance(forwarded_for, str):
        forwarded_for = (forwarded_for,)
    address = _parse(peer)
    if address is None:
        return "unknown"
    if not forwarded_for or not _is_trusted(address, trusted):
        return str(address)
    hops = ",".join(forwarded_for).split(",")
    for walked, raw in enumerate(reversed(hops)):
        hop = _parse(raw.strip())
        if hop is None or walked >= MAX_HOPS:
            return str(address)  # garbled: keep the last address we could verify
        address = hop
        if not _is_trusted(hop, trusted):
            return str(hop)
    return str(address)


def rate_limit_key(source_ip: str) -> str:
    """What one source is for the rate limiter: an IPv4 address, or an IPv6 /64.

    One IPv6 host usually holds a whole /64, so keying on single IPv6
    addresses would give one sender 2^64 buckets.
    """
    address = _parse(source_ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return source_ip


def _parse(text: str | None) -> Address | None:
    # Bounded before parsing, and no IPv6 zone ids ("fe80::1%<anything>").
    if not text or len(text) > _MAX_HOP_CHARS or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # one address, one spelling (dual-stack sockets)
    return address


def _is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)
