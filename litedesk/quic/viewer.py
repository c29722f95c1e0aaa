# -*- test-case-name: tests.test_quic_session -*-
"""The viewer's QUIC socket: one session to one host over UDP.

L{QuicViewer} is a Twisted C{DatagramProtocol} for one QUIC connection.  It
runs on a UDP port it is given: C{reactor.listenUDP(0, viewer)}, or
L{QuicViewer.attach} for a socket already bound (the port a hole punch
opened).  L{QuicViewer.connect} starts the handshake and connects the
session protocol (a L{litedesk.session.viewer_session.ViewerSession}) at
once, as a TCP connection does; the session learns of the pinned handshake
through C{handshakeCompleted}, or of a refused host key through
C{connectionLost} with L{litedesk.session.host_key.HostKeyMismatch}, exactly
as over TLS (L{litedesk.session.pinning}).

The connection is not tied to the socket: when the port stops and the
protocol is connected to another one (a new local port, a NAT rebinding),
the next packets leave from there and the host follows after validating the
new path.  Datagrams arriving while no port is connected are lost and QUIC
retransmits.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IReactorTime, IUDPTransport
from twisted.logger import Logger

from litedesk.quic.link import Address, DatagramOwner, QuicLink
from litedesk.quic.tls_config import viewer_configuration
from litedesk.session.pinning import PinnedHostCreator

__all__ = ["QuicViewer"]


class QuicViewer(DatagramOwner):
    """A viewer's QUIC connection to one host.

    @ivar link: the connection, once L{connect} was called.
    @ivar ended: fires when the QUIC connection is over (after the session's
        C{connectionLost}).
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.link: QuicLink | None = None
        self.ended: Deferred[None] = Deferred()

    def attach(self, port: IUDPTransport) -> None:
        """Take over an already bound UDP port (its previous protocol is done)."""
        port.protocol = self  # type: ignore[attr-defined]
        self.makeConnection(port)

    def connect(
        self,
        host_address: Address,
        session: IProtocol,
        pin: PinnedHostCreator,
        *,
        handshake_timeout: float = 10.0,
    ) -> QuicLink:
        """Start the QUIC handshake with the host at C{host_address}.

        @param host_address: the host's (IP, port) (an IP address, not a name).
        @param session: the session protocol; it is connected now.
        @param pin: the host key to accept (L{litedesk.session.pinning}'s
            C{viewer_context_factory} builds it from the server-signed key).
        @param handshake_timeout: seconds until an unfinished handshake ends
            the session.
        """
        if self.link is not None:
            raise RuntimeError("this QUIC viewer is already connected")
        connection = QuicConnection(configuration=viewer_configuration())
        connection.connect(host_address, now=self.clock.seconds())
        self.link = QuicLink(
            connection,
            self,
            self.clock,
            host_address,
            session=session,
            pin=pin,
            handshake_timeout=handshake_timeout,
        )
        self.link.start()
        return self.link

    def migrate(self) -> None:
        """Send from the current port now and move to a fresh connection ID.

        Call after connecting this protocol to another port: the host sees
        the new address at once (not at the next write), and the new ID
        keeps an observer from linking the two paths (RFC 9000 §9.5).
        """
        if self.link is None or self.link.ended:
            return
        try:
            self.link.connection.change_connection_id()
        except Exception:
            # No spare connection ID from the host yet: keep the current one.
            self._log.debug("No spare QUIC connection ID; migrating with the current one")
        self.link.connection.send_ping(0)
        self.link.transmit()

    def close(self) -> None:
        """Close the connection now (before the port stops listening): the
        host is told, the session ends, no timer is left behind."""
        if self.link is not None:
            self.link.drop("viewer closed")

    # -- DatagramProtocol ------------------------------------------------------------

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self.link is None:
            return
        try:
            self.link.datagram_received(datagram, addr)
        except Exception:
            self._log.failure("Dropping a datagram from {peer}", peer=addr)

    # -- LinkOwner -----------------------------------------------------------------

    def cid_issued(self, link: QuicLink, cid: bytes) -> None:
        """Only a host routes by connection ID."""

    def cid_retired(self, link: QuicLink, cid: bytes) -> None:
        """Only a host routes by connection ID."""

    def link_established(self, link: QuicLink) -> IProtocol | None:
        # Only called on the host's side: the viewer's session exists already.
        return None

    def link_ended(self, link: QuicLink) -> None:
        if not self.ended.called:
            self.ended.callback(None)
