"""Network endpoints as LiteDesk passes them around: the L{Address} type and
L{parse_host_port} for C{host[:port]} text from options, config files and peers.

At the bottom of the package (nothing in LiteDesk imported) so that every
layer (NAT, sessions, servers, host, viewer) parses addresses one way.
"""

from __future__ import annotations

Address = tuple[str, int]
"""C{(host, port)}; C{host} is an IP address in text form or a host name."""

# RustDesk's port for the rendezvous server (hbbs), the default of every
# option that names one.
DEFAULT_RENDEZVOUS_PORT = 21116


def parse_host_port(text: str, default_port: int) -> Address:
    """C{host}, C{host:port}, C{[v6]}, C{[v6]:port} or a bare IPv6 address.

    Surrounding whitespace is ignored; C{default_port} applies when no port is
    given (a bare IPv6 address has none: its colons are the address's).

    @raise ValueError: empty host, a port that is not a number in 1..65535,
        text after C{[v6]} other than C{:port}, or a stray bracket.
    """
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"bad address {text!r}: expected [v6] or [v6]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise ValueError(f"bad address {text!r}: no host")
    if "[" in host or "]" in host:
        raise ValueError(f"bad address {text!r}: stray bracket")
    if port_text is None:
        port = default_port
    elif port_text.isascii() and port_text.isdigit():
        port = int(port_text)
    else:
        raise ValueError(f"bad address {text!r}: port {port_text!r} is not a number")
    if not 0 < port < 65536:
        raise ValueError(f"bad address {text!r}: port {port} is not in 1..65535")
    return host, port
