# -*- test-case-name: tests.test_rendezvous_udp_punch -*-
"""The rendezvous server's part in the UDP punch of RustDesk 1.4.1+ (docs/protocol.rst §5.12).

L{UdpPunchRequests} is mixed into L{litedesk.rendezvous.server.RendezvousServer}:
it picks the C{udp_port} a C{PunchHole} carries, notes a viewer's UDP NAT
test and turns a host's UDP C{PunchHoleSent} into the viewer's answer on its
stream.  The rules themselves (ports, expiry, claims, bounds) are the
sans-IO L{litedesk.rendezvous.udp_punch.UdpPunchBroker}; nothing here ever
answers by UDP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.registry import Peer, Registry
from litedesk.rendezvous.sinks import ReplySink
from litedesk.rendezvous.udp_punch import PortChoice, UdpPunchBroker
from litedesk.wire.address import Address

__all__ = ["UdpPunchRequests"]


class UdpPunchRequests:
    """UDP punch brokering; the server provides what the declarations below name."""

    udp_punch: UdpPunchBroker | None
    always_use_relay: bool
    registry: Registry
    counters: dict[str, int]
    _parked: dict[Address, ReplySink]
    _log: Logger

    if TYPE_CHECKING:

        def _now(self) -> float: ...

        def _viewer(self, socket_addr: bytes) -> Address: ...

        def _vouch(
            self, answer_ip: str, peer_id: str, relay_server: str, viewer: Address
        ) -> None: ...

        def _deliver(self, target: Address, msg: rz.RendezvousMessage, what: str) -> None: ...

        def _punch_answer(
            self, phs: rz.PunchHoleSent, host: Address, *, is_udp: bool
        ) -> rz.RendezvousMessage: ...

    def _other_datagram(self, kind: str, msg: rz.RendezvousMessage, source: Address) -> None:
        """The UDP punch's two messages by UDP; anything else stays ignored.

        Neither is answered by UDP: a viewer's C{TestNatRequest} is noted, a
        host's C{PunchHoleSent} goes to the viewer's stream (so the UDP port
        never sends more than it received).
        """
        if self.udp_punch is None:
            return
        if kind == "test_nat_request":
            # The NAT mapping of the viewer's punch socket.  The answer it
            # waits for (TestNatResponse, 6-8 bytes for these 3) would make a
            # forged source an amplifier: it is never sent.
            self.counters["udp_nat_tests"] += 1
            self.udp_punch.observe(source, self._now())
        elif kind == "punch_hole_sent":
            self._udp_punch_hole_sent(msg.punch_hole_sent, source)

    def _udp_punch_port(
        self, conn: ReplySink, ph: rz.PunchHoleRequest, peer: Peer
    ) -> PortChoice | None:
        """C{PunchHole.udp_port} for this request (None or port 0: no UDP punch).

        With a port, the host's UDP answer is awaited from then on.
        """
        if self.udp_punch is None or ph.udp_port <= 0 or self.always_use_relay:
            return None
        if peer.channel is not None:
            # A host on a stream came there because UDP does not work for it
            # or is turned off ("disable-udp"); rendezvous_mediator.rs would
            # still try the UDP punch, and answer nothing else.
            return None
        now = self._now()
        choice = self.udp_punch.viewer_port(conn.addr[0], ph.udp_port, now)
        if not choice.port:
            return choice
        self.counters["udp_punch_requests"] += 1
        if choice.port != ph.udp_port:
            self.counters["udp_punch_port_replaced"] += 1
        host_ips = [a[0] for a in self.registry.push_addresses(peer, now)]
        if peer.ip:
            host_ips.append(peer.ip)
        self.udp_punch.expect(conn.addr, ph.id, host_ips, now)
        return choice

    def _udp_punch_hole_sent(self, phs: rz.PunchHoleSent, source: Address) -> None:
        """A host's C{PunchHoleSent} by UDP: the awaited punch's answer goes to the viewer."""
        assert self.udp_punch is not None
        if not self.udp_punch.pending_count():
            # Nothing waits: most often a stock host's second or third copy.
            self.counters["udp_punch_sent_refused"] += 1
            return
        viewer = self._viewer(phs.socket_addr)
        claim = self.udp_punch.claim(viewer, phs.id, source[0], self._now())
        if not claim.accepted:
            self.counters["udp_punch_sent_refused"] += 1
            # A spoofer sends as many as the flood guard lets through: only
            # the first refusal of a punch that is really waiting is worth a
            # warning, and copies for no waiting punch are only counted.
            if claim.waiting:
                log = self._log.warn if claim.first_refusal else self._log.debug
                log(
                    "Ignored a UDP PunchHoleSent from {ip} for {viewer}: {reason}",
                    ip=source[0],
                    viewer=f"{viewer[0]}:{viewer[1]}",
                    reason=claim.reason,
                )
            return
        self.counters["udp_punch_answers"] += 1
        if viewer in self._parked:
            self._vouch(source[0], phs.id, phs.relay_server, viewer)
        self._deliver(viewer, self._punch_answer(phs, source, is_udp=True), "UDP punch")
