# -*- test-case-name: tests.test_forward_rules -*-
"""Which forward targets a host allows, and the viewer's C{LPORT:HOST:PORT}.

A C{LoginRequest.port_forward} names C{host} and C{port} as the viewer typed
them; the host maps them as RustDesk does (rustdesk src/server/connection.rs,
the PortForward branch of C{on_message}): an empty host is C{localhost}, and
C{RDP} with port 0 is C{localhost:3389} (RustDesk's RDP shortcut).  Only the
mapped target is compared with the C{--allow-forward} list: host names
case-insensitively, ports exactly.  No name is resolved, so C{localhost} and
C{127.0.0.1} are different entries (an allow list that resolved names would
change its meaning with DNS).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from litedesk.wire.address import parse_host_port

__all__ = [
    "RDP_PORT",
    "ForwardSpec",
    "ForwardTarget",
    "forward_allowed",
    "map_target",
    "parse_forward_spec",
]

RDP_PORT = 3389


@dataclass(frozen=True)
class ForwardTarget:
    """Where the host connects for a forward.

    @ivar label: how errors name it: C{host:port}, or C{RDP} for RustDesk's
        RDP shortcut (its wording in the "Failed to access remote" error).
    """

    host: str
    port: int
    label: str


def map_target(host: str, port: int) -> ForwardTarget:
    """The target a C{PortForward{host, port}} from a viewer means."""
    if host == "RDP" and port == 0:
        return ForwardTarget("localhost", RDP_PORT, "RDP")
    if not host:
        host = "localhost"
    return ForwardTarget(host, port, _label(host, port))


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forward_allowed(allowed: Iterable[tuple[str, int]], target: ForwardTarget) -> bool:
    """Whether C{target} is on the host's C{--allow-forward} list.

    An empty list allows nothing.  Host names compare case-insensitively
    (DNS names do); nothing is resolved.
    """
    if not 0 < target.port < 65536:
        return False
    host = target.host.casefold()
    return any(h.casefold() == host and p == target.port for h, p in allowed)


@dataclass(frozen=True)
class ForwardSpec:
    """The viewer's C{--forward LPORT:HOST:PORT}."""

    listen_port: int
    host: str
    port: int

    @property
    def target(self) -> str:
        return _label(self.host, self.port)


def parse_forward_spec(text: str) -> ForwardSpec:
    """Parse C{LPORT:HOST:PORT} (C{HOST} may be C{[v6]}).

    @raise ValueError: not of that form, or a port not in 1..65535.
    """
    lport_text, sep, target = text.strip().partition(":")
    if not sep or not (lport_text.isascii() and lport_text.isdigit()):
        raise ValueError(f"bad forward {text!r}: give LPORT:HOST:PORT")
    lport = int(lport_text)
    if not 0 < lport < 65536:
        raise ValueError(f"bad forward {text!r}: local port {lport} is not in 1..65535")
    if ":" not in target or target.endswith("]"):
        raise ValueError(f"bad forward {text!r}: give LPORT:HOST:PORT")
    host, port = parse_host_port(target, 0)
    return ForwardSpec(lport, host, port)
