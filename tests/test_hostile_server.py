"""Hostile clients of the rendezvous server, and what they can make a host do.

Issue 9, bugs 3 and 7: a flood of RequestRelay frames naming an attacker's
listener, socket_addr_v6 pointing hosts anywhere, a UDP ConfigUpdate 79 times
larger than the datagram that triggered it, and a spoofed RegisterPeer moving
a host's address.  The unit tests drive the sans-IO rules with task.Clock; the
rest attack a real C{twistd litedesk-relay} process over loopback, with the
attacker on 127.0.0.2, the legitimate viewer on 127.0.0.1 and the host's
registration on 127.0.0.3.
"""

from __future__ import annotations

import socket
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred, inlineCallbacks
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.host import job_slots
from litedesk.host.paths import HostPaths
from litedesk.host.registration import Registration, RegState
from litedesk.host.rendezvous_client import RendezvousClient, duplicate_key
from litedesk.nat.ipv6 import valid_v6_endpoint
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.admission import MAX_PUNCH_REPEATS
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.registry import PREV_ADDR_WINDOW, Registry
from litedesk.rendezvous.relay_vouch import VOUCH_WINDOW, normalize_relay
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.tls import wrap_server
from litedesk.viewer.route import find_host
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import encode_frame
from litedesk.wire.keys import ServerKey, public_b64

from .rendezvous_harness import TCPClient, tcp_client
from .support.polling import until
from .support.ports import free_port_pair
from .support.processes import RelayProcess
from .test_host_paths import Marker
from .test_rendezvous_protocols import Datagrams, frames

reactor: Any = _reactor
HOST_ID = "123456789"
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
KEY = SigningKey(bytes(range(32)))
HOST_ADDR = ("198.51.100.7", 40001)
VIEWER = IPv4Address("TCP", "203.0.113.9", 50000)
ATTACKER = IPv4Address("TCP", "192.0.2.66", 50000)
SERVER_LOCAL = IPv4Address("TCP", "198.51.100.1", 21116)


# -- sans-IO rules ----------------------------------------------------------------


class Conn:
    """A TCP 21116 connection as the server sees it (ReplySink)."""

    def __init__(self, peer: IPv4Address, local: IPv4Address = SERVER_LOCAL) -> None:
        self.addr = (peer.host, peer.port)
        self.local = (local.host, local.port)
        self.transport = StringTransport()

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        self.transport.write(encode_frame(msg.SerializeToString()))


def make_server(
    clock: Clock, relays: list[str] | None = None, rate: float = 100.0
) -> tuple[RendezvousServer, Datagrams]:
    server = RendezvousServer(
        clock=clock,
        registry=Registry(),
        key=ServerKey(public_b64(KEY), KEY),
        relays=RelayList(relays or []),
        request_guard=FloodGuard(rate, rate * 10),
    )
    udp = Datagrams()
    server.udp = udp
    clock.advance(1000)
    reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST_ID, uuid=UUID, pk=PK))
    server.handle_datagram(reg.SerializeToString(), HOST_ADDR)
    udp.sent.clear()
    return server, udp


def punch(peer_id: str = HOST_ID, v6: bytes = b"") -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id, licence_key=public_b64(KEY), socket_addr_v6=v6
        )
    )


def relay(relay_server: str, uuid: str = "u1") -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        request_relay=rz.RequestRelay(id=HOST_ID, uuid=uuid, relay_server=relay_server)
    )


def pushes(udp: Datagrams, kind: str) -> list[Any]:
    out = []
    for data, _ in udp.sent:
        m = rz.RendezvousMessage()
        m.ParseFromString(data)
        if m.WhichOneof("union") == kind:
            out.append(getattr(m, kind))
    return out


