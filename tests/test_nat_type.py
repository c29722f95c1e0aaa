"""The NAT type test's decision and retry schedule (no network)."""

from __future__ import annotations

import socket
from itertools import islice
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred, fail, inlineCallbacks, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.nat.nattype import (
    ASYMMETRIC,
    SYMMETRIC,
    UNKNOWN,
    NatProbe,
    NatTypeMonitor,
    backoff_delays,
    classify,
    probe_nat_type,
)
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.session.links import LinkError
from litedesk.wire.bytescodec import encode_frame

reactor: Any = _reactor


class ClassifyTests(SynchronousTestCase):
    def test_same_port_is_asymmetric(self) -> None:
        """Both server ports saw one public port: the NAT is punchable (ASYMMETRIC)."""
        self.assertEqual(classify(40000, 40000), ASYMMETRIC)

    def test_different_ports_are_symmetric(self) -> None:
        """A new public port per destination means SYMMETRIC (go to the relay)."""
        self.assertEqual(classify(40000, 51234), SYMMETRIC)

    def test_missing_port_is_refused(self) -> None:
        """A probe that observed no port cannot decide anything."""
        self.assertRaises(ValueError, classify, 0, 40000)

    def test_backoff_schedule(self) -> None:
        """Retries wait 1, 3, 7, 15 ... seconds, capped."""
        self.assertEqual(list(islice(backoff_delays(), 5)), [1, 3, 7, 15, 31])
        self.assertEqual(list(islice(backoff_delays(cap=10), 5)), [1, 3, 7, 10, 10])


class MonitorTests(SynchronousTestCase):
    def test_retries_until_known(self) -> None:
        """Failed tests are repeated after 1, 3, 7 s; the first answer sets the type."""
        clock = Clock()
        outcomes: list[Deferred[NatProbe]] = [
            fail(LinkError("no answer")),
            fail(LinkError("no answer")),
            succeed(NatProbe(SYMMETRIC, ("10.0.0.2", 4000), (1, 2))),
        ]
        calls: list[float] = []

        def probe() -> Deferred[NatProbe]:
            calls.append(clock.seconds())
            return outcomes.pop(0)

        m = NatTypeMonitor(clock, probe, refresh=None)
        got: list[int] = []
        m.known().addCallback(got.append)
        m.start()
        self.assertEqual(m.nat_type, UNKNOWN)
        clock.advance(1)
        self.assertEqual(m.nat_type, UNKNOWN)
        clock.advance(3)
        self.assertEqual(m.nat_type, SYMMETRIC)
        self.assertEqual(calls, [0, 1, 4])
        self.assertEqual(got, [SYMMETRIC])
        self.assertEqual(self.successResultOf(m.known()), SYMMETRIC)

    def test_stop_cancels_retry(self) -> None:
        """A stopped monitor schedules nothing more."""
        clock = Clock()
        m = NatTypeMonitor(clock, lambda: fail(LinkError("down")))
        m.start()
        m.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_known_type_is_retested(self) -> None:
        """A known type is tested again after the refresh interval and may change."""
        clock = Clock()
        answers = [ASYMMETRIC, SYMMETRIC]

        def probe() -> Deferred[NatProbe]:
            return succeed(NatProbe(answers.pop(0), ("10.0.0.2", 4000), (1, 1)))

        m = NatTypeMonitor(clock, probe, refresh=600)
        m.start()
        self.assertEqual(m.nat_type, ASYMMETRIC)
        clock.advance(599)
        self.assertEqual(m.nat_type, ASYMMETRIC)
        clock.advance(1)
        self.assertEqual(m.nat_type, SYMMETRIC)
        m.stop()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failed_retest_keeps_the_type(self) -> None:
        """When a re-test fails the last known type stays in use."""
        clock = Clock()
        outcomes: list[Deferred[NatProbe]] = [
            succeed(NatProbe(ASYMMETRIC, ("10.0.0.2", 4000), (1, 1))),
            fail(LinkError("server away")),
        ]
        m = NatTypeMonitor(clock, lambda: outcomes.pop(0), refresh=600)
        m.start()
        clock.advance(600)
        self.assertEqual(m.nat_type, ASYMMETRIC)
        m.stop()


class _Answer(Protocol):
    """Answers one TestNatRequest with the source port it came from."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        port = self.transport.getPeer().port  # type: ignore[attr-defined]
        resp = rz.RendezvousMessage(test_nat_response=rz.TestNatResponse(port=port))
        self.transport.write(encode_frame(resp.SerializeToString()))


class LoopbackProbeTests(TestCase):
    def _listen_pair(self) -> int:
        """Listen on P and P-1 (loopback); return P."""
        for _ in range(50):
            p = reactor.listenTCP(0, Factory.forProtocol(_Answer), interface="127.0.0.1")
            port = int(p.getHost().port)
            try:
                q = reactor.listenTCP(port - 1, Factory.forProtocol(_Answer), interface="127.0.0.1")
            except CannotListenError:
                p.stopListening()
                continue
            self.addCleanup(p.stopListening)
            self.addCleanup(q.stopListening)
            return port
        raise RuntimeError("no free port pair")

    @inlineCallbacks
    def test_probe_without_nat(self) -> Any:
        """Without a NAT both server ports see our own port: ASYMMETRIC (punchable)."""
        port = self._listen_pair()
        result = yield ensureDeferred(probe_nat_type(reactor, ("127.0.0.1", port)))
        self.assertEqual(result.nat_type, ASYMMETRIC)
        self.assertEqual(result.ports, (result.local[1], result.local[1]))

    @inlineCallbacks
    def test_probe_fails_without_second_port(self) -> Any:
        """A server without the P-1 listener gives a LinkError, not a guess."""
        # A listener on P whose P-1 we can hold (bound, not listening: refused);
        # another P when some other process has P-1.
        for _ in range(20):
            p = reactor.listenTCP(0, Factory.forProtocol(_Answer), interface="127.0.0.1")
            port = int(p.getHost().port)
            blocker = socket.socket()
            try:
                blocker.bind(("127.0.0.1", port - 1))
            except OSError:
                blocker.close()
                yield p.stopListening()
                continue
            break
        else:
            self.fail("no port P with P-1 free in 20 tries")
        self.addCleanup(p.stopListening)
        self.addCleanup(blocker.close)
        with self.assertRaises(LinkError):
            yield ensureDeferred(probe_nat_type(reactor, ("127.0.0.1", port)))
