"""Our own routable IPv6 address, for the direct IPv6 path.

With IPv6 there is usually no NAT, only a stateful firewall that opens a
pinhole for traffic we send first.  So when both sides have a routable IPv6
address they exchange their endpoints (C{socket_addr_v6} in
C{PunchHoleRequest} / C{PunchHoleSent}) and punch exactly as over IPv4,
without any port translation.
"""

from __future__ import annotations

import ipaddress
import socket

from litedesk.wire import addrmangle

# Used only to ask the kernel which source address it would choose; a UDP
# connect() sends nothing.
_PROBE = ("2001:4860:4860::8888", 53)
_NOT_ROUTABLE = (
    ipaddress.ip_network("fc00::/7"),  # unique local
    ipaddress.ip_network("fe80::/10"),  # link local
    ipaddress.ip_network("fec0::/10"),  # site local (deprecated)
    ipaddress.ip_network("::ffff:0:0/96"),  # v4-mapped
)


def is_routable_v6(addr: str) -> bool:
    """True for an IPv6 address other hosts on the internet could reach.

    Documentation space (2001:db8::/32) counts as routable so the lab can
    use it.
    """
    try:
        ip = ipaddress.IPv6Address(addr.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        return False
    return not any(ip in net for net in _NOT_ROUTABLE)


def own_ipv6(towards: tuple[str, int] | None = None) -> str | None:
    """The routable IPv6 source address the kernel would use, or None."""
    target = towards if towards is not None and ":" in towards[0] else _PROBE
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.connect(target)
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return addr if is_routable_v6(addr) else None


def free_port(addr: str) -> int:
    """A free TCP port on C{addr} (bound with SO_REUSEPORT, then released)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((addr, 0))
        return int(s.getsockname()[1])


def valid_v6_endpoint(data: bytes) -> bool:
    """Is C{data} an AddrMangle IPv6 endpoint another host could be sent to?

    Well formed (16 address bytes and a little-endian port), a routable
    address (L{is_routable_v6}: not loopback, link-local, ULA, multicast,
    v4-mapped...) and a port in 1..65535.  That is all the server can check:
    the requester names an address of its own choosing and the server has no
    way to prove the requester owns it (the request usually arrives over
    IPv4, and even over IPv6 a client may use another (privacy) address for
    its punch socket), short of a round trip to that address, which would
    itself be the unsolicited packet we want to avoid.  What this excludes is
    aiming hosts at their own machine or LAN (loopback, link-local, ULA).
    """
    if len(data) != 18:
        return False
    host, port = addrmangle.decode(data)
    return 0 < port < 65536 and is_routable_v6(host)
