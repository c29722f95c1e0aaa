# -*- test-case-name: tests.test_viewer_udp_route -*-
"""The viewer's UDP hole punch and its QUIC session (docs/protocol.rst §8.6).

Before asking for the host, the viewer opens its punch socket(s)
(L{UdpCandidate}: one, or L{HARD_SOCKETS} when its own NAT maps per
destination) and sends C{TestNatRequest} by UDP from the first one to the
server until the request is answered: the server notes the address that
socket is mapped to and hands its port to the host (§5.12); the request
itself carries the socket's local port in C{udp_port}.

A host that punches UDP answers with C{PunchHoleResponse{is_udp}}: the
address its own punch socket is mapped to.  L{connect_udp} then

1. tries the host's port mapping first when it has one (C{upnp_port}):
   QUIC (a NAT-PMP/PCP mapping, path C{natpmp}) and TCP (a UPnP mapping,
   path C{upnp}) race for L{MAPPING_WINDOW};
2. probes the host (L{litedesk.nat.udp_puncher}), spraying its ports when
   the host's NAT is the symmetric one (birthday probing);
3. runs QUIC on the winning socket (path C{udp});
4. and asks for a relay when all of that failed, or at once when the host
   turns out to speak RustDesk's UDP punch (KCP), which LiteDesk does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from litedesk.nat.nattype import SYMMETRIC, wildcard_for
from litedesk.nat.punch import Gate, adopt_if_first, punch_connect
from litedesk.nat.udp_probe import HARD_SOCKETS, plan_for, punch_token
from litedesk.nat.udp_puncher import UdpPuncher
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.quic.viewer import QuicViewer
from litedesk.session.pinning import PinnedHostCreator
from litedesk.viewer.quic_connect import quic_connect

__all__ = ["MAPPING_WINDOW", "UdpCandidate", "UdpPlan", "connect_udp"]

#: Seconds for the host's port mapping (it answers at once or not at all).
MAPPING_WINDOW = 1.0
#: Seconds QUIC has to itself before TCP tries the mapped port too.
QUIC_HEAD_START = 0.3
#: Seconds of probing: a plain punch, and with birthday probing.
PUNCH_WINDOW = 5.0
SPRAY_WINDOW = 9.0
#: Seconds for the QUIC handshake on a punched path (it answered probes already).
HANDSHAKE_WINDOW = 5.0
#: How often the UDP C{TestNatRequest} goes out until the request is answered.
ANNOUNCE_INTERVAL = 0.05
#: ...and for how long at most (a viewer waits 3 + 6 + 9 s for its answer).
ANNOUNCE_LIMIT = 20.0

_log = Logger(namespace="litedesk.viewer.route")
_TEST_NAT = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()).SerializeToString()


class UdpCandidate:
    """The viewer's punch socket(s), announced to the server by UDP."""

    def __init__(
        self, reactor: Any, server_udp: tuple[str, int], own_nat: int, peer_id: str
    ) -> None:
        self.reactor = reactor
        self.server_udp = server_udp
        self.own_nat = own_nat
        sockets = HARD_SOCKETS if own_nat == SYMMETRIC else 1
        self.puncher = UdpPuncher(
            reactor, punch_token(peer_id), sockets, wildcard_for(server_udp[0])
        )
        ports = self.puncher.open()
        self.local_port: int = ports[0].getHost().port  # type: ignore[attr-defined]
        self._announcing: LoopingCall | None = LoopingCall(self._announce)
        self._announcing.clock = reactor
        self._started = reactor.seconds()
        self._announcing.start(ANNOUNCE_INTERVAL, now=True)

    def _announce(self) -> None:
        if self.reactor.seconds() - self._started > ANNOUNCE_LIMIT:
            self.stop_announcing()
            return
        try:
            self.puncher.send_raw(0, _TEST_NAT, self.server_udp)
        except Exception as e:
            _log.debug("UDP NAT test not sent: {error}", error=e)

    def stop_announcing(self) -> None:
        if self._announcing is not None and self._announcing.running:
            self._announcing.stop()
        self._announcing = None

    def close(self) -> None:
        self.stop_announcing()
        self.puncher.close()