class OneRequestPerConnectionTests(SynchronousTestCase):
    def test_punch_repeats_as_stock_clients_then_refused(self) -> None:
        """Three identical PunchHoleRequests pass (RustDesk retries); a fourth closes."""
        clock = Clock()
        server, udp = make_server(clock)
        conn = Conn(VIEWER)
        for _ in range(MAX_PUNCH_REPEATS):
            self.assertTrue(server.handle_stream_message(conn, punch()))
        self.assertEqual(len(pushes(udp, "punch_hole")), MAX_PUNCH_REPEATS)
        self.assertFalse(server.handle_stream_message(conn, punch()))
        self.assertEqual(len(pushes(udp, "punch_hole")), MAX_PUNCH_REPEATS)
        self.assertEqual(server.counters["requests_refused_connection"], 1)

    def test_relay_after_punch_refused(self) -> None:
        """Stock clients ask for a relay on a new connection; on the same one it is refused."""
        clock = Clock()
        server, udp = make_server(clock)
        conn = Conn(VIEWER)
        self.assertTrue(server.handle_stream_message(conn, punch()))
        self.assertFalse(server.handle_stream_message(conn, relay("")))
        self.assertEqual(pushes(udp, "request_relay"), [])

    def test_300_relay_requests_on_one_connection_reach_the_host_once(self) -> None:
        clock = Clock()
        server, udp = make_server(clock)
        conn = Conn(ATTACKER)
        results = [server.handle_stream_message(conn, relay("", f"u{i}")) for i in range(300)]
        self.assertEqual(results[:2], [True, False])
        self.assertEqual(len(pushes(udp, "request_relay")), 1)

    def test_other_id_on_same_connection_refused(self) -> None:
        clock = Clock()
        server, _udp = make_server(clock)
        conn = Conn(VIEWER)
        self.assertTrue(server.handle_stream_message(conn, punch()))
        self.assertFalse(server.handle_stream_message(conn, punch("987654321")))

    def test_closed_connection_forgotten(self) -> None:
        clock = Clock()
        server, _ = make_server(clock)
        conn = Conn(VIEWER)
        server.handle_stream_message(conn, relay(""))
        server.connection_closed(conn)
        self.assertEqual(server.admission.requests, {})


class RequestRateTests(SynchronousTestCase):
    def test_per_ip_bucket(self) -> None:
        """Over the rate one IP is refused with a readable reason; others are not."""
        clock = Clock()
        server, _udp = make_server(clock, rate=1.0)  # burst 10
        for i in range(10):
            self.assertTrue(server.handle_stream_message(Conn(ATTACKER), relay("", f"u{i}")))
        refused = Conn(ATTACKER)
        self.assertFalse(server.handle_stream_message(refused, punch()))
        [answer] = frames(refused.transport)
        self.assertIn("Too many", answer.punch_hole_response.other_failure)
        refused_relay = Conn(ATTACKER)
        self.assertFalse(server.handle_stream_message(refused_relay, relay("", "x")))
        [answer] = frames(refused_relay.transport)
        self.assertIn("Too many", answer.relay_response.refuse_reason)
        self.assertEqual(server.counters["requests_refused_rate"], 2)
        # Another source IP is not affected, and the attacker's bucket refills.
        self.assertTrue(server.handle_stream_message(Conn(VIEWER), punch()))
        clock.advance(1.0)
        self.assertTrue(server.handle_stream_message(Conn(ATTACKER), punch()))


