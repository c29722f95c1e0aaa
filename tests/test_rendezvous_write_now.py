"""Tests for L{litedesk.rendezvous.protocols.write_now}: messages sent at once
when nothing is buffered, over a real loopback TCP connection, arrive whole and
in order even when the kernel takes only part of one."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.rendezvous.protocols import write_now

# More than a loopback socket's send buffer takes at once, so the first
# write is partial and the rest must queue behind it.
BIG = bytes(range(256)) * (16 * 1024)  # 4 MiB


class Sender(Protocol):
    def connectionMade(self) -> None:
        for chunk in (BIG, b"second", b"", b"third"):
            write_now(self.transport, chunk)
        self.transport.loseConnection()  # type: ignore[union-attr]


class Collector(Protocol):
    def __init__(self) -> None:
        self.data = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.done.callback(bytes(self.data))


class WriteNowTests(TestCase):
    async def test_large_then_small_messages_arrive_in_order(self) -> None:
        """
        A message bigger than the kernel takes at once, then small ones, reach
        the peer complete and in the order written, and a close written after
        them does not cut them off.
        """
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Sender)
        )
        self.addCleanup(port.stopListening)
        collector = Collector()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(lambda: collector)
        )
        received = await collector.done
        self.assertEqual(len(received), len(BIG) + len(b"secondthird"))
        self.assertEqual(received, BIG + b"secondthird")


class WriteNowFallbackTests(SynchronousTestCase):
    def test_other_transports_buffer_as_write(self) -> None:
        """A transport that is not a TCP socket (a test's, TLS) gets C{write}."""
        transport = StringTransport()
        write_now(transport, b"a")
        write_now(transport, b"b")
        write_now(None, b"lost")
        self.assertEqual(transport.value(), b"ab")