@dataclass(frozen=True)
class UdpPlan:
    """What the route learnt for a UDP punch."""

    candidate: UdpCandidate
    host: tuple[str, int]  # where the host's punch socket is mapped
    peer_nat: int
    upnp: tuple[str, int] | None  # the host's mapped port, if it has one


async def connect_udp(
    reactor: Any,
    plan: UdpPlan,
    session: IProtocol,
    pin: PinnedHostCreator,
    tls: IProtocol,
) -> str | None:
    """Reach the host by its port mapping or a UDP punch; the path, or None.

    C{session} goes on a QUIC connection, C{tls} (the TCP session protocol)
    on a TCP connection to a UPnP mapping.  None: nothing worked and the
    caller asks for a relay (the punch sockets are closed then).
    """
    candidate = plan.candidate
    candidate.stop_announcing()
    try:
        if plan.upnp is not None:
            path = await _mapping(reactor, plan.upnp, session, pin, tls)
            if path is not None:
                candidate.close()
                return path
        path = await _punched(reactor, plan, session, pin)
    except BaseException:
        candidate.close()
        raise
    if path is None:
        candidate.close()
    # After a win the puncher has closed its other sockets; the winner is QUIC's.
    return path


async def _mapping(
    reactor: Any,
    mapped: tuple[str, int],
    session: IProtocol,
    pin: PinnedHostCreator,
    tls: IProtocol,
) -> str | None:
    """QUIC, then TCP, to the host's mapped port; the first to complete wins.

    QUIC gets L{QUIC_HEAD_START}: a NAT-PMP/PCP mapping carries TCP too, and
    on a short path TCP's handshake (one round trip) would always beat
    QUIC's, which is the better transport.  A UPnP mapping (TCP only) costs
    that head start.
    """
    gate = Gate()
    lost: Deferred[None] = Deferred()
    quic = ensureDeferred(
        quic_connect(
            reactor, None, mapped, session, pin, timeout=MAPPING_WINDOW, label="natpmp",
            gate=gate, abandon=lost,
        )
    )  # fmt: skip
    won: list[QuicViewer | None] = []
    head: Deferred[None] = Deferred()

    def settled(viewer: QuicViewer | None) -> QuicViewer | None:
        won.append(viewer)
        if not head.called:
            head.callback(None)
        return viewer

    def head_start_over() -> None:
        if not head.called:
            head.callback(None)

    quic.addCallback(settled)
    timer = reactor.callLater(QUIC_HEAD_START, head_start_over)
    await head
    if timer.active():
        timer.cancel()
    if won and won[0] is not None:
        return "natpmp"
    any_port = (wildcard_for(mapped[0]), 0)
    sock = await punch_connect(reactor, any_port, mapped, MAPPING_WINDOW - QUIC_HEAD_START, gate)
    tcp_won = adopt_if_first(reactor, sock, gate, "upnp", lambda: tls)
    if tcp_won:
        lost.callback(None)
    viewer = await quic
    if tcp_won:
        return "upnp"
    if viewer is not None:
        return "natpmp"
    _log.info("The host's mapped port {ip}:{port} did not answer", ip=mapped[0], port=mapped[1])
    return None


async def _punched(
    reactor: Any, plan: UdpPlan, session: IProtocol, pin: PinnedHostCreator
) -> str | None:
    candidate = plan.candidate
    probing = plan_for(candidate.own_nat == SYMMETRIC, plan.peer_nat == SYMMETRIC)
    if probing is None:
        return None
    window = SPRAY_WINDOW if probing.spray else PUNCH_WINDOW
    result = await candidate.puncher.run(
        "viewer", plan.host[0], [plan.host[1]], probing.spray, window
    )
    if result is None:
        _log.info(
            "UDP punch to {ip}:{port} failed{why}",
            ip=plan.host[0],
            port=plan.host[1],
            why=" (the host speaks RustDesk's UDP punch)" if candidate.puncher.foreign else "",
        )
        return None
    _log.info(
        "Punched UDP path to {ip}:{port} in {ms} ms ({probes} probes)",
        ip=result.remote[0],
        port=result.remote[1],
        ms=int(result.elapsed * 1000),
        probes=result.probes_sent,
    )
    viewer = await quic_connect(
        reactor, result.port, result.remote, session, pin, timeout=HANDSHAKE_WINDOW, label="udp"
    )
    return "udp" if viewer is not None else None
