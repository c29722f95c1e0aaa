"""A protocol that speaks a plaintext preamble, then hands its stream on.

A relay leg sends its C{RequestRelay} frame in plaintext and then carries the
session's TLS on the same TCP connection.  Nothing here knows about TLS: the
protocol taking over can be any L{IProtocol}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

__all__ = ["SwitchingProtocol"]


class SwitchingProtocol(Protocol):
    """A protocol that speaks a plaintext preamble, then hands its stream on.

    Subclasses handle the preamble in L{preamble_received} (for a relay leg:
    send the framed C{RequestRelay}); then L{switch_protocol} connects another
    protocol (typically from L{litedesk.session.tls.wrap_server} or
    L{litedesk.session.tls.wrap_client}) to the same
    transport, and every later byte and the connection loss go to it.
    """

    _next: IProtocol | None = None

    def switch_protocol(self, protocol: IProtocol, leftover: bytes = b"") -> None:
        """Hand the stream to C{protocol}, first feeding it C{leftover}.

        @param leftover: bytes already read past the end of the preamble.
        """
        if self._next is not None:
            raise RuntimeError("the stream was already handed over")
        transport = self.transport
        assert transport is not None, "switch_protocol before connectionMade"
        self._next = protocol
        protocol.makeConnection(transport)
        if leftover:
            protocol.dataReceived(leftover)

    @property
    def switched_to(self) -> IProtocol | None:
        return self._next

    def dataReceived(self, data: bytes) -> None:
        if self._next is not None:
            self._next.dataReceived(data)
        else:
            self.preamble_received(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._next is not None:
            self._next.connectionLost(reason)
        else:
            self.preamble_lost(reason)

    def preamble_received(self, data: bytes) -> None:
        """Bytes that arrived before L{switch_protocol}; override."""

    def preamble_lost(self, reason: Failure) -> None:
        """The connection was lost before L{switch_protocol}; override."""
