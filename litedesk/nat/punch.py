"""TCP hole punching (docs/protocol.rst §7.2 and §7.3).

Both sides use the local port L of their connection to the rendezvous
server, because that is the port the server saw and told the other side
(behind an endpoint-independent NAT the public port of L stays the same for
every destination).  The host connects out from L to the viewer's public
address (opening its NAT for the viewer's packets) and listens on L; the
viewer connects from its own L to the host's public address, retrying.
Whichever stream comes up first wins (L{Gate}); the others are closed.

The timeout rules are plain functions; the sockets come from
L{litedesk.nat.sockets}.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger

from litedesk.nat.ipv6 import free_port, own_ipv6
from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC, wildcard_for
from litedesk.nat.sockets import (
    ConnectFailed,
    adopt,
    connect_from,
    connect_socket,
    local_port_of,
)
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError, RendezvousLink
from litedesk.wire import addrmangle
from litedesk.wire.address import Address

ATTEMPT_TIMEOUT = 0.5  # a fresh SYN this often (the kernel's first retransmit is at 1 s)
RETRY_DELAY = 0.05  # after a refusal (RST) or an unreachable error
PUNCH_CAP = 2.5  # never wait longer than this for a punch when a relay is known

_log = Logger(namespace="litedesk.nat.punch")


def direct_timeout(
    is_local: bool,
    peer_nat: int,
    own_nat: int,
    have_relay: bool,
    punch_time: float,
    failed_before: bool = False,
    cap: float | None = PUNCH_CAP,
) -> float:
    """Seconds to try the direct connection before the relay (spec 7.3 step 5).

    RustDesk waits up to 18 s when both NATs are ASYMMETRIC; C{cap} bounds
    that whenever a relay is known, so that a failed punch falls back within
    a few seconds.  C{punch_time} is the time from C{PunchHoleRequest} to
    C{PunchHoleResponse}, in seconds.
    """
    if is_local or peer_nat == SYMMETRIC:
        t = 1.0
    elif not have_relay:
        return 18.0
    elif peer_nat == ASYMMETRIC and own_nat == ASYMMETRIC:
        t = 6 * punch_time if failed_before else 18.0
    elif peer_nat == ASYMMETRIC and own_nat == SYMMETRIC:
        t = 1.0
    else:
        t = (3 if failed_before else 6) * punch_time
    t = max(t, 1.0)
    return min(t, cap) if cap is not None else t


@dataclass
class Gate:
    """The first stream to claim it wins; later ones are closed."""

    winner: str | None = None
    losers: list[str] = field(default_factory=list)

    def claim(self, label: str) -> bool:
        if self.winner is None:
            self.winner = label
            return True
        self.losers.append(label)
        return False


class GatedFactory(Factory):
    """Accepts for the session while the gate is open; refuses (closes) afterwards."""

    noisy = False

    def __init__(self, gate: Gate, make_session: Any, label: str = "accepted") -> None:
        self.gate = gate
        self.make_session = make_session
        self.label = label

    def buildProtocol(self, addr: Any) -> Any:
        if not self.gate.claim(self.label):
            _log.debug("Closed a late punched stream from {addr}", addr=addr)
            return None
        return self.make_session()


async def punch_connect(
    reactor: Any,
    local: Address,
    remote: Address,
    window: float,
    gate: Gate,
    attempt_timeout: float = ATTEMPT_TIMEOUT,
) -> socket.socket | None:
    """Connect from C{local} to C{remote} until it works, the gate closes or C{window} ends.

    Returns the connected socket (not yet adopted and not yet claimed), or
    None.
    """
    deadline = reactor.seconds() + window
    attempts = 0
    while gate.winner is None:
        left = deadline - reactor.seconds()
        if left <= 0:
            break
        attempts += 1
        try:
            return await connect_socket(reactor, local, remote, min(attempt_timeout, left))
        except ConnectFailed as e:
            if e.reason == errno.errorcode[errno.EADDRNOTAVAIL]:
                # The listener on our port accepted this 4-tuple already.
                _log.debug("Connect to {remote}: tuple taken by the listener", remote=remote)
            if e.reason != "timed out":
                await deferLater(reactor, RETRY_DELAY, lambda: None)
    _log.debug("Punch to {remote}: {n} attempt(s), no stream", remote=remote, n=attempts)
    return None


async def open_rendezvous_from(
    reactor: Any, server: Address, timeout: float = 5.0
) -> tuple[RendezvousLink, Address]:
    """A rendezvous connection from a shared (SO_REUSEPORT) port; returns it and that port."""
    link = RendezvousLink()
    try:
        await connect_from(reactor, (wildcard_for(server[0]), 0), server, link, timeout)
    except ConnectFailed as e:
        raise LinkError(f"cannot reach rendezvous server {server[0]}:{server[1]} ({e})") from None
    assert link.transport is not None
    return link, local_port_of(link.transport)


def adopt_if_first(
    reactor: Any,
    sock: socket.socket | None,
    gate: Gate,
    label: str,
    make_protocol: Callable[[], IProtocol],
) -> bool:
    """Adopt C{sock} for a new protocol if it wins the gate; close it otherwise."""
    if sock is None:
        return False
    if not gate.claim(label):
        sock.close()
        return False
    adopt(reactor, sock, make_protocol())
    return True


def punch_candidates(
    msg: rz.PunchHole, server: Address, local: Address, viewer: Address, ipv4: bool
) -> tuple[list[tuple[str, Address, Address]], bytes]:
    """The paths to try for one punch request, and our IPv6 endpoint to announce (or b"").

    Each candidate is (label, our shared local endpoint, the viewer's endpoint).
    """
    candidates: list[tuple[str, Address, Address]] = []
    if ipv4:
        candidates.append(("ipv4", (wildcard_for(server[0]), local[1]), viewer))
    socket_addr_v6 = b""
    if msg.socket_addr_v6:
        viewer6 = addrmangle.decode(msg.socket_addr_v6)
        own6 = own_ipv6(viewer6)
        if own6 is not None:
            local6 = (own6, free_port(own6))
            candidates.append(("ipv6", local6, viewer6))
            socket_addr_v6 = addrmangle.encode(local6)
    return candidates, socket_addr_v6
