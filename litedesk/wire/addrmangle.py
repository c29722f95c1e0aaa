"""RustDesk's AddrMangle address encoding (hbb_common ``lib.rs``).

IPv4 endpoints are scrambled with a microsecond timestamp into a <=11-byte
little-endian integer; IPv6 endpoints are 16 address bytes plus a
little-endian port.  Addresses are handled as C{(host, port)} tuples whose
host is the text form that C{ipaddress} produces, after L{normalize_host}.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import time
from collections.abc import Callable

from litedesk.wire.address import Address

_MASK32 = 0xFFFFFFFF
_MASK128 = (1 << 128) - 1


def normalize_host(host: str) -> str:
    """Map v4-mapped and v4-compatible IPv6 addresses to IPv4 text.

    Dual-stack listeners report IPv4 peers as C{::ffff:a.b.c.d}; RustDesk keys
    its maps by the IPv4 form (Rust's C{to_ipv4}, loopback C{::1} excluded),
    and so must we.  Scope ids (C{fe80::1%eth0}) are dropped.

    This runs for every datagram the rendezvous server receives, so the two
    forms sockets actually produce (C{a.b.c.d} and C{::ffff:a.b.c.d}, both
    canonical as the kernel writes them) skip the C{ipaddress} parse.
    """
    if ":" not in host:
        if host.count(".") == 3 and host.replace(".", "").isdigit():
            return host
    elif host.startswith("::ffff:") and host.count(".") == 3 and ":" not in host[7:]:
        return host[7:]
    return _normalize_slow(host)


@functools.lru_cache(maxsize=4096)
def _normalize_slow(host: str) -> str:
    bare = host.split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        packed = ip.packed
        if packed[:12] == bytes(12):
            return str(ipaddress.IPv4Address(packed[12:]))
    return str(ip)


def normalize(addr: Address) -> Address:
    """L{normalize_host} applied to an endpoint."""
    return (normalize_host(addr[0]), addr[1])


def _now_us() -> int:
    return time.time_ns() // 1000


def _packed_v4(host: str) -> bytes | None:
    """The 4 bytes of C{host} if it is a dotted quad in canonical form (as
    sockets report peers), else None.  A punch mangles two addresses on its
    way to the viewer; C{ipaddress} took two thirds of L{encode}'s time."""
    try:
        packed = socket.inet_aton(host)
    except OSError:
        return None
    # inet_aton also takes "1", "1.2", octal and hex parts and trailing junk:
    # only the text it gives back exactly is what ipaddress would read the same.
    return packed if socket.inet_ntoa(packed) == host else None


def encode(addr: Address, now_us: Callable[[], int] = _now_us, tm: int | None = None) -> bytes:
    """Mangle an endpoint.  C{tm} (u32) overrides the clock, for test vectors."""
    host, port = normalize(addr)
    packed = _packed_v4(host) if ":" not in host else None
    if packed is None:
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address):
            return ip.packed + (port & 0xFFFF).to_bytes(2, "little")
        packed = ip.packed
    if tm is None:
        tm = now_us() & _MASK32
    ip_le = int.from_bytes(packed, "little")
    value = ((ip_le + tm) << 49) | (tm << 17) | (port + (tm & 0xFFFF))
    return (value & _MASK128).to_bytes(16, "little").rstrip(b"\x00")


def decode(data: bytes) -> Address:
    """Unmangle; malformed input gives C{("::", 0)} or C{("0.0.0.0", 0)} as RustDesk does."""
    if len(data) > 16:
        if len(data) != 18:
            return ("::", 0)
        ip6 = ipaddress.IPv6Address(data[:16])
        return (str(ip6), int.from_bytes(data[16:18], "little"))
    n = int.from_bytes(data.ljust(16, b"\x00"), "little")
    tm = (n >> 17) & _MASK32
    ip_le = ((n >> 49) - tm) & _MASK32
    port = ((n & 0xFFFFFF) - (tm & 0xFFFF)) & 0xFFFF
    # inet_ntoa: the same text as str(IPv4Address(...)), a fifth of the cost.
    return (socket.inet_ntoa(ip_le.to_bytes(4, "little")), port)


def is_unspecified(addr: Address) -> bool:
    """True for the "absent" addresses RustDesk uses (port 0)."""
    return addr[1] == 0
