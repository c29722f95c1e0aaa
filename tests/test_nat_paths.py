"""Hole punching end to end on loopback (no root needed): the real server, HostPaths
and the viewer's route code, with both NAT types declared ASYMMETRIC.

Loopback has no NAT, so this proves the protocol plumbing (PunchHoleSent,
shared ports, first stream wins, TLS on the winning stream, relay fallback);
tests/test_nat_lab.py proves the traversal itself on real NATs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host.paths import HostPaths, host_path_choice
from litedesk.host.registration import Registration, RegState
from litedesk.host.rendezvous_client import RendezvousClient
from litedesk.nat.nattype import ASYMMETRIC, SYMMETRIC, UNKNOWN
from litedesk.rendezvous.relaylist import RelayList
from litedesk.session.tls import (
    host_context_factory,
    viewer_context_factory,
    wrap_client,
    wrap_server,
)
from litedesk.viewer.route import Route, connect_punched, find_host

from .rendezvous_harness import sleep, start_server
from .test_host_paths import Marker

reactor: Any = _reactor
HOST_ID = "223456789"


class ChoiceTests(SynchronousTestCase):
    def test_host_path_choice(self) -> None:
        """The host punches unless a side is SYMMETRIC, relay is forced or it has no NAT test."""
        self.assertEqual(host_path_choice(ASYMMETRIC, ASYMMETRIC, False), "")
        self.assertEqual(host_path_choice(UNKNOWN, UNKNOWN, False), "")
        self.assertIn("symmetric", host_path_choice(ASYMMETRIC, SYMMETRIC, False))
        self.assertIn("symmetric", host_path_choice(SYMMETRIC, ASYMMETRIC, False))
        self.assertEqual(host_path_choice(ASYMMETRIC, ASYMMETRIC, True), "relay forced")
        self.assertEqual(host_path_choice(None, ASYMMETRIC, False), "no NAT test")


class LoopbackPunchTests(TestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.svc = start_server(Path(self.mktemp()))
        self.addCleanup(self.svc.stopService)
        yield sleep(0)
        server = self.svc.server
        self.server_key = server.key.public_key
        relay_port = (yield self.svc.getServiceNamed("relay").when_listening()).getHost().port
        server.relays = RelayList([f"127.0.0.1:{relay_port}"])
        self.udp = self.svc.getServiceNamed("rendezvous-udp").listening.getHost().port
        self.tcp = self.svc.getServiceNamed("rendezvous-tcp").listening.getHost().port
        self.host_key = SigningKey.generate()
        self.host_sessions: list[Marker] = []

        def make_session() -> Any:
            m = Marker(b"hello from host\n")
            self.host_sessions.append(m)
            return wrap_server(m, host_context_factory(self.host_key, HOST_ID))

        self.paths = HostPaths(
            reactor,
            HOST_ID,
            ("127.0.0.1", self.tcp),
            self.server_key,
            make_session,
            nat_type=lambda: ASYMMETRIC,
        )
        self.addCleanup(self.paths.stop)
        reg = Registration(HOST_ID, b"uuid-2", bytes(self.host_key.verify_key))
        client = RendezvousClient(reg, ("127.0.0.1", self.udp), self.paths, reactor, tick=0.05)
        # A different "public IP" than the viewer's 127.0.0.1: PunchHole, not FetchLocalAddr.
        port = reactor.listenUDP(0, client, interface="127.0.0.2")
        self.addCleanup(port.stopListening)
        for _ in range(200):
            if reg.state is RegState.REGISTERED:
                break
            yield sleep(0.02)
        self.assertEqual(reg.state, RegState.REGISTERED)

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
