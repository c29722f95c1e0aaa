# -*- test-case-name: tests.test_websocket_relay -*-
"""What the inner protocol of a WebSocket connection sees as its transport.

L{BridgeTransport} hands writes, closes and flow control to the
L{litedesk.websocket.bridge.WebSocketBridge} it belongs to; L{address}
builds the Twisted address the inner protocol is told its peer has (the
client's own, through a trusted proxy: docs/websocket.rst §3).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPushProducer,
    ITransport,
)
from zope.interface import implementer

if TYPE_CHECKING:
    from litedesk.websocket.bridge import WebSocketBridge

from litedesk.twisted_internals import buffered_bytes


def address(ip: str, port: int) -> IAddress:
    """A Twisted TCP address for C{(ip, port)}."""
    if ":" in ip:
        return IPv6Address("TCP", ip, port)
    return IPv4Address("TCP", ip, port)


__all__ = ["BridgeTransport", "address"]


@implementer(ITransport, IConsumer, IPushProducer)
class BridgeTransport:
    """The inner protocol's transport: frames out as messages, flow control below.

    Producer calls go to the WebSocket connection's own transport, so a relay
    partner registered here is paused when the WebSocket peer reads slowly,
    and pausing this transport stops reading from that peer.
    """

    #: C{write} takes any buffer (a relay leg then passes a view as it is):
    #: what cannot be sent at once is copied.
    accepts_buffers = True

    def __init__(self, bridge: WebSocketBridge, peer: IAddress, host: IAddress) -> None:
        self._bridge = bridge
        self._peer = peer
        self._host = host

    @property
    def disconnecting(self) -> bool:
        return self._bridge.closing

    @property
    def connected(self) -> bool:
        return not self._bridge.closing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._bridge.send_frames(data)

    def writeSequence(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        self._bridge.close_from_inner(abort=False)

    def abortConnection(self) -> None:
        self._bridge.close_from_inner(abort=True)

    def getPeer(self) -> IAddress:
        return self._peer

    def getHost(self) -> IAddress:
        return self._host

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self._bridge.raw.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._bridge.raw.unregisterProducer()

    def pauseProducing(self) -> None:
        self._bridge.raw.pauseProducing()

    def resumeProducing(self) -> None:
        self._bridge.raw.resumeProducing()

    def stopProducing(self) -> None:
        self._bridge.close_from_inner(abort=True)

    def buffered(self) -> int:
        """Bytes queued for the WebSocket peer in the connection's write buffer."""
        t = self._bridge.raw
        return buffered_bytes(t) if isinstance(t, FileDescriptor) else 0

    def set_read_size(self, size: int) -> None:
        """Read up to C{size} bytes of the WebSocket stream at a time (at most
        L{MAX_READ} until the fast path is on)."""
        self._bridge.set_read_size(size)

    def start_fast_path(self) -> None:
        """The inner protocol now only forwards: see L{WebSocketBridge.start_fast_path}."""
        self._bridge.start_fast_path()
