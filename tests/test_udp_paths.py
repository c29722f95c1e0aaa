"""UDP hole punching with QUIC sessions end to end on loopback (no root needed).

The real server (its UDP punch brokering, docs/protocol.rst §5.12), the host's
push handlers with L{litedesk.host.udp_paths}, and the viewer's route code
(L{litedesk.viewer.route}, L{litedesk.viewer.udp_route}): the viewer announces
its punch socket by UDP, the host answers C{PunchHoleSent} by UDP, both probe,
and the session runs over QUIC pinned to the host key.  Loopback has no NAT:
tests/test_udp_paths_lab.py proves the traversal on real NATs.
"""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.protocol import DatagramProtocol

from litedesk.host.udp_paths import HostUdpPaths
from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC
from litedesk.quic.host import QuicHost
from litedesk.quic.stream_transport import QuicStreamTransport
from litedesk.quic.tls_config import host_configuration
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import wrap_client
from litedesk.viewer import udp_route
from litedesk.viewer.route import Route, find_host
from litedesk.viewer.udp_route import UdpPlan, connect_udp

from .support.polling import until
from .support.ports import free_port_pair
from .test_host_paths import HOST_ID, Marker, PathFixture

reactor: Any = _reactor


class QuicMarker(Marker):
    """test_host_paths' Marker that also notes whether it was ever connected."""

    connected = False

    def connectionMade(self) -> None:
        self.connected = True


class UdpPathFixture(PathFixture):
    """PathFixture with UDP punching on the host (both sides declared ASYMMETRIC)."""

    own_nat = ASYMMETRIC

    def server_args(self) -> list[str]:
        # UDP and TCP on one port number, as a real server has them: the
        # viewer's UDP NAT test and the host's UDP PunchHoleSent go to the
        # port its TCP connection reached.
        port = free_port_pair()
        return [
            "--udp-endpoint",
            f"udp:{port}:interface=127.0.0.1",
            "--tcp-endpoint",
            f"tcp:{port}:interface=127.0.0.1",
        ]

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.quic_sessions: list[tuple[str, QuicMarker]] = []
        self.quic_hosts: list[QuicHost] = []
        self.paths.nat_type = lambda: self.own_nat
        self.paths.udp = HostUdpPaths(reactor, HOST_ID, self.make_quic_host, interface="127.0.0.2")
        # A different "public IP" than the viewer's 127.0.0.1: PunchHole, not FetchLocalAddr.
        yield self.register("127.0.0.2")

    def make_quic_host(self, path: str) -> QuicHost:
        def session(addr: Any) -> QuicMarker:
            m = QuicMarker(b"hello from host\n")
            self.quic_sessions.append((path, m))
            return m

        host = QuicHost(host_configuration(self.host_key, HOST_ID), session, reactor)
        self.quic_hosts.append(host)
        return host

    def find(self, **kw: Any) -> Deferred[Route]:
        return ensureDeferred(
            find_host(
                reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, nat_test=False, **kw
            )
        )


class UdpPunchTests(UdpPathFixture):
    @inlineCallbacks
    def test_quic_session_over_the_punched_path(self) -> Any:
        """The host answers by UDP: the route is C{udp}, and a pinned QUIC session runs
        on the punched sockets, carrying data both ways."""
        route: Route = yield self.find()
        self.assertEqual(route.path, "udp")
        assert route.udp is not None
        self.addCleanup(route.udp.candidate.close)
        self.assertEqual(route.udp.host[0], "127.0.0.2")
        marker = QuicMarker(b"hello from viewer\n")
        creator = viewer_context_factory(route.host_pk)
        tls = wrap_client(Marker(b"unused\n"), creator)
        path = yield ensureDeferred(connect_udp(reactor, route.udp, marker, creator, tls))
        self.assertEqual(path, "udp")
        self.assertIsInstance(marker.transport, QuicStreamTransport)
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        self.assertEqual([p for p, _ in self.quic_sessions], ["udp"])
        host_got = yield self.quic_sessions[0][1].got.addTimeout(5, reactor)
        self.assertEqual(host_got, b"hello from viewer\n")
        self.assertEqual(self.host_sessions, [])  # no TCP session at all
        marker.transport.loseConnection()  # type: ignore[union-attr]
        yield marker.lost
        # The host's punched socket closes with its connection; the job slot is free.
        yield self.paths.idle()
        yield until(lambda: self.paths.slots.total == 0, 5.0, 0.02, "the job slot")

    @inlineCallbacks
    def test_no_udp_keeps_the_tcp_punch(self) -> Any:
        """C{--no-udp} on the viewer: no C{udp_port} is sent, the host punches TCP."""
        route: Route = yield self.find(udp=False)
        self.assertEqual(route.path, "punch")
        self.assertIsNone(route.udp)
        self.paths.stop()
        yield self.paths.idle()

    @inlineCallbacks
    def test_host_without_udp_punches_tcp(self) -> Any:
        """A host with C{--no-udp} (or a RustDesk host) answers by TCP: the viewer's
        UDP socket is closed and the route is the TCP punch."""
        self.paths.udp = None
        route: Route = yield self.find()
        self.assertEqual(route.path, "punch")
        self.assertIsNone(route.udp)
        self.paths.stop()
        yield self.paths.idle()

    @inlineCallbacks
    def test_wrong_host_key_is_not_a_path_failure(self) -> Any:
        """A QUIC peer with another key is refused with HostKeyMismatch, not taken
        quietly to the relay."""
        route: Route = yield self.find()
        assert route.udp is not None
        self.addCleanup(route.udp.candidate.close)
        other = viewer_context_factory(bytes(SigningKey.generate().verify_key))
        marker = QuicMarker(b"hello from viewer\n")
        tls = wrap_client(Marker(b"unused\n"), other)
        d = ensureDeferred(connect_udp(reactor, route.udp, marker, other, tls))
        yield self.assertFailure(d, HostKeyMismatch)
        self.assertFalse(marker.connected)


