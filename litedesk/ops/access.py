"""Who may read C{/metrics}: loopback always, other clients only by C{--metrics-allow}.

The whole of 127.0.0.0/8 and ::1 count as loopback (and IPv4-mapped forms of
them): only a process on this machine can send from those addresses, which is
what matters for security.  Metrics name no peer, but they tell an outsider
how busy the server is and when it restarted, so they stay private by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IPNetwork", "client_allowed", "is_loopback"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_loopback(host: str) -> bool:
    """Whether C{host} (a textual address) is on this machine's loopback."""
    addr = _address(host)
    return addr is not None and addr.is_loopback


def client_allowed(host: str, allowed: Iterable[IPNetwork]) -> bool:
    """Whether a client at C{host} may read metrics: loopback, or in an allowed network."""
    addr = _address(host)
    if addr is None:
        return False
    if addr.is_loopback:
        return True
    return any(addr.version == net.version and addr in net for net in allowed)
