# -*- test-case-name: tests.test_host_udp_paths -*-
"""The host's UDP hole punch: a punched UDP path, then a QUIC session on it.

A viewer that can punch UDP (a LiteDesk viewer, docs/protocol.rst §8.6)
sends C{udp_port} in its C{PunchHoleRequest}; the server puts the port its
UDP test came from into the C{PunchHole} (§5.12).  The host then, instead
of the TCP punch:

1. opens its punch socket(s): one, or L{HARD_SOCKETS} when its own NAT maps
   per destination (symmetric) and the viewer's does not;
2. sends C{PunchHoleSent} by UDP from the first socket to the server (three
   copies, datagrams get lost), which tells the viewer, on its stream, the
   address that socket is mapped to (C{is_udp});
3. probes the viewer (L{litedesk.nat.udp_puncher}), spraying its ports when
   the viewer's NAT is the symmetric one (birthday probing);
4. serves QUIC (L{litedesk.quic.host.QuicHost}) on the socket that won, for
   that viewer: the session is the same as over TCP, TLS 1.3 with the host's
   identity key inside QUIC.

The socket closes when its QUIC connection ends, or when no viewer
completed a handshake within L{FIRST_HANDSHAKE}.  Both sides symmetric is
never tried here (the caller opens a relay).  What a push can make the host
hold is bounded by its job slot (L{litedesk.host.job_slots}): the slot is
held until the socket closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.host.job_slots import Slot
from litedesk.nat.ipv6 import own_ipv6
from litedesk.nat.nattype import SYMMETRIC, resolve_ip, wildcard_for
from litedesk.nat.udp_probe import plan_for, punch_token
from litedesk.nat.udp_puncher import UdpPuncher
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.quic.host import QuicHost
from litedesk.wire import addrmangle

__all__ = ["FIRST_HANDSHAKE", "MAX_HARD_PUNCHES", "HostUdpPaths", "punch_window"]

#: Seconds the host probes a viewer: a plain punch, and with birthday probing.
PUNCH_WINDOW = 6.0
SPRAY_WINDOW = 10.0
#: Birthday punches (L{HARD_SOCKETS} sockets each) at once; more viewers
#: asking meanwhile get the relay.  Pushes are unauthenticated: without this
#: bound they could make the host hold 256 sockets per job slot.
MAX_HARD_PUNCHES = 2
#: Seconds from the punch to a completed QUIC handshake on the punched socket.
FIRST_HANDSHAKE = 10.0
#: When the copies of the UDP C{PunchHoleSent} leave (seconds after the first).
_SENT_COPIES = (0.0, 0.02, 0.05)


def punch_window(spray: bool) -> float:
    return SPRAY_WINDOW if spray else PUNCH_WINDOW


class HostUdpPaths:
    """UDP punches and the QUIC sessions on them, for L{litedesk.host.paths.HostPaths}.

    @param make_quic_host: builds a QUIC host socket protocol whose sessions
        are labelled with the path name it is given.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        peer_id: str,
        make_quic_host: Callable[[str], QuicHost],
        interface: str = "",
    ) -> None:
        self.reactor = reactor
        #: The address punch sockets bind ("": every interface, as the
        #: registration socket; the server accepts a UDP PunchHoleSent only from
        #: the IP the host registered from).
        self.interface = interface
        self.peer_id = peer_id
        self.make_quic_host = make_quic_host
        self.token = punch_token(peer_id)
        self._punchers: set[UdpPuncher] = set()
        self._serving: set[QuicHost] = set()
        self._copies: list[Any] = []
        #: Birthday punches running now (see L{MAX_HARD_PUNCHES}).
        self.hard_punches = 0

    def wants(self, msg: rz.PunchHole, own_nat: int) -> bool:
        """Whether C{msg} is answered with a UDP punch: the viewer asked for one and
        at most one side's NAT maps per destination.

        A viewer that offers a routable IPv6 endpoint we can answer keeps the
        TCP punch, whose IPv6 path needs no punching at all.
        """
        if msg.udp_port <= 0:
            return False
        plan = plan_for(own_nat == SYMMETRIC, msg.nat_type == SYMMETRIC)
        if plan is None:
            return False
        if plan.sockets > 1 and self.hard_punches >= MAX_HARD_PUNCHES:
            self._log.warn(
                "{n} UDP punches with {sockets} sockets each are running; "
                "answering this viewer through the relay",
                n=self.hard_punches,
                sockets=plan.sockets,
            )
            return False
        if msg.socket_addr_v6:
            viewer6 = addrmangle.decode(msg.socket_addr_v6)
            if own_ipv6(viewer6) is not None:
                return False
        return True

    async def punch(
        self,
        msg: rz.PunchHole,
        own_nat: int,
        server: tuple[str, int],
        sent: rz.PunchHoleSent,
        slot: Slot,
    ) -> None:
        """Punch to the viewer of C{msg} and serve QUIC on the winning socket.

        @param sent: the C{PunchHoleSent} to send by UDP (its fields filled in).
        @param slot: released when the punch fails or the socket closes.
        """
        plan = plan_for(own_nat == SYMMETRIC, msg.nat_type == SYMMETRIC)
        assert plan is not None
        viewer_ip = addrmangle.normalize(addrmangle.decode(msg.socket_addr))[0]
        server_udp = (resolve_ip(*server), server[1])
        puncher = UdpPuncher(
            self.reactor, self.token, plan.sockets, self.interface or wildcard_for(server_udp[0])
        )
        self._punchers.add(puncher)
        hard = plan.sockets > 1
        self.hard_punches += hard
        try:
            puncher.open()
            data = rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString()
            self._copies = [c for c in self._copies if c.active()]
            for delay in _SENT_COPIES:
                self._copies.append(self.reactor.callLater(delay, _send, puncher, data, server_udp))
            t0 = self.reactor.seconds()
            self._log.info(
                "Viewer {ip} asks to connect by UDP ({sockets} socket(s), {spray}); punching",
                ip=viewer_ip,
                sockets=plan.sockets,
                spray="spraying its ports" if plan.spray else "no spraying",
            )
            result = await puncher.run(
                "host", viewer_ip, [int(msg.udp_port)], plan.spray, punch_window(plan.spray)
            )
        finally:
            self._punchers.discard(puncher)
            self.hard_punches -= hard
        if result is None:
            puncher.close()
            self._log.info(
                "UDP punch with viewer {ip} failed after {ms} ms{foreign}",
                ip=viewer_ip,
                ms=int((self.reactor.seconds() - t0) * 1000),
                foreign=" (it speaks RustDesk's UDP punch, not LiteDesk's)"
                if puncher.foreign
                else "",
            )
            slot.release()
            return
        self._log.info(
            "Punched UDP path with viewer {ip} ({remote}) after {ms} ms; serving QUIC",
            ip=viewer_ip,
            remote=f"{result.remote[0]}:{result.remote[1]}",
            ms=int(result.elapsed * 1000),
        )
        self.serve(result.port, "udp", slot, puncher.late_datagram)

    def serve(
        self,
        port: Any,
        path: str,
        slot: Slot | None = None,
        late: Callable[[bytes, tuple[str, int]], bool] | None = None,
    ) -> Deferred[None]:
        """Serve QUIC on the bound UDP C{port} until its connection ends (or none
        comes within L{FIRST_HANDSHAKE}); then close the port and release C{slot}.

        @return: fires once the port is closed.
        """
        quic = self.make_quic_host(path)
        quic.non_quic = late
        quic.attach(port)
        self._serving.add(quic)
        done: Deferred[None] = Deferred()

        def close() -> None:
            if done.called:
                return
            if timer.active():
                timer.cancel()
            self._serving.discard(quic)
            quic.emptied = None
            quic.non_quic = None
            quic.close_all()
            port.stopListening()
            if slot is not None:
                slot.release()
            done.callback(None)

        def unused() -> None:
            if not any(link.established for link in quic.links):
                self._log.info("No QUIC session came on the punched socket; closing it")
                close()

        timer = self.reactor.callLater(FIRST_HANDSHAKE, unused)
        quic.emptied = close
        return done

    def stop(self) -> None:
        """Stop every punch and punched socket (the agent is stopping)."""
        for call in self._copies:
            if call.active():
                call.cancel()
        self._copies.clear()
        for puncher in list(self._punchers):
            puncher.close()
        self._punchers.clear()
        for quic in list(self._serving):
            if quic.emptied is not None:
                quic.emptied()


def _send(puncher: UdpPuncher, data: bytes, addr: tuple[str, int]) -> None:
    try:
        puncher.send_raw(0, data, addr)
    except Exception as e:  # the puncher closed meanwhile, or the network is down
        HostUdpPaths._log.debug("UDP PunchHoleSent not sent: {error}", error=e)
