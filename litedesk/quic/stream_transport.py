# -*- test-case-name: tests.test_quic_session -*-
"""A QUIC stream as the ITransport the session protocols already take.

L{litedesk.session.host_session.HostSession} and
L{litedesk.session.viewer_session.ViewerSession} run over a byte stream:
over TCP that is Twisted's TLS transport, over QUIC it is one bidirectional
stream of the connection (the session's BytesCodec frames, docs/protocol.rst
§2.1, exactly as inside TLS).  L{QuicStreamTransport} is that stream seen as
a transport: writes go to the stream, C{loseConnection} ends the stream and
then the connection once everything is acknowledged, C{abortConnection}
closes the connection at once, C{getPeer} is the peer's current UDP address
(it changes when the viewer migrates).

Backlog: the host's frame-drop policy reads how much a transport still
holds (L{litedesk.screen.backpressure.transport_buffered}, which reads a
bottom layer's C{dataBuffer}); here that is the stream's unacknowledged
bytes, which L{dataBuffer} hands out.  A registered producer (a file
transfer) is paused above L{PAUSE_ABOVE} bytes and resumed below
L{RESUME_BELOW}, as a TCP transport does at its buffer size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IConsumer, IProducer, IPushProducer, ITransport
from zope.interface import implementer

if TYPE_CHECKING:
    from litedesk.quic.link import QuicLink

__all__ = ["PAUSE_ABOVE", "RESUME_BELOW", "QuicStreamTransport", "udp_address"]

#: A registered producer is paused when this many bytes wait for acknowledgement.
PAUSE_ABOVE = 256 * 1024
#: ...and resumed below this.
RESUME_BELOW = 64 * 1024


def udp_address(addr: tuple[Any, ...]) -> IPv4Address | IPv6Address:
    """A Twisted address for a UDP peer as the socket reports it."""
    host, port = str(addr[0]), int(addr[1])
    if ":" in host:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


@implementer(ITransport, IConsumer)
class QuicStreamTransport:
    """One bidirectional QUIC stream of a L{QuicLink}, as a transport.

    @ivar stream_id: the stream's id.
    @ivar disconnecting: C{loseConnection} was called.
    """

    def __init__(self, link: QuicLink, stream_id: int) -> None:
        self._link = link
        self.stream_id = stream_id
        self.disconnecting = False
        self.disconnected = False
        self.producer: IPushProducer | None = None
        self._producer_paused = False

    # -- ITransport ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.disconnecting or self.disconnected or not data:
            return
        self._link.send_stream(bytes(data))

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        """End the stream after what is queued, then close the connection."""
        if self.disconnecting or self.disconnected:
            return
        self.disconnecting = True
        self._link.finish()

    def abortConnection(self) -> None:
        """Close the QUIC connection now; what is queued is not sent."""
        if self.disconnected:
            return
        self.disconnecting = True
        self._link.abort("session aborted")

    def getPeer(self) -> IPv4Address | IPv6Address:
        return udp_address(self._link.peer_address)

    def getHost(self) -> Any:
        return self._link.host_address()

    # -- backlog (read by litedesk.screen.backpressure) ------------------------

    @property
    def dataBuffer(self) -> bytearray:
        """The stream's bytes not yet acknowledged by the peer (do not modify)."""
        return self._link.send_buffer()

    # -- IConsumer -------------------------------------------------------------

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """Register a push producer (the only kind the sessions use)."""
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        if not streaming or not IPushProducer.providedBy(producer):
            raise ValueError("a QUIC stream takes push producers only")
        self.producer = producer
        self._producer_paused = False
        self.backlog_changed(self._link.backlog())

    def unregisterProducer(self) -> None:
        self.producer = None
        self._producer_paused = False

    def backlog_changed(self, backlog: int) -> None:
        """Pause or resume the producer for the stream's current backlog."""
        producer = self.producer
        if producer is None:
            return
        if not self._producer_paused and backlog > PAUSE_ABOVE:
            self._producer_paused = True
            producer.pauseProducing()
        elif self._producer_paused and backlog < RESUME_BELOW:
            self._producer_paused = False
            producer.resumeProducing()

    def lost(self) -> None:
        """The connection is gone: stop the producer, refuse writes."""
        self.disconnected = True
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