class RelayServerTests(SynchronousTestCase):
    def forwarded(self, server: RendezvousServer, udp: Datagrams, conn: Conn, name: str) -> str:
        udp.sent.clear()
        server.handle_stream_message(conn, relay(name))
        [fwd] = pushes(udp, "request_relay")
        return str(fwd.relay_server)

    def test_unknown_relay_forwarded_empty(self) -> None:
        clock = Clock()
        server, udp = make_server(clock, relays=["rs.example.com"])
        self.assertEqual(self.forwarded(server, udp, Conn(ATTACKER), "192.0.2.66:9999"), "")
        self.assertEqual(server.counters["relay_server_replaced"], 1)
        self.assertEqual(self.forwarded(server, udp, Conn(ATTACKER), "rs.example.com:9999"), "")

    def test_announced_relays_kept(self) -> None:
        """Host names compare case-insensitively; a missing port is 21117."""
        clock = Clock()
        server, udp = make_server(clock, relays=["rs.example.com", "[2001:db8::1]:4000"])
        for name in ("rs.example.com", "RS.Example.COM:21117", "[2001:db8::1]:4000", ""):
            self.assertEqual(self.forwarded(server, udp, Conn(VIEWER), name), name)
        self.assertEqual(server.counters["relay_server_replaced"], 0)

    def test_own_relay_on_the_address_asked(self) -> None:
        clock = Clock()
        server, udp = make_server(clock)
        server.own_relay_port = 21117
        self.assertEqual(
            self.forwarded(server, udp, Conn(VIEWER), "198.51.100.1:21117"), "198.51.100.1:21117"
        )
        self.assertEqual(self.forwarded(server, udp, Conn(VIEWER), "198.51.100.1:22"), "")

    def host_answers(self, server: RendezvousServer, udp: Datagrams, source: str) -> None:
        """The viewer punches; a PunchHoleSent from C{source} names relay.example.org."""
        viewer = Conn(VIEWER)
        server.handle_stream_message(viewer, punch())
        [ph] = pushes(udp, "punch_hole")
        host_conn = Conn(IPv4Address("TCP", source, 41000))
        sent = rz.PunchHoleSent(
            socket_addr=ph.socket_addr, id=HOST_ID, relay_server="relay.example.org"
        )
        server.handle_stream_message(host_conn, rz.RendezvousMessage(punch_hole_sent=sent))
        [resp] = frames(viewer.transport)
        self.assertEqual(resp.punch_hole_response.relay_server, "relay.example.org")

    def test_relay_the_host_named_to_this_viewer(self) -> None:
        """A stock viewer asks for the relay the host put in its answer (its own option)."""
        clock = Clock()
        server, udp = make_server(clock)
        self.host_answers(server, udp, HOST_ADDR[0])
        name = "relay.example.org"
        self.assertEqual(self.forwarded(server, udp, Conn(VIEWER), name), name)
        # Only for that viewer's IP, and not for ever.
        self.assertEqual(self.forwarded(server, udp, Conn(ATTACKER), name), "")
        clock.advance(VOUCH_WINDOW + 1)
        self.assertEqual(self.forwarded(server, udp, Conn(VIEWER), name), "")

    def test_relay_named_by_someone_else_is_not_vouched(self) -> None:
        """Anyone can send PunchHoleSent for any id: only the host's IP counts."""
        clock = Clock()
        server, udp = make_server(clock)
        self.host_answers(server, udp, VIEWER.host)
        self.assertEqual(self.forwarded(server, udp, Conn(VIEWER), "relay.example.org"), "")


class SocketAddrV6Tests(SynchronousTestCase):
    def test_unroutable_dropped_routable_kept(self) -> None:
        clock = Clock()
        server, udp = make_server(clock)
        good = addrmangle.encode(("2001:db8::5", 5000))
        cases = {
            good: good,
            addrmangle.encode(("::1", 22)): b"",
            addrmangle.encode(("fe80::1", 22)): b"",
            addrmangle.encode(("fd00::1", 22)): b"",
            addrmangle.encode(("2001:db8::5", 0)): b"",
            addrmangle.encode(("::ffff:127.0.0.1", 22)): b"",
            addrmangle.encode(("198.51.100.5", 22)): b"",  # an IPv4 mangle
            b"\x01" * 17: b"",
        }
        for sent, expected in cases.items():
            udp.sent.clear()
            server.handle_stream_message(Conn(VIEWER), punch(v6=sent))
            [ph] = pushes(udp, "punch_hole")
            self.assertEqual(ph.socket_addr_v6, expected, sent.hex())
        self.assertEqual(server.counters["addr_v6_dropped"], len(cases) - 1)

    @given(st.binary(max_size=40))
    def test_any_bytes(self, data: bytes) -> None:
        """Never raises; accepts only 18-byte routable endpoints with a port."""
        if valid_v6_endpoint(data):
            self.assertEqual(len(data), 18)
            host, port = addrmangle.decode(data)
            self.assertGreater(port, 0)
            self.assertNotEqual(host, "::1")

    @given(st.text(max_size=60) | st.text(alphabet="abcXYZ019.:[]-", max_size=30))
    def test_normalize_relay_any_text(self, text: str) -> None:
        """Never raises; a valid port; ASCII host names compare case-insensitively."""
        got = normalize_relay(text)
        if got is not None:
            self.assertTrue(0 < got[1] < 65536)
            if text.isascii():
                self.assertEqual(normalize_relay(text.upper()), got)


