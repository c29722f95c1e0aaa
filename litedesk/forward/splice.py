# -*- test-case-name: tests.test_forward_splice -*-
"""A bidirectional byte pipe between a session in raw mode and a TCP connection.

After a port forward's login the session carries the tunnelled bytes
(L{litedesk.session.framing.MessageProtocol.start_raw}); L{Splice} copies
them to and from the TCP connection on the other end (the target on the
host, the local client on the viewer), as RustDesk's forward loop does
(rustdesk src/server/connection.rs, src/port_forward.rs).

Flow control both ways: each side's transport is the consumer of the other
side's reading (an C{IPushProducer} that pauses and resumes it), so a slow
reader on one end stops the other end's reads instead of letting the
writes pile up.  Twisted's TCP transport pauses its producer once 64 KiB
wait in its buffer, so neither side holds much more than that plus one read
(about 128 KiB, under the 256 KiB budget of docs/protocol.rst §13).

When either side closes (or half-closes: a FIN ends the copy, as in
RustDesk's loop) the other is closed after what is queued for it has been
written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["HOLD_LIMIT", "RawSession", "Splice", "TcpLeg"]

# What a TCP leg keeps before it is spliced (the viewer's local client
# typing during the login, a target's banner): beyond this its reading is
# paused until the splice takes the bytes.
HOLD_LIMIT = 256 * 1024

_log = Logger(namespace="litedesk.forward")


class RawSession(Protocol):
    """What the splice needs of a session in raw mode (a MessageProtocol)."""

    @property
    def transport(self) -> Any: ...

    @property
    def closing(self) -> bool: ...

    def write_raw(self, data: bytes) -> None: ...

    def close(self, reason: str, **fields: object) -> None: ...


@implementer(IPushProducer)
class _ReadPauser:
    """Pauses and resumes the reading of one transport, for another's flow control."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        _call(self._transport, "pauseProducing")

    def resumeProducing(self) -> None:
        _call(self._transport, "resumeProducing")

    def stopProducing(self) -> None:
        # The consumer is going away; the splice closes this side itself
        # once it hears of the loss.
        pass


def _call(transport: Any, name: str) -> None:
    # Not every stream layer pauses (a WebSocket bridge may not): then that
    # direction is not flow-controlled, which costs memory but not data.
    method = getattr(transport, name, None)
    if method is not None:
        method()


class TcpLeg(TwistedProtocol):
    """The TCP connection of a forward (to the target, or from a local client).

    Until L{Splice} takes it over, what arrives is held (at most
    L{HOLD_LIMIT} bytes, then reading pauses).
    """

    def __init__(self) -> None:
        self.splice: Splice | None = None
        self.held = bytearray()
        self.lost: Failure | None = None
        self.on_lost: Callable[[Failure], None] | None = None
        self._paused = False

    def dataReceived(self, data: bytes) -> None:
        if self.splice is not None:
            self.splice.from_tcp(data)
            return
        self.held += data
        if len(self.held) > HOLD_LIMIT and not self._paused:
            self._paused = True
            _call(self.transport, "pauseProducing")

    def take_held(self) -> bytes:
        held, self.held = bytes(self.held), bytearray()
        if self._paused:
            self._paused = False
            _call(self.transport, "resumeProducing")
        return held

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = reason
        if self.splice is not None:
            self.splice.tcp_lost(reason)
        elif self.on_lost is not None:
            self.on_lost(reason)


class Splice:
    """Copies bytes between C{session} (raw) and C{leg} until either ends.

    Start it with L{start} once the session is raw: its receiver must be
    L{from_session}.  Whoever owns the session calls L{session_lost} when
    the session's connection is gone.

    @ivar bytes_to_tcp: bytes that came out of the session into the TCP leg.
    @ivar bytes_to_session: bytes that came from the TCP leg into the session.
    """

    def __init__(
        self,
        session: RawSession,
        leg: TcpLeg,
        clock: IReactorTime,
        on_end: Callable[[Splice, str], None] | None = None,
    ) -> None:
        self.session = session
        self.leg = leg
        self.clock = clock
        self.on_end = on_end
        self.bytes_to_tcp = 0
        self.bytes_to_session = 0
        self.started = clock.seconds()
        self.ended = False
        self._registered: list[Any] = []

    @property
    def duration(self) -> float:
        return self.clock.seconds() - self.started

    def start(self, first_to_session: bytes = b"", first_to_tcp: bytes = b"") -> None:
        """Join both sides, after writing what either side already had for the other.

        @param first_to_session: bytes the TCP leg had before (besides what
            it holds itself).
        @param first_to_tcp: bytes the session delivered before the splice.
        """
        self.leg.splice = self
        self._consume(self.session.transport, self.leg.transport)
        self._consume(self.leg.transport, self.session.transport)
        if first_to_tcp:
            self.from_session(first_to_tcp)
        held = first_to_session + self.leg.take_held()
        if held:
            self.from_tcp(held)
        if self.leg.lost is not None:
            self.tcp_lost(self.leg.lost)

    def _consume(self, consumer: Any, reader: Any) -> None:
        register = getattr(consumer, "registerProducer", None)
        if register is None or reader is None:
            return
        try:
            register(_ReadPauser(reader), True)
        except RuntimeError as e:  # another producer is registered already
            _log.warn("Forward not flow-controlled one way: {error}", error=str(e))
            return
        self._registered.append(consumer)

    def _release(self) -> None:
        # TLS closes only once no producer is registered (Twisted's
        # TLSMemoryBIOProtocol.loseConnection), so both go before any close.
        for consumer in self._registered:
            unregister = getattr(consumer, "unregisterProducer", None)
            if unregister is not None:
                unregister()
        self._registered.clear()

    def from_session(self, data: bytes) -> None:
        """The session's receiver: tunnelled bytes for the TCP leg."""
        if self.ended or self.leg.transport is None:
            return
        self.bytes_to_tcp += len(data)
        self.leg.transport.write(data)

    def from_tcp(self, data: bytes) -> None:
        if self.ended:
            return
        self.bytes_to_session += len(data)
        self.session.write_raw(data)

    def tcp_lost(self, reason: Failure) -> None:
        """The TCP leg is gone: close the session after what is queued."""
        if self._end("forwarded TCP connection closed"):
            self.session.close("forwarded TCP connection closed")

    def session_lost(self) -> None:
        """The session is gone: close the TCP leg after what is queued."""
        if self._end("session closed") and self.leg.transport is not None:
            self.leg.transport.loseConnection()

    def close(self) -> None:
        """End both sides (the viewer stopping)."""
        if self._end("stopped"):
            self.session.close("forward stopped")
            if self.leg.transport is not None:
                self.leg.transport.loseConnection()

    def _end(self, why: str) -> bool:
        if self.ended:
            return False
        self.ended = True
        self._release()
        if self.on_end is not None:
            self.on_end(self, why)
        return True
