# -*- test-case-name: tests.test_websocket_rendezvous -*-
"""Which client a WebSocket request is from, when a reverse proxy sends it.

Behind nginx every connection comes from the proxy; the client is named in
C{X-Real-IP} (nginx: C{$remote_addr}) or C{X-Forwarded-For} (C{...,
$remote_addr}).  hbbs and hbbr believe these headers from anyone, so anyone
who reaches the port directly can claim any address and slip past per-address
limits and blocklists (rustdesk-server issue 634).  Here they count only on
a request whose TCP source is in a C{--trusted-proxy} network; from any other
source they are ignored (docs/websocket.rst §3).

Sans-IO: addresses and headers in, an address or L{ForwardedHeaderError} out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from litedesk.wire.addrmangle import normalize_host

__all__ = ["ForwardedHeaderError", "TrustedProxies", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# A header longer than this is not an address list a proxy writes.
MAX_HEADER = 4096


class ForwardedHeaderError(ValueError):
    """A trusted proxy named the client in a form that is not an IP address."""


def parse_networks(texts: Iterable[str], strict: bool = False) -> tuple[Network, ...]:
    """CIDRs (or single addresses), comma- or space-separated, as networks.

    @param strict: refuse a CIDR with host bits set (C{192.0.2.1/24}), as a
        likely typo, instead of masking them off.
    @raise ValueError: an entry is not an IPv4 or IPv6 network.
    """
    out: list[Network] = []
    for text in texts:
        for entry in text.replace(",", " ").split():
            try:
                out.append(ipaddress.ip_network(entry, strict=strict))
            except ValueError:
                raise ValueError(f"not an IP network: {entry!r}") from None
    return tuple(out)


def _ip(text: str, header: str) -> str:
    """One address from a header entry: C{1.2.3.4}, C{2001:db8::1} or C{[2001:db8::1]}."""
    entry = text.strip()
    if entry.startswith("[") and entry.endswith("]"):
        entry = entry[1:-1]
    try:
        return normalize_host(str(ipaddress.ip_address(entry)))
    except ValueError:
        raise ForwardedHeaderError(
            f"{header} is not an IP address: {text.strip()[:64]!r}"
        ) from None


class TrustedProxies:
    """The reverse proxies whose client headers are believed."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, ip: str) -> bool:
        """Is C{ip} (a normalised address) one of the trusted proxies?"""
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    def client_ip(self, source_ip: str, headers: Mapping[str, str]) -> str:
        """The client address of a request from C{source_ip} with these headers.

        C{headers} are keyed in lower case, as autobahn gives them.  From a
        trusted proxy: C{X-Real-IP} if present (one address), else the
        right-most C{X-Forwarded-For} entry that is not itself a trusted proxy
        (entries further left were written by the client and prove nothing),
        else C{source_ip}.  From anyone else: C{source_ip}.

        @raise ForwardedHeaderError: a trusted proxy sent a header that does
            not parse as said.
        """
        if not self.trusts(source_ip):
            return source_ip
        real = headers.get("x-real-ip")
        if real is not None:
            if len(real) > MAX_HEADER or "," in real:
                raise ForwardedHeaderError(f"X-Real-IP is not one address: {real[:64]!r}")
            return _ip(real, "X-Real-IP")
        forwarded = headers.get("x-forwarded-for")
        if forwarded is None:
            return source_ip
        if len(forwarded) > MAX_HEADER:
            raise ForwardedHeaderError("X-Forwarded-For is too long")
        entries = [_ip(e, "X-Forwarded-For") for e in forwarded.split(",")]
        for ip in reversed(entries):
            if not self.trusts(ip):
                return ip
        return entries[0]
