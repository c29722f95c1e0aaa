"""The host's QUIC socket against hostile senders (litedesk.quic.host).

Anyone can send datagrams to the host's QUIC port.  These tests check what
a user would notice:

- garbage (random bytes; packets that name a live connection; Initials that
  parse but do not decrypt) never raises out of the socket's reader, never
  disturbs an established session, and creates no state beyond the
  handshake cap (hypothesis, on an in-memory datagram wire with a
  C{Clock}, so that thousands of examples stay fast and deterministic);
- the same on real loopback sockets: a burst of garbage, then the live
  session still talks and a new viewer still gets in;
- a flood of real, never-finished handshakes from several addresses, or
  from the genuine viewer's own address, holds at most half of the
  per-source and global slots (further Initials get a stateless Retry,
  which a forged source never answers), and a genuine viewer gets in during
  the flood.
"""

from __future__ import annotations

import random
import socket
from typing import Any

from aioquic.quic.connection import QuicConnection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.quic.tls_config import viewer_configuration
from litedesk.session.pinning import viewer_context_factory

from .support.polling import until
from .support.quic_pair import (
    HOST_MARKER,
    MemoryPair,
    QuicPair,
    Recorder,
)


def _initial_like(first: int, cid: bytes, payload: bytes, token: bytes = b"") -> bytes:
    """A long-header Initial of QUIC v1 that parses but holds garbage (and
    perhaps a forged Retry token)."""
    head = bytes([0xC0 | (first & 0x0F)]) + (1).to_bytes(4, "big")
    head += bytes([len(cid)]) + cid + bytes([len(cid)]) + cid
    head += bytes([len(token)]) + token
    body = payload.ljust(1200, b"\x00")
    return head + (0x4000 | len(body)).to_bytes(2, "big") + body


def _garbage(live_cid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=1500),
        # Short-header packets naming the live connection (fail to decrypt).
        st.tuples(st.integers(0, 63), st.binary(max_size=1400)).map(
            lambda t: bytes([0x40 | t[0]]) + live_cid + t[1]
        ),
        st.tuples(
            st.integers(0, 255),
            st.binary(min_size=8, max_size=20),
            st.binary(),
            st.binary(max_size=60),
        ).map(lambda t: _initial_like(*t)),
    )


class GarbageDatagramTests(SynchronousTestCase):
    def setUp(self) -> None:
        pair = MemoryPair()
        self.clock, self.wire, self.hosts = pair.clock, pair.wire, pair.hosts
        self.host, self.quic, self.viewer = pair.host, pair.quic, pair.viewer
        assert self.viewer.received == HOST_MARKER, self.viewer.received
        (self.live,) = self.host.links
        self.exchanged = 0

    def tearDown(self) -> None:
        self.host.close_all()
        self.quic.close()

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), sources=st.lists(st.integers(1, 250), min_size=1, max_size=10))
    def test_garbage_does_not_break_the_session(
        self, data: st.DataObject, sources: list[int]
    ) -> None:
        """
        Random datagrams from random sources never raise out of the
        socket's reader; the established session keeps exchanging bytes
        both ways; at most the handshake caps' worth of state is created.
        """
        for last in sources:
            datagram = data.draw(_garbage(self.live.connection.host_cid))
            self.host.datagramReceived(datagram, (f"192.0.2.{last}", 40000 + last))
        self.wire.pump()
        self.assertTrue(self.live.established and not self.live.ended)
        self.assertIn(self.live, self.host.links)
        self.assertLessEqual(len(self.host.handshaking), self.host.max_handshakes)
        self.assertLessEqual(len(self.host.links), self.host.max_handshakes + 1)
        for last in sources:
            self.assertLessEqual(self.host.handshakes_from(f"192.0.2.{last}"), 4)
        # The session still talks, both ways.
        self.exchanged += 1
        marker = b"ping-%d;" % self.exchanged
        self.viewer.transport.write(marker)
        self.hosts[0].transport.write(marker)
        self.wire.pump()
        self.assertTrue(self.hosts[0].received.endswith(marker))
        self.assertTrue(self.viewer.received.endswith(marker))
        self.assertEqual(len(self.hosts), 1)