class UdpReplySizeTests(SynchronousTestCase):
    SERVERS: ClassVar[list[str]] = [f"rendezvous{i}.example.com:21116" for i in range(12)]

    def server(self) -> tuple[RendezvousServer, Datagrams]:
        clock = Clock()
        server = RendezvousServer(
            clock=clock,
            registry=Registry(server_serial=7),
            key=ServerKey(public_b64(KEY), KEY),
            relays=RelayList([]),
            rendezvous_servers=self.SERVERS,
        )
        udp = Datagrams()
        server.udp = udp
        return server, udp

    def test_five_byte_register_peer(self) -> None:
        """hbbs answers 5 bytes with 4 + 399; now only the 4-byte answer goes out."""
        server, udp = self.server()
        probe = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="a")).SerializeToString()
        self.assertEqual(len(probe), 5)
        server.handle_datagram(probe, ("192.0.2.1", 1))
        self.assertEqual([len(d) for d, _ in udp.sent], [4])
        self.assertEqual(server.counters["udp_reply_too_large"], 1)

    @settings(max_examples=200)
    @given(
        st.one_of(
            st.binary(max_size=64),
            st.builds(
                lambda i, s: rz.RendezvousMessage(
                    register_peer=rz.RegisterPeer(id=i, serial=s)
                ).SerializeToString(),
                st.text(max_size=40),
                st.integers(-(2**31), 2**31 - 1),
            ),
            st.builds(
                lambda i, u, p: rz.RendezvousMessage(
                    register_pk=rz.RegisterPk(id=i, uuid=u, pk=p)
                ).SerializeToString(),
                st.text(max_size=12),
                st.binary(max_size=4),
                st.binary(max_size=4),
            ),
        )
    )
    def test_no_reply_larger_than_its_datagram(self, data: bytes) -> None:
        server, udp = self.server()
        server.handle_datagram(data, ("192.0.2.1", 1))
        for reply, _ in udp.sent:
            self.assertLessEqual(len(reply), len(data))


class SpoofedRegisterPeerTests(SynchronousTestCase):
    def test_pushes_reach_the_previous_port_while_fresh(self) -> None:
        """A heartbeat from another port of the host's IP no longer takes every push."""
        clock = Clock()
        server, udp = make_server(clock)
        spoof = (HOST_ADDR[0], 50000)
        hb = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=HOST_ID, serial=7))
        server.handle_datagram(hb.SerializeToString(), spoof)
        udp.sent.clear()
        server.handle_stream_message(Conn(VIEWER), punch())
        self.assertEqual([a for _, a in udp.sent], [spoof, HOST_ADDR])
        # The host's next heartbeat: both still get pushes (the spoofer may come back).
        clock.advance(10)
        server.handle_datagram(hb.SerializeToString(), HOST_ADDR)
        udp.sent.clear()
        server.handle_stream_message(Conn(VIEWER), punch())
        self.assertEqual([a for _, a in udp.sent], [HOST_ADDR, spoof])
        # The spoofer gives up: its port stops getting pushes after the window.
        clock.advance(PREV_ADDR_WINDOW)
        server.handle_datagram(hb.SerializeToString(), HOST_ADDR)
        udp.sent.clear()
        server.handle_stream_message(Conn(VIEWER), punch())
        self.assertEqual([a for _, a in udp.sent], [HOST_ADDR])