class PlanTests(UdpPathFixture):
    def test_udp_only_when_at_most_one_side_is_symmetric(self) -> None:
        """The host punches UDP for a viewer that asked, unless both NATs are symmetric."""
        from litedesk.proto import rendezvous_pb2 as rz

        udp = HostUdpPaths(reactor, HOST_ID, self.make_quic_host)
        asked = rz.PunchHole(udp_port=40000, nat_type=ASYMMETRIC)
        self.assertTrue(udp.wants(asked, ASYMMETRIC))
        self.assertTrue(udp.wants(asked, SYMMETRIC))
        hard = rz.PunchHole(udp_port=40000, nat_type=SYMMETRIC)
        self.assertTrue(udp.wants(hard, ASYMMETRIC))
        self.assertFalse(udp.wants(hard, SYMMETRIC))
        self.assertFalse(udp.wants(rz.PunchHole(nat_type=ASYMMETRIC), ASYMMETRIC))


class FailureTests(UdpPathFixture):
    @inlineCallbacks
    def test_silent_host_address_gives_none(self) -> Any:
        """Probes to an address nobody answers: C{connect_udp} gives up (None) within
        its window and leaves the session untouched for the relay."""
        self.patch(udp_route, "PUNCH_WINDOW", 0.5)
        route: Route = yield self.find()
        assert route.udp is not None
        self.addCleanup(route.udp.candidate.close)
        # The host stops punching (as if its NAT dropped everything).
        assert self.paths.udp is not None
        self.paths.udp.stop()
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(silent.stopListening)
        dead = UdpPlan(route.udp.candidate, ("127.0.0.1", silent.getHost().port), ASYMMETRIC, None)
        marker = QuicMarker(b"hello from viewer\n")
        creator = viewer_context_factory(route.host_pk)
        tls = wrap_client(Marker(b"unused\n"), creator)
        path = yield ensureDeferred(connect_udp(reactor, dead, marker, creator, tls))
        self.assertIsNone(path)
        self.assertFalse(marker.connected)

    @inlineCallbacks
    def test_rustdesk_udp_peer_is_left_at_once(self) -> Any:
        """A host that sends RustDesk's empty punch datagrams (KCP follows) is
        recognised: the viewer gives up long before its window ends."""
        route: Route = yield self.find()
        assert route.udp is not None
        self.addCleanup(route.udp.candidate.close)
        candidate = route.udp.candidate
        kcp = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(kcp.stopListening)
        target = ("127.0.0.1", candidate.local_port)
        sender = reactor.callLater(0.05, kcp.write, b"", target)
        self.addCleanup(lambda: sender.active() and sender.cancel())
        dead = UdpPlan(candidate, ("127.0.0.1", kcp.getHost().port), ASYMMETRIC, None)
        marker = QuicMarker(b"hello from viewer\n")
        creator = viewer_context_factory(route.host_pk)
        tls = wrap_client(Marker(b"unused\n"), creator)
        path = yield ensureDeferred(connect_udp(reactor, dead, marker, creator, tls))
        self.assertIsNone(path)
        self.assertTrue(candidate.puncher.foreign)
        self.assertFalse(marker.connected)
