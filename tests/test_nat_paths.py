"""Hole punching end to end on loopback (no root needed): the real server, HostPaths
and the viewer's route code, with both NAT types declared ASYMMETRIC.

Loopback has no NAT, so this proves the protocol plumbing (PunchHoleSent,
shared ports, first stream wins, TLS on the winning stream, relay fallback);
tests/test_nat_lab.py proves the traversal itself on real NATs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from litedesk.host.path_policy import host_path_choice
from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC, UNKNOWN
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import wrap_client
from litedesk.viewer.route import Route, connect_punched, find_host

from .test_host_paths import HOST_ID, Marker, PathFixture

reactor: Any = _reactor


class ChoiceTests(SynchronousTestCase):
    def test_host_path_choice(self) -> None:
        """The host punches unless a side is SYMMETRIC, relay is forced or it has no NAT test."""
        self.assertEqual(host_path_choice(ASYMMETRIC, ASYMMETRIC, False), "")
        self.assertEqual(host_path_choice(UNKNOWN, UNKNOWN, False), "")
        self.assertIn("symmetric", host_path_choice(ASYMMETRIC, SYMMETRIC, False))
        self.assertIn("symmetric", host_path_choice(SYMMETRIC, ASYMMETRIC, False))
        self.assertEqual(host_path_choice(ASYMMETRIC, ASYMMETRIC, True), "relay forced")
        self.assertEqual(host_path_choice(None, ASYMMETRIC, False), "no NAT test")


class LoopbackPunchTests(PathFixture):
    host_paths_options: ClassVar[dict[str, Any]] = {"nat_type": lambda: ASYMMETRIC}

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        # A different "public IP" than the viewer's 127.0.0.1: PunchHole, not FetchLocalAddr.
        yield self.register("127.0.0.2")

    @inlineCallbacks
    def test_punched_session(self) -> Any:
        """Both ASYMMETRIC: the viewer gets a punch route and a direct pinned-TLS session."""
        route: Route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, nat_test=False)
        )
        self.assertEqual(route.path, "punch")
        self.assertEqual(route.peer_nat, ASYMMETRIC)
        marker = Marker(b"hello from viewer\n")
        tls = wrap_client(marker, viewer_context_factory(route.host_pk))
        path = yield ensureDeferred(
            connect_punched(reactor, route, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, tls)
        )
        self.assertEqual(path, "direct")
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        host_got = yield self.host_sessions[0].got.addTimeout(5, reactor)
        self.assertEqual(host_got, b"hello from viewer\n")
        yield self.paths.idle()  # the host's punch has finished...
        self.assertEqual(len(self.host_sessions), 1)  # ...and the losing stream got no session
        marker.transport.loseConnection()  # type: ignore[union-attr]
        yield marker.lost

    @inlineCallbacks
    def test_failed_punch_falls_back_to_relay(self) -> Any:
        """When the host's public address does not answer, the viewer ends up on the relay."""
        route: Route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, nat_test=False)
        )
        # Point the punch at a port nobody listens on (as if the NAT dropped it).
        dead = Route(
            "punch",
            route.host_pk,
            addr=("127.0.0.1", 1),
            local=route.local,
            relay_server=route.relay_server,
            peer_nat=route.peer_nat,
            punch_time=0.01,
        )
        marker = Marker(b"hello from viewer\n")
        tls = wrap_client(marker, viewer_context_factory(route.host_pk))
        path = yield ensureDeferred(
            connect_punched(reactor, dead, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, tls)
        )
        self.assertEqual(path, "relay")
        got = yield marker.got.addTimeout(10, reactor)
        self.assertEqual(got, b"hello from host\n")
        marker.transport.loseConnection()  # type: ignore[union-attr]
        yield marker.lost
        # Stopping the host ends its unanswered punch attempts.
        self.paths.stop()
        yield self.paths.idle()
