"""Hole-punching building blocks: timeouts, first-stream-wins, shared-port sockets.

The sockets tests run on loopback; the real NAT behaviour is in
tests/test_nat_lab.py.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC, UNKNOWN
from litedesk.nat.punch import PUNCH_CAP, Gate, GatedFactory, direct_timeout, punch_connect
from litedesk.nat.sockets import ConnectFailed, adopt, connect_from, listen_on

reactor: Any = _reactor


class TimeoutTests(SynchronousTestCase):
    def test_spec_values(self) -> None:
        """The direct attempt waits as RustDesk does: 1 s local/symmetric, 18 s without relay."""
        self.assertEqual(direct_timeout(True, ASYMMETRIC, ASYMMETRIC, True, 0.01), 1.0)
        self.assertEqual(direct_timeout(False, SYMMETRIC, ASYMMETRIC, True, 0.01), 1.0)
        self.assertEqual(direct_timeout(False, ASYMMETRIC, ASYMMETRIC, False, 0.01), 18.0)
        self.assertEqual(direct_timeout(False, ASYMMETRIC, SYMMETRIC, True, 0.5), 1.0)
        self.assertEqual(direct_timeout(False, ASYMMETRIC, ASYMMETRIC, True, 0.5, cap=None), 18.0)
        self.assertEqual(direct_timeout(False, UNKNOWN, UNKNOWN, True, 0.5, cap=None), 3.0)
        self.assertEqual(
            direct_timeout(False, UNKNOWN, UNKNOWN, True, 0.5, failed_before=True, cap=None), 1.5
        )

    def test_relay_fallback_is_quick(self) -> None:
        """With a relay known, a failing punch gives up within the cap (a few seconds)."""
        self.assertEqual(direct_timeout(False, ASYMMETRIC, ASYMMETRIC, True, 0.5), PUNCH_CAP)
        self.assertEqual(direct_timeout(False, UNKNOWN, UNKNOWN, True, 5.0), PUNCH_CAP)


class GateTests(SynchronousTestCase):
    def test_first_stream_wins(self) -> None:
        """Only the first stream gets the session; later ones are refused (closed)."""
        gate = Gate()
        made: list[Protocol] = []

        def make() -> Protocol:
            made.append(Protocol())
            return made[-1]

        factory = GatedFactory(gate, make)
        self.assertTrue(gate.claim("connected"))
        self.assertIsNone(factory.buildProtocol(None))
        self.assertEqual(made, [])
        self.assertEqual(gate.winner, "connected")
        self.assertEqual(gate.losers, ["accepted"])


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.made: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.made.callback(None)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost.callback(None)


class SharedPortTests(TestCase):
    @inlineCallbacks
    def test_connect_and_listen_on_one_port(self) -> Any:
        """A connection and a listener share one local port; both carry data."""
        target = socket.socket()
        target.bind(("127.0.0.1", 0))
        target.listen(1)
        self.addCleanup(target.close)
        first = Collect()
        yield ensureDeferred(
            connect_from(reactor, ("127.0.0.1", 0), target.getsockname(), first, 2.0)
        )
        local: Any = first.transport.getHost()  # type: ignore[union-attr]
        accepted: list[Collect] = []

        def make() -> Collect:
            accepted.append(Collect())
            return accepted[-1]

        gate = Gate()
        port = listen_on(reactor, ("127.0.0.1", local.port), GatedFactory(gate, make))
        self.addCleanup(port.stopListening)
        peer, _ = target.accept()
        self.addCleanup(peer.close)
        peer.sendall(b"over the first")
        # Someone connects to our shared port: the listener takes it.
        c = socket.create_connection(("127.0.0.1", local.port), timeout=2)
        self.addCleanup(c.close)
        c.sendall(b"to the listener")
        for _ in range(100):
            if accepted and accepted[0].data and first.data:
                break
            yield deferLater(0.02)
        self.assertEqual(first.data, b"over the first")
        self.assertEqual(accepted[0].data, b"to the listener")
        self.assertEqual(gate.winner, "accepted")
        first.transport.loseConnection()  # type: ignore[union-attr]
        accepted[0].transport.loseConnection()  # type: ignore[union-attr]
        yield first.lost
        yield accepted[0].lost

    @inlineCallbacks
    def test_refused_punch_gives_up(self) -> Any:
        """Punching at a closed port keeps retrying until the window ends, then reports none."""
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        addr = closed.getsockname()
        closed.close()
        gate = Gate()
        sock = yield ensureDeferred(punch_connect(reactor, ("127.0.0.1", 0), addr, 0.3, gate))
        self.assertIsNone(sock)
        self.assertIsNone(gate.winner)

    @inlineCallbacks
    def test_connect_failure_is_reported(self) -> Any:
        """A refused connect raises ConnectFailed naming the address."""
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        addr = closed.getsockname()
        closed.close()
        with self.assertRaises(ConnectFailed) as cm:
            yield ensureDeferred(connect_from(reactor, ("127.0.0.1", 0), addr, Collect(), 2.0))
        self.assertIn(str(addr[1]), str(cm.exception))

    def test_adopt_closes_the_original(self) -> Deferred[None]:
        """Adopting a connected socket leaves the reactor's copy; ours is closed."""
        a, b = socket.socketpair(socket.AF_UNIX)
        self.addCleanup(b.close)
        a.setblocking(False)
        proto = Collect()
        adopt(reactor, a, proto)
        self.assertEqual(a.fileno(), -1)
        proto.transport.loseConnection()  # type: ignore[union-attr]
        return proto.lost


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet.task import deferLater as _dl

    return _dl(reactor, seconds, lambda: None)