class RealSocketTests(TestCase):
    def _pair(self, **options: Any) -> tuple[QuicPair, list[Recorder]]:
        hosts: list[Recorder] = []

        def build(addr: object) -> Recorder:
            hosts.append(Recorder(greeting=HOST_MARKER))
            return hosts[-1]

        return QuicPair(self, build, **options), hosts

    def _socket(self, source: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind((source, 0))
        return sock

    @defer.inlineCallbacks
    def test_garbage_burst_on_real_sockets(self) -> Any:
        """
        A burst of random and connection-naming garbage to the host's UDP
        port: the live session still talks and a second viewer connects.
        """
        pair, hosts = self._pair()
        viewer = Recorder()
        pair.connect(viewer, viewer_context_factory(pair.host_pk))
        yield until(lambda: viewer.received == HOST_MARKER, message="the first session")
        (live,) = pair.host.links
        rnd = random.Random(14)
        sock = self._socket("127.0.0.1")
        for i in range(300):
            junk = rnd.randbytes(rnd.randrange(0, 1500))
            if i % 3 == 1:
                junk = bytes([0x40]) + live.connection.host_cid + junk
            elif i % 3 == 2:
                junk = _initial_like(i, rnd.randbytes(8), junk)
            sock.sendto(junk, ("127.0.0.1", pair.port))
        yield until(lambda: pair.host.dropped > 0, message="the garbage arriving")
        viewer.transport.write(b"still here")
        yield until(lambda: hosts[0].received == b"still here", message="the live session")
        second = Recorder()
        pair.connect(second, viewer_context_factory(pair.host_pk))
        yield until(lambda: second.received == HOST_MARKER, message="a second viewer")
        self.assertFalse(live.ended)

    @defer.inlineCallbacks
    def test_handshake_flood_is_capped(self) -> Any:
        """
        Real Initials that never finish their handshakes, from three source
        addresses (as forged sources would: they never answer): once half of
        the slots are taken (two of a source's four, four of all eight),
        further Initials only get a stateless Retry, so the flood holds four
        slots and a genuine viewer, which answers the Retry, gets in at once.
        """
        pair, hosts = self._pair(max_handshakes=8)
        target = ("127.0.0.1", pair.port)
        for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
            sock = self._socket(source)
            _send_initials(sock, target, 6)
        yield until(lambda: pair.host.retries >= 14, message="the flood arriving")
        self.assertEqual(len(pair.host.handshaking), 4)
        held = [pair.host.handshakes_from(f"127.0.0.{i}") for i in (2, 3, 4)]
        self.assertEqual(held, [2, 2, 0])
        retries = pair.host.retries
        viewer = Recorder()
        pair.connect(viewer, viewer_context_factory(pair.host_pk))
        yield until(lambda: viewer.received == HOST_MARKER, message="the genuine viewer")
        self.assertEqual(pair.host.retries, retries + 1)
        self.assertEqual(len(hosts), 1)
        # The flood's handshakes are still held, and still only those.
        self.assertEqual(len(pair.host.handshaking), 4)

    @defer.inlineCallbacks
    def test_flood_from_the_viewers_address(self) -> Any:
        """
        Initials that look like they come from the genuine viewer's own
        address take at most half of that address's slots; the viewer,
        answering the Retry, still gets one.
        """
        pair, hosts = self._pair()
        target = ("127.0.0.1", pair.port)
        sock = self._socket("127.0.0.1")
        _send_initials(sock, target, 10)
        yield until(lambda: pair.host.retries >= 8, message="the flood arriving")
        self.assertEqual(pair.host.handshakes_from("127.0.0.1"), 2)
        retries = pair.host.retries
        viewer = Recorder()
        pair.connect(viewer, viewer_context_factory(pair.host_pk))
        yield until(lambda: viewer.received == HOST_MARKER, message="the genuine viewer")
        self.assertEqual(pair.host.retries, retries + 1)
        self.assertEqual(len(hosts), 1)


def _send_initials(sock: socket.socket, target: tuple[str, int], count: int) -> None:
    """C{count} genuine Initials of fresh connections from C{sock} to C{target}."""
    for _ in range(count):
        client = QuicConnection(configuration=viewer_configuration())
        client.connect(target, now=0.0)
        for datagram, _addr in client.datagrams_to_send(now=0.0):
            sock.sendto(datagram, target)
