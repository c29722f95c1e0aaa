"""Viewer and host find each other through the real server: relay and LAN paths.

The session here is a stand-in (a marker exchange) over the real pinned TLS;
the real session protocol has its own tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, cast

from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from litedesk.host import job_slots
from litedesk.host.paths import HostPaths
from litedesk.host.registration import Registration, RegState
from litedesk.host.rendezvous_client import RendezvousClient
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rustdesk.detect import ProtocolDetector
from litedesk.rustdesk.secure import HostHandshake
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.host_key import HostKeyMismatch
from litedesk.session.links import connect_relay, open_rendezvous
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.tls import wrap_client, wrap_server
from litedesk.viewer.route import ConnectError, find_host
from litedesk.wire.keys import public_b64

from .rendezvous_harness import sleep, start_server
from .support.polling import until

reactor: Any = _reactor
HOST_ID = "123456789"


@implementer(IHandshakeListener)
class Marker(Protocol):
    """Each side sends a line after the TLS handshake and records what it gets."""

    def __init__(self, line: bytes) -> None:
        self.line = line
        self.received = b""
        self.got: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.lost_reason: Failure | None = None

    def handshakeCompleted(self) -> None:
        assert self.transport is not None
        self.transport.write(self.line)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\n" in self.received and not self.got.called:
            self.got.callback(self.received)

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        if not self.lost.called:
            self.lost_reason = reason
            self.lost.callback(None)


class PathFixture(TestCase):
    """A real server and relay on loopback, and a host's push handlers; no tests."""

    #: Extra keyword arguments for the host's HostPaths.
    host_paths_options: ClassVar[dict[str, Any]] = {}

    def server_args(self) -> list[str]:
        """Extra options for the server (later ones override the harness's)."""
        return []

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.svc = start_server(Path(self.mktemp()), *self.server_args())
        self.addCleanup(self.svc.stopService)
        yield sleep(0)
        server = self.svc.server
        self.server_key = server.key.public_key
        relay_port = (yield self.svc.relay.when_listening()).getHost().port
        server.relays = RelayList([f"127.0.0.1:{relay_port}"])
        self.udp = self.svc.rendezvous_udp.listening.getHost().port
        self.tcp = self.svc.rendezvous_tcp.listening.getHost().port
        self.host_key = SigningKey.generate()
        self.host_sessions: list[Marker] = []
        #: relayed= of each session the host created, in order.
        self.host_relayed: list[bool] = []

        def make_session(relayed: bool = False, path: str = "") -> Any:
            m = Marker(b"hello from host\n")
            self.host_sessions.append(m)
            self.host_relayed.append(relayed)
            return wrap_server(m, host_context_factory(self.host_key, HOST_ID))

        self.paths = HostPaths(
            reactor,
            HOST_ID,
            ("127.0.0.1", self.tcp),
            self.server_key,
            make_session,
            **self.host_paths_options,
        )
        self.addCleanup(self.paths.stop)

    @inlineCallbacks
    def register(self, interface: str) -> Any:
        reg = Registration(HOST_ID, b"uuid-1", bytes(self.host_key.verify_key))
        client = RendezvousClient(reg, ("127.0.0.1", self.udp), self.paths, reactor, tick=0.05)
        port = reactor.listenUDP(0, client, interface=interface)
        self.addCleanup(port.stopListening)
        yield until(lambda: reg.state is RegState.REGISTERED, 4, 0.02, "the host to register")

    @inlineCallbacks
    def viewer(self, route: Any, pin: bytes | None = None) -> Any:
        marker = Marker(b"hello from viewer\n")
        creator = viewer_context_factory(pin or route.host_pk)
        tls = wrap_client(marker, creator)
        if route.path == "relay":
            yield ensureDeferred(
                connect_relay(reactor, route.relay, route.uuid, self.server_key, tls)
            )
        else:
            ep = TCP4ClientEndpoint(reactor, route.addr[0], route.addr[1])
            yield connectProtocol(ep, tls)
        return marker