class HostRulesTests(SynchronousTestCase):
    @given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(1, 65535))
    def test_duplicate_key_ignores_the_timestamp(self, t1: int, t2: int, port: int) -> None:
        msgs = [
            rz.RendezvousMessage(
                punch_hole=rz.PunchHole(socket_addr=addrmangle.encode(("203.0.113.9", port), tm=t))
            )
            for t in (t1, t2)
        ]
        self.assertEqual(duplicate_key(msgs[0]), duplicate_key(msgs[1]))

    @given(st.binary(max_size=20), st.text(max_size=10))
    def test_duplicate_key_any_push(self, raw: bytes, uuid: str) -> None:
        """Never raises; relay requests are told apart by uuid."""
        a = rz.RendezvousMessage(request_relay=rz.RequestRelay(socket_addr=raw, uuid=uuid))
        b = rz.RendezvousMessage(request_relay=rz.RequestRelay(socket_addr=raw, uuid=uuid + "x"))
        self.assertNotEqual(duplicate_key(a), duplicate_key(b))
        duplicate_key(rz.RendezvousMessage(fetch_local_addr=rz.FetchLocalAddr(socket_addr=raw)))

    def paths(self) -> HostPaths:
        return HostPaths(Clock(), HOST_ID, ("rz.example.com", 21116), "", lambda **kw: Protocol())

    def test_job_caps(self) -> None:
        paths = self.paths()
        per_ip, total = job_slots.MAX_JOBS_PER_IP, job_slots.MAX_JOBS
        slots = [paths.slots.acquire("192.0.2.66", "relay") for _ in range(per_ip + 1)]
        self.assertIsNone(slots[per_ip])
        self.assertEqual(paths.slots.dropped, 1)
        other = [paths.slots.acquire(f"203.0.113.{i}", "relay") for i in range(total + 8)]
        self.assertEqual(sum(s is not None for s in other), total - per_ip)
        held = [s for s in slots if s is not None]
        held[0].release()
        held[0].release()  # twice is harmless
        self.assertEqual(paths.slots.total, total - 1)
        self.assertIsNotNone(paths.slots.acquire("192.0.2.66", "relay"))

    def test_relays_the_host_accepts(self) -> None:
        paths = self.paths()
        for name in ("", "rz.example.com", "RZ.example.com:21117", "rz.example.com."):
            self.assertTrue(paths.relays.allowed(name), name)
        for name in ("rz.example.com:9999", "192.0.2.66:21117", "[::1]:22", "x:y"):
            self.assertFalse(paths.relays.allowed(name), name)
        paths.relays.remember("relay.example.org:4000")
        self.assertTrue(paths.relays.allowed("Relay.Example.org:4000"))
        paths.relay_server = "mine.example.net"
        self.assertTrue(paths.relays.allowed("mine.example.net:21117"))
        self.assertEqual(paths.relays.default(), ("mine.example.net", 21117))


# -- against a real litedesk-relay process -----------------------------------------


class ListenerFactory(Factory):
    """The attacker's listener: counts connections the host makes to it (one
    per test, so no count leaks from one test into another)."""

    def __init__(self) -> None:
        self.accepted = 0

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        self.accepted += 1
        return Protocol()


