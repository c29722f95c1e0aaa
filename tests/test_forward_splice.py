"""The forward's splice over real loopback sockets: bytes, flow control, closing.

A session in raw mode is spliced to a TCP connection.  When the reader on
one end stops reading, the splice stops reading the other end (the writer is
paused) and what waits in user space stays under the 256 KiB budget; once
the reader reads again everything arrives intact, and a close on one side
closes the other after the queued bytes are through.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from litedesk.forward.splice import Splice, TcpLeg
from litedesk.screen.backpressure import transport_buffered
from litedesk.session.framing import MessageProtocol

from .support.polling import until

SIZE = 4 * 1024 * 1024
BUDGET = 256 * 1024


class Peer(Protocol):
    """An end that can stop reading; records what it got and when it closed."""

    def __init__(self, send: bytes = b"", read: bool = True) -> None:
        self.send = send
        self.read = read
        self.got = bytearray()
        self.lost = False

    def connectionMade(self) -> None:
        if not self.read:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        if self.send:
            self.transport.write(self.send)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.got += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True


class RawEnd(MessageProtocol):
    splice: Splice | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self.splice is not None:
            self.splice.session_lost()


def _reading(transport: Any) -> bool:
    return transport in reactor.getReaders()


class SpliceTests(TestCase):
    @inlineCallbacks
    def _setup(self, target: Peer, viewer: Peer) -> Any:
        """target <-TCP-> leg | splice | session <-TCP-> viewer."""
        target_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: target)
        )
        self.addCleanup(target_port.stopListening)
        sessions: Deferred[RawEnd] = Deferred()

        def build() -> RawEnd:
            end = RawEnd()
            reactor.callLater(0, sessions.callback, end)
            return end

        session_port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(build)
        )
        self.addCleanup(session_port.stopListening)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", session_port.getHost().port), viewer
        )
        session = yield sessions
        leg = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", target_port.getHost().port), TcpLeg()
        )
        splice = session.splice = Splice(session, leg, reactor)
        session.start_raw(splice.from_session)
        splice.start()
        return session, leg, splice

    @inlineCallbacks
    def test_slow_viewer_pauses_target(self) -> Any:
        data = os.urandom(SIZE)
        target, viewer = Peer(send=data), Peer(read=False)
        session, leg, splice = yield self._setup(target, viewer)
        # The viewer does not read: the leg to the target stops being read.
        yield until(lambda: not _reading(leg.transport), 30, 0.01, "the target to be paused")
        self.assertLessEqual(transport_buffered(session.transport), BUDGET)
        self.assertLess(splice.bytes_to_session, SIZE)
        viewer.transport.resumeProducing()  # type: ignore[union-attr]
        # The target closed after writing: everything arrives, then the close.
        yield until(lambda: viewer.lost, 60, 0.01, "the viewer's connection to close")
        self.assertEqual(hashlib.sha256(viewer.got).digest(), hashlib.sha256(data).digest())
        self.assertEqual(splice.bytes_to_session, SIZE)

    @inlineCallbacks
    def test_slow_target_pauses_session(self) -> Any:
        data = os.urandom(SIZE)
        target, viewer = Peer(read=False), Peer()
        session, leg, splice = yield self._setup(target, viewer)
        # Only now, as a real viewer sends only after the host's LoginResponse
        # (which the host sends as it goes raw): bytes sent before would meet
        # the session's frame parser.
        viewer.transport.write(data)  # type: ignore[union-attr]
        viewer.transport.loseConnection()  # type: ignore[union-attr]
        yield until(lambda: not _reading(session.transport), 30, 0.01, "the session paused")
        self.assertLessEqual(transport_buffered(leg.transport), BUDGET)
        target.transport.resumeProducing()  # type: ignore[union-attr]
        # The viewer closed after writing: the target gets it all, then the close.
        yield until(lambda: target.lost, 60, 0.01, "the target's connection to close")
        self.assertEqual(hashlib.sha256(target.got).digest(), hashlib.sha256(data).digest())
        self.assertEqual(splice.bytes_to_tcp, SIZE)