class PathTests(PathFixture):
    @inlineCallbacks
    def test_relay_path(self) -> Any:
        """Different public IPs: the host opens a relay; pinned TLS runs over it."""
        yield self.register("127.0.0.2")
        route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID)
        )
        self.assertEqual(route.path, "relay")
        self.assertEqual(route.host_pk, bytes(self.host_key.verify_key))
        marker = yield self.viewer(route)
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        host_got = yield self.host_sessions[0].got.addTimeout(5, reactor)
        self.assertEqual(host_got, b"hello from viewer\n")
        self.assertEqual(self.host_relayed, [True])
        marker.transport.loseConnection()
        yield marker.lost

    @inlineCallbacks
    def test_lan_path(self) -> Any:
        """Same public IP: the viewer connects straight to the host's LAN listener."""
        yield self.register("127.0.0.1")
        route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID)
        )
        self.assertEqual(route.path, "lan")
        self.assertEqual(route.addr[0], "127.0.0.1")
        marker = yield self.viewer(route)
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        self.assertEqual(self.host_relayed, [False])
        marker.transport.loseConnection()
        yield marker.lost
        yield until(lambda: self.paths.listeners == [], 5, message="the LAN listener to close")

    @inlineCallbacks
    def test_unused_lan_offers_do_not_lock_out_a_retrying_viewer(self) -> Any:
        """A viewer on our IP that never uses its LAN address is answered every time.

        Each unused LAN listener would hold one of the requester's job slots
        for LAN_ACCEPT_WINDOW; a new request from that address closes the
        oldest one instead of being dropped.
        """
        yield self.register("127.0.0.1")
        per_ip = job_slots.MAX_JOBS_PER_IP
        for _ in range(per_ip + 3):
            route = yield ensureDeferred(
                find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID)
            )
            self.assertEqual(route.path, "lan")
            self.assertLessEqual(len(self.paths.listeners), per_ip)
        self.assertEqual(self.paths.slots.dropped, 0)
        self.assertLessEqual(self.paths.slots.jobs.get("127.0.0.1", 0), per_ip)
        # The newest offer still works.
        marker = yield self.viewer(route)
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        marker.transport.loseConnection()
        yield marker.lost

    @inlineCallbacks
    def ask_on_lan(self) -> Any:
        """A PunchHoleRequest from the host's own IP: the server's answer."""
        link = yield ensureDeferred(open_rendezvous(reactor, "127.0.0.1", self.tcp))
        self.addCleanup(link.close)
        link.send(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(
                    id=HOST_ID, licence_key=self.server_key, version="1.4.9"
                )
            )
        )
        msg = yield ensureDeferred(link.next_message(reactor, 10))
        return msg.punch_hole_response

    @inlineCallbacks
    def test_lan_answer_names_a_relay(self) -> Any:
        """The host's LocalAddr names a relay, as a RustDesk host's does.

        A RustDesk viewer on the host's LAN that forces the relay uses the
        relay of that answer; an empty one ended its attempt.  Ours: the
        host's --relay-server, else the server's, else rendezvous port + 1.
        """
        yield self.register("127.0.0.1")
        self.svc.server.relays = RelayList([])  # the server names none
        ph = yield self.ask_on_lan()
        self.assertTrue(ph.is_local)
        self.assertEqual(ph.relay_server, f"127.0.0.1:{self.tcp + 1}")
        self.paths.relay_server = "relay.example.net:21117"
        yield sleep(0.2)  # past the host's duplicate filter for this address
        ph = yield self.ask_on_lan()
        self.assertEqual(ph.relay_server, "relay.example.net:21117")

    @inlineCallbacks
    def test_force_relay_on_lan(self) -> Any:
        """--force-relay goes through the relay even when the LAN path exists."""
        yield self.register("127.0.0.1")
        route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID, force_relay=True)
        )
        self.assertEqual(route.path, "relay")
        marker = yield self.viewer(route)
        got = yield marker.got.addTimeout(5, reactor)
        self.assertEqual(got, b"hello from host\n")
        marker.transport.loseConnection()
        yield marker.lost

    @inlineCallbacks
    def test_wrong_pin_aborts(self) -> Any:
        """A host presenting another key than the server signed is refused."""
        yield self.register("127.0.0.2")
        route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID)
        )
        marker = yield self.viewer(route, pin=bytes(SigningKey.generate().verify_key))
        yield marker.lost.addTimeout(5, reactor)
        reason = marker.lost_reason
        assert reason is not None
        self.assertTrue(reason.check(HostKeyMismatch))
        self.assertIn("host key mismatch", str(reason.value))
        self.assertEqual(marker.received, b"")

    @inlineCallbacks
    def test_failures(self) -> Any:
        """Unknown id, wrong server key and an unreachable server give clear reasons."""
        server = ("127.0.0.1", self.tcp)
        with self.assertRaises(ConnectError) as e:
            yield ensureDeferred(find_host(reactor, server, self.server_key, "999999999"))
        self.assertEqual(e.exception.reason, "unknown id")
        other = public_b64(SigningKey.generate())
        with self.assertRaises(ConnectError) as e:
            yield ensureDeferred(find_host(reactor, server, other, HOST_ID))
        self.assertEqual(e.exception.reason, "key mismatch")
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        s.close()
        with self.assertRaises(ConnectError) as e:
            yield ensureDeferred(find_host(reactor, ("127.0.0.1", dead), self.server_key, HOST_ID))
        self.assertEqual(e.exception.reason, "cannot reach rendezvous server")

    @inlineCallbacks
    def test_offline(self) -> Any:
        """A registered host that stopped heartbeating is reported offline."""
        yield self.register("127.0.0.2")
        self.svc.server.registry.get(HOST_ID).last_reg -= 60
        with self.assertRaises(ConnectError) as e:
            yield ensureDeferred(
                find_host(reactor, ("127.0.0.1", self.tcp), self.server_key, HOST_ID)
            )
        self.assertEqual(e.exception.reason, "host offline")

    @inlineCallbacks
    def test_viewer_refuses_host_with_other_key(self) -> Any:
        """A host whose TLS key is not the key the server signed is refused by the viewer CLI.

        This is what a hijacked heartbeat (an impostor answering for a registered id)
        looks like to the viewer: the signed key and the presented key differ.
        """
        impostor = SigningKey.generate()

        def make_session(relayed: bool = False, path: str = "") -> Any:
            # A host like ours in every respect but its key.
            m = Marker(b"impostor\n")
            return ProtocolDetector(
                HostHandshake(impostor, HOST_ID, offer_tls=True),
                lambda: wrap_server(m, host_context_factory(impostor, HOST_ID)),
                lambda begun, release: cast(Any, None),
                reactor,
            )

        self.paths.make_session = make_session
        yield self.register("127.0.0.2")
        from litedesk.session.viewer_session import SessionError
        from litedesk.viewer.cli import build_parser, run_headless

        args = build_parser().parse_args(
            [
                HOST_ID,
                "--rendezvous",
                f"127.0.0.1:{self.tcp}",
                "--key",
                self.server_key,
                "--password",
                "x",
                "--headless",
                "--timeout",
                "5",
            ]
        )
        with self.assertRaises(SessionError) as e:
            yield ensureDeferred(run_headless(reactor, args))
        self.assertEqual(e.exception.reason, "host key mismatch")