class RecordingPaths(HostPaths):
    """The host's real push handlers, recording every push that reaches them."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.pushes: list[rz.RendezvousMessage] = []

    def punch_hole(self, msg: rz.PunchHole) -> None:
        self.pushes.append(rz.RendezvousMessage(punch_hole=msg))
        super().punch_hole(msg)

    def request_relay(self, msg: rz.RequestRelay) -> None:
        self.pushes.append(rz.RendezvousMessage(request_relay=msg))
        super().request_relay(msg)


def more_pushes(paths: Any, n: int) -> bool:
    return len(paths.pushes) > n


class ProcessFixture(TestCase):
    """A real litedesk-relay, a registered host (HostPaths), an attacker listener."""

    server_args: tuple[str, ...] = ()

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.port = free_port_pair()
        data = Path(self.mktemp())
        self.relay_log = Path(self.mktemp())
        proc = RelayProcess(data, self.port, self.relay_log, *self.server_args)
        self.addCleanup(proc.stop)
        self.key = (data / "id_ed25519.pub").read_text().strip()
        self.host_key = SigningKey.generate()
        self.host_sessions: list[Marker] = []

        def make_session(relayed: bool = False, path: str = "") -> Any:
            m = Marker(b"hello from host\n")
            self.host_sessions.append(m)
            return wrap_server(m, host_context_factory(self.host_key, HOST_ID))

        self.paths = RecordingPaths(
            reactor, HOST_ID, ("127.0.0.1", self.port), self.key, make_session
        )
        self.addCleanup(self.paths.stop)
        reg = Registration(HOST_ID, b"uuid-1", bytes(self.host_key.verify_key))
        client = RendezvousClient(reg, ("127.0.0.1", self.port), self.paths, reactor, tick=0.05)
        udp = reactor.listenUDP(0, client, interface="127.0.0.3")
        self.addCleanup(udp.stopListening)
        yield until(lambda: reg.state is RegState.REGISTERED, 10, message="host registered")
        self.attacker_listener = ListenerFactory()
        self.attacker_port = reactor.listenTCP(0, self.attacker_listener, interface="127.0.0.2")
        self.addCleanup(self.attacker_port.stopListening)
        self.attacker_relay = f"127.0.0.2:{self.attacker_port.getHost().port}"

    @inlineCallbacks
    def legit_viewer(self) -> Any:
        """A viewer on 127.0.0.1 finds the host and exchanges a line with it."""
        route = yield ensureDeferred(
            find_host(reactor, ("127.0.0.1", self.port), self.key, HOST_ID, nat_test=False)
        )
        marker = Marker(b"hello from viewer\n")
        from litedesk.session.links import connect_relay
        from litedesk.session.pinning import viewer_context_factory
        from litedesk.session.tls import wrap_client

        tls = wrap_client(marker, viewer_context_factory(route.host_pk))
        yield ensureDeferred(connect_relay(reactor, route.relay, route.uuid, self.key, tls))
        got = yield marker.got.addTimeout(10, reactor)
        assert marker.transport is not None
        marker.transport.loseConnection()
        yield marker.lost
        return got

    @inlineCallbacks
    def attacker(self, frames: list[rz.RendezvousMessage]) -> Any:
        conn: TCPClient = yield tcp_client(self.port, bind="127.0.0.2")
        conn.send_raw(b"".join(encode_frame(m.SerializeToString()) for m in frames))
        return conn


class RelayFloodTests(ProcessFixture):
    @inlineCallbacks
    def test_request_relay_flood_through_the_server(self) -> Any:
        """300 RequestRelay frames naming the attacker: no connection to it, viewer fine."""
        flood = [
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(
                    id=HOST_ID, uuid=f"u{i}", relay_server=self.attacker_relay, licence_key=self.key
                )
            )
            for i in range(300)
        ]
        conn = yield self.attacker(flood)
        got = yield self.legit_viewer()  # during the flood
        self.assertEqual(got, b"hello from host\n")
        yield conn.closed.addTimeout(10, reactor)  # the server closed the flood
        # The one request forwarded reached the host without the attacker's relay.
        relayed = [m.request_relay for m in self.paths.pushes if m.HasField("request_relay")]
        self.assertEqual([r.relay_server for r in relayed], [""])
        yield until(lambda: not self.paths._pending, 10, message="the host's jobs to end")
        self.assertEqual(self.attacker_listener.accepted, 0)
        self.assertIn("does not announce", self.relay_log.read_text())

    @inlineCallbacks
    def test_host_alone_against_a_forwarding_server(self) -> Any:
        """Were a server (stock hbbs) to forward all 300, the host still never connects.

        And an attacker IP gets at most MAX_JOBS_PER_IP running jobs, so a
        viewer from another IP is still served.
        """
        for i in range(300):
            self.paths.request_relay(
                rz.RequestRelay(
                    socket_addr=addrmangle.encode(("127.0.0.2", 40000 + i)),
                    uuid=f"u{i}",
                    relay_server=self.attacker_relay,
                )
            )
        per_ip = job_slots.MAX_JOBS_PER_IP
        self.assertEqual(self.paths.slots.jobs.get("127.0.0.2"), per_ip)
        self.assertEqual(self.paths.slots.dropped, 300 - per_ip)
        got = yield self.legit_viewer()
        self.assertEqual(got, b"hello from host\n")
        yield until(lambda: not self.paths._pending, 10, message="the host's jobs to end")
        self.assertEqual(self.attacker_listener.accepted, 0)
        self.assertEqual(self.paths.relays_replaced, per_ip)


class SocketAddrV6ProcessTests(ProcessFixture):
    @inlineCallbacks
    def test_bad_v6_never_reaches_the_host(self) -> Any:
        """A loopback socket_addr_v6 is dropped by the server; a routable one passes."""
        bad = addrmangle.encode(("::1", 22))
        good = addrmangle.encode(("2001:db8::5", 5000))
        for v6 in (bad, good):
            msg = rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(
                    id=HOST_ID, licence_key=self.key, socket_addr_v6=v6
                )
            )
            conn = yield self.attacker([msg])
            n = len(self.paths.pushes)
            yield until(partial(more_pushes, self.paths, n), 10, message="the push")
            conn.close()
        v6s = [m.punch_hole.socket_addr_v6 for m in self.paths.pushes]
        self.assertEqual(v6s, [b"", good])
        yield until(lambda: not self.paths._pending, 10, message="the host's jobs to end")


class AmplificationProbeTests(TestCase):
    SERVERS = ",".join(f"rendezvous{i}.example.com:21116" for i in range(12))

    def test_no_reply_larger_than_the_probe(self) -> None:
        """5-byte RegisterPeers get 4-byte answers only; TCP TestNatResponse has the config."""
        port = free_port_pair()
        data = Path(self.mktemp())
        proc = RelayProcess(
            data, port, Path(self.mktemp()), "--serial", "7", "--rendezvous-servers", self.SERVERS
        )
        self.addCleanup(proc.stop)
        probe = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="a")).SerializeToString()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        # The server answers datagrams in order: once the second probe's answer is
        # here, anything the first one caused has arrived too.
        s.sendto(probe, ("127.0.0.1", port))
        s.sendto(probe, ("127.0.0.1", port))
        replies = [s.recv(2048), s.recv(2048)]
        s.sendto(probe, ("127.0.0.1", port))
        replies.append(s.recv(2048))
        self.assertEqual([r.hex() for r in replies], ["3a021001"] * 3)
        # Clients still get the configuration, over TCP (RustDesk: test_nat_type_).
        tcp = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(tcp.close)
        req = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest(serial=3))
        tcp.sendall(encode_frame(req.SerializeToString()))
        from litedesk.wire.bytescodec import FrameDecoder

        from .support.processes import recv_frame

        answer = rz.RendezvousMessage()
        answer.ParseFromString(recv_frame(tcp, FrameDecoder()))
        self.assertEqual(answer.test_nat_response.cu.serial, 7)
        self.assertEqual(len(answer.test_nat_response.cu.rendezvous_servers), 12)
