"""Hosts registered over a stream (docs/protocol.rst §5.11): RustDesk's TCP mode.

Unit tests drive the real protocol and controller over StringTransport on a task.Clock:
RegisterPk on a stream answered OK with keep_alive, pushes on the stream, heartbeats,
idle and close handling, replacement, the per-site and total caps, hostile sequences.
The end-to-end tests run a real C{twistd litedesk-relay} with a stock-host emulator
(L{tests.support.stream_host}) registered over TCP, reached by the stock-client
emulator (L{tests.support.rustdesk_rendezvous}) by punch, LAN address and relay.
"""

from __future__ import annotations

import base64
import socket
import time
from pathlib import Path
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous import host_streams
from litedesk.rendezvous.host_streams import HOST_HEARTBEAT, HOST_KEEP_ALIVE, HOST_STREAM_IDLE
from litedesk.rendezvous.protocols import (
    RendezvousStreamFactory,
    RendezvousStreamProtocol,
)
from litedesk.rendezvous.registry import PunchTarget, Registry, source_site
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey, public_b64, secret_b64

from .rendezvous_harness import start_server, tcp_client
from .support import rustdesk_rendezvous as viewer
from .support.clock import advance
from .support.polling import pause, until, wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess
from .support.stream_host import HostSession, StreamHost
from .support.ws_client import ws_connect

KEY = SigningKey(bytes(range(32)))
LICENCE = public_b64(KEY)
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
HOST = "123456789"
OK = rz.RegisterPkResponse.OK
TOO_FREQUENT = rz.RegisterPkResponse.TOO_FREQUENT
UUID_MISMATCH = rz.RegisterPkResponse.UUID_MISMATCH


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class ManualStore:
    """A peer store whose saves wait for the test (or fail when told to)."""

    def __init__(self, failing: bool = False) -> None:
        self.failing = failing
        self.saves: list[tuple[PeerRecord, Deferred[bytes]]] = []

    def save(self, record: PeerRecord) -> Deferred[bytes]:
        if self.failing:
            return fail(OSError("disk full"))
        d: Deferred[bytes] = Deferred()
        self.saves.append((record, d))
        return d


def make_server(clock: Clock, store: Any = None) -> tuple[RendezvousServer, Datagrams]:
    server = RendezvousServer(
        clock=clock,
        registry=Registry(),
        key=ServerKey(LICENCE, KEY),
        relays=RelayList([]),
        store=store,
    )
    udp = Datagrams()
    server.udp = udp
    return server, udp


class Conn:
    """One TCP connection to the real stream protocol, on a StringTransport."""

    def __init__(self, server: RendezvousServer, clock: Clock, peer: Any) -> None:
        self.factory = RendezvousStreamFactory(
            server, RendezvousStreamProtocol, clock=clock, key_exchange_wait=None
        )
        self.proto: RendezvousStreamProtocol = cast(
            RendezvousStreamProtocol, self.factory.buildProtocol(None)
        )
        self.transport: StringTransport = StringTransport(peerAddress=peer)
        self.proto.makeConnection(self.transport)
        self._decoder: FrameDecoder = FrameDecoder()
        self.lost: bool = False

    def send(self, msg: rz.RendezvousMessage) -> None:
        self.receive(encode_frame(msg.SerializeToString()))

    def receive(self, data: bytes) -> None:
        """Bytes from the peer; none arrive once the connection is lost, as in Twisted."""
        if not self.lost:
            self.proto.dataReceived(data)

    def payloads(self) -> list[bytes]:
        """The frames written to us since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return self._decoder.feed(data)

    def messages(self) -> list[rz.RendezvousMessage]:
        out = []
        for payload in self.payloads():
            m = rz.RendezvousMessage()
            m.ParseFromString(payload)
            out.append(m)
        return out

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting or self.transport.disconnected)

    def close(self) -> None:
        if not self.lost:
            self.lost = True
            self.proto.connectionLost(None)  # type: ignore[arg-type]


def stream(
    server: RendezvousServer, clock: Clock, ip: str = "198.51.100.1", port: int = 40000
) -> Conn:
    peer = IPv6Address("TCP", ip, port) if ":" in ip else IPv4Address("TCP", ip, port)
    return Conn(server, clock, peer)


def register(conn: Conn, peer_id: str = HOST, uuid: bytes = UUID, pk: bytes = PK) -> None:
    conn.send(rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=uuid, pk=pk)))


def punch_request(peer_id: str = HOST) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=peer_id, licence_key=LICENCE, nat_type=rz.ASYMMETRIC
        )
    )


def online_bits(server: RendezvousServer, *ids: str) -> bytes:
    return server.registry.online_states(list(ids), server.clock.seconds())


class RegistrationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.udp = make_server(self.clock)

    def test_register_pk_on_a_stream_is_ok_with_keep_alive(self) -> None:
        """RegisterPk on TCP is answered OK with keep_alive 30 (820102101e), not NOT_SUPPORT,
        and the connection stays open as the host's channel."""
        host = stream(self.server, self.clock)
        register(host)
        (payload,) = host.payloads()
        self.assertEqual(payload.hex(), "820102101e")
        self.assertEqual(HOST_KEEP_ALIVE, 30)
        self.assertFalse(host.closing)
        peer = self.server.registry.get(HOST)
        assert peer is not None
        self.assertIs(peer.channel, host.proto)
        self.assertEqual(self.server.registry.punch_target(HOST, 0)[0], PunchTarget.ONLINE)
        self.assertEqual(online_bits(self.server, HOST, "987654321"), b"\x80")

    def test_online_while_the_stream_lives_then_offline_at_once(self) -> None:
        """Online for as long as the stream is open (far beyond UDP's 30 s) and offline the
        moment it closes, with no UDP push ever aimed at its TCP address."""
        host = stream(self.server, self.clock)
        register(host)
        host.payloads()
        for _ in range(20):  # 300 s of heartbeats answered
            self.clock.advance(HOST_HEARTBEAT)
            self.assertEqual(host.payloads(), [b""])
            host.receive(b"\x00")
        self.assertEqual(online_bits(self.server, HOST), b"\x80")
        host.close()
        self.assertEqual(online_bits(self.server, HOST), b"\x00")
        viewer_conn = stream(self.server, self.clock, "203.0.113.7", 5000)
        viewer_conn.send(punch_request())
        (answer,) = viewer_conn.messages()
        self.assertEqual(answer.punch_hole_response.failure, rz.PunchHoleResponse.OFFLINE)
        relay = rz.RendezvousMessage(request_relay=rz.RequestRelay(id=HOST, uuid="u"))
        stream(self.server, self.clock, "203.0.113.8", 5000).send(relay)
        self.assertEqual(self.udp.sent, [])

    def test_pushes_go_on_the_stream(self) -> None:
        """PunchHole, FetchLocalAddr and RequestRelay reach a stream host on its stream."""
        host = stream(self.server, self.clock, "198.51.100.1")
        register(host)
        host.payloads()
        v1 = stream(self.server, self.clock, "203.0.113.7", 5000)
        v1.send(punch_request())
        (push,) = host.messages()
        self.assertEqual(push.WhichOneof("union"), "punch_hole")
        self.assertEqual(push.punch_hole.nat_type, rz.ASYMMETRIC)
        lan = stream(self.server, self.clock, "198.51.100.1", 5001)
        lan.send(punch_request())
        (push,) = host.messages()
        self.assertEqual(push.WhichOneof("union"), "fetch_local_addr")
        v2 = stream(self.server, self.clock, "203.0.113.9", 5002)
        v2.send(rz.RendezvousMessage(request_relay=rz.RequestRelay(id=HOST, uuid="u-1")))
        (push,) = host.messages()
        self.assertEqual(push.request_relay.uuid, "u-1")
        self.assertEqual(self.udp.sent, [])

    def test_websocket_viewer_never_gets_the_lan_path(self) -> None:
        """A viewer on WebSocket (its connection says websocket = True) from the host's own
        public IP gets PunchHole pushed, not FetchLocalAddr, as hbbs does."""

        class WebSocketViewer:
            addr = ("198.51.100.1", 0)
            local = ("192.0.2.1", 21118)
            websocket = True

            def send_message(self, msg: rz.RendezvousMessage) -> None:
                pass

        host = stream(self.server, self.clock, "198.51.100.1")
        register(host)
        host.payloads()
        self.server.handle_stream_message(WebSocketViewer(), punch_request())
        (push,) = host.messages()
        self.assertEqual(push.WhichOneof("union"), "punch_hole")

    def test_heartbeats_and_answers(self) -> None:
        """An empty frame every 15 s; answers keep the host; a silent transport is closed
        by the 30 s read timeout, which takes the host offline."""
        host = stream(self.server, self.clock)
        register(host)
        host.payloads()
        self.clock.advance(HOST_HEARTBEAT - 0.1)
        self.assertEqual(host.payloads(), [])
        self.clock.advance(0.1)
        self.assertEqual(host.payloads(), [b""])
        host.receive(b"\x00")
        self.clock.advance(HOST_HEARTBEAT)
        self.assertEqual(host.payloads(), [b""])
        # No answer any more: 30 s after the last one the listener ends the stream.
        self.clock.advance(HOST_HEARTBEAT - 0.1)
        self.assertFalse(host.closing)
        self.clock.advance(0.2)
        self.assertTrue(host.closing)
        host.close()
        self.assertEqual(len(self.server.registry.streams), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent_stream_on_a_lenient_transport_goes_offline(self) -> None:
        """A stream whose transport never times out (a proxy, WebSocket) still loses its
        host after HOST_STREAM_IDLE without anything from it."""

        class Sink:
            addr = ("198.51.100.4", 7000)
            local = ("192.0.2.1", 21116)

            def __init__(self) -> None:
                self.sent: list[rz.RendezvousMessage] = []

            def send_message(self, msg: rz.RendezvousMessage) -> None:
                self.sent.append(msg)

        sink = Sink()
        reg = rz.RegisterPk(id=HOST, uuid=UUID, pk=PK)
        self.assertTrue(
            self.server.handle_stream_message(sink, rz.RendezvousMessage(register_pk=reg))
        )
        advance(self.clock, HOST_HEARTBEAT)
        self.assertEqual(online_bits(self.server, HOST), b"\x80")
        advance(self.clock, HOST_STREAM_IDLE + HOST_HEARTBEAT)
        self.assertEqual(online_bits(self.server, HOST), b"\x00")
        self.assertEqual(self.server.counters["stream_hosts_silent"], 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        beats = [m for m in sink.sent if m.WhichOneof("union") is None]
        self.assertEqual(len(beats), 2)

    def test_newer_stream_replaces_older(self) -> None:
        """A host that reconnects takes its id to the new stream; the old one gets nothing
        more and its close does not take the host offline."""
        old = stream(self.server, self.clock, port=40000)
        register(old)
        new = stream(self.server, self.clock, port=40001)
        register(new)
        old.payloads()
        new.payloads()
        stream(self.server, self.clock, "203.0.113.7", 5000).send(punch_request())
        self.assertEqual(old.messages(), [])
        self.assertEqual(len(new.messages()), 1)
        self.clock.advance(HOST_HEARTBEAT)
        self.assertEqual(old.payloads(), [])
        self.assertEqual(new.payloads(), [b""])
        old.close()
        self.assertEqual(online_bits(self.server, HOST), b"\x80")
        self.assertEqual(len(self.server.registry.streams), 1)

    def test_one_stream_carries_one_id(self) -> None:
        """A stream that registers a second id gives up the first."""
        conn = stream(self.server, self.clock)
        register(conn, "111111111")
        register(conn, "222222222", uuid=b"other-uuid")
        self.assertEqual(online_bits(self.server, "111111111", "222222222"), b"\x40")
        self.assertEqual(len(self.server.registry.streams), 1)
        self.assertEqual(self.server.registry.streams.site_count("198.51.100.1"), 1)

    def test_uuid_mismatch_keeps_the_stream_for_the_new_id(self) -> None:
        """UUID_MISMATCH leaves the stream open: a stock host registers a new random id on
        it at once (handle_uuid_mismatch)."""
        stream(self.server, self.clock, "203.0.113.1").send(
            rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST, uuid=b"owner", pk=PK))
        )
        host = stream(self.server, self.clock)
        register(host)
        (answer,) = host.messages()
        self.assertEqual(answer.register_pk_response.result, UUID_MISMATCH)
        self.assertFalse(host.closing)
        register(host, "1500000000")
        (answer,) = host.messages()
        self.assertEqual(answer.register_pk_response.result, OK)
        self.assertEqual(answer.register_pk_response.keep_alive, HOST_KEEP_ALIVE)

    def test_other_refusals_close_an_unbound_stream(self) -> None:
        """An empty key is closed without an answer; TOO_FREQUENT is answered, then closed."""
        conn = stream(self.server, self.clock)
        register(conn, pk=b"")
        self.assertEqual(conn.payloads(), [])
        self.assertTrue(conn.closing)
        for _ in range(3):
            self.server.registry.register_pk(HOST, UUID, PK, ("198.51.100.1", 1), 0.0)
        conn = stream(self.server, self.clock)
        register(conn)
        (answer,) = conn.messages()
        self.assertEqual(answer.register_pk_response.result, TOO_FREQUENT)
        self.assertTrue(conn.closing)

    def test_registration_answered_once_stored(self) -> None:
        """OK goes out only after the store has the key; a failed save answers SERVER_ERROR
        and takes the stream off."""
        store = ManualStore()
        server, _ = make_server(self.clock, store)
        host = stream(server, self.clock)
        register(host)
        self.assertEqual(host.payloads(), [])
        self.assertEqual(online_bits(server, HOST), b"\x80")
        store.saves[0][1].callback(b"g" * 16)
        (answer,) = host.messages()
        self.assertEqual(answer.register_pk_response.keep_alive, HOST_KEEP_ALIVE)
        self.assertEqual(server.registry.get(HOST).guid, b"g" * 16)  # type: ignore[union-attr]

        server, _ = make_server(self.clock, ManualStore(failing=True))
        host = stream(server, self.clock)
        register(host)
        (answer,) = host.messages()
        self.assertEqual(answer.register_pk_response.result, rz.RegisterPkResponse.SERVER_ERROR)
        self.assertEqual(online_bits(server, HOST), b"\x00")
        self.assertEqual(len(server.registry.streams), 0)
        self.flushLoggedErrors(OSError)

    def test_udp_heartbeats_cannot_divert_a_stream_host(self) -> None:
        """A forged RegisterPeer for a stream host's id moves nothing: pushes stay on the
        stream (a TCP source cannot be spoofed, a UDP one can)."""
        host = stream(self.server, self.clock, "198.51.100.1")
        register(host)
        host.payloads()
        hb = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=HOST, serial=3))
        self.server.handle_datagram(hb.SerializeToString(), ("198.51.100.1", 9999))
        self.udp.sent.clear()
        stream(self.server, self.clock, "203.0.113.7", 5000).send(punch_request())
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(len(host.messages()), 1)


class LimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server, _ = make_server(self.clock)
        self.server.registry.ip_blocker.allow = lambda ip, peer_id, now: True  # type: ignore[method-assign]

    def test_per_site_cap(self) -> None:
        """Beyond max_per_site stream hosts from one IPv4 address, RegisterPk on a new
        stream is answered TOO_FREQUENT and the stream closed; other sites are unaffected;
        a closed stream frees its place."""
        streams = self.server.registry.streams
        streams.max_per_site = 3
        conns = [stream(self.server, self.clock, "198.51.100.1", 1000 + i) for i in range(4)]
        for i, c in enumerate(conns):
            register(c, f"10000000{i}", uuid=b"u%d" % i)
        results = [c.messages()[0].register_pk_response for c in conns]
        self.assertEqual([r.result for r in results], [OK, OK, OK, TOO_FREQUENT])
        self.assertTrue(conns[3].closing)
        other = stream(self.server, self.clock, "198.51.100.2")
        register(other, "200000000", uuid=b"x")
        self.assertEqual(other.messages()[0].register_pk_response.result, OK)
        conns[0].close()
        again = stream(self.server, self.clock, "198.51.100.1", 2000)
        register(again, "100000003", uuid=b"u3")
        self.assertEqual(again.messages()[0].register_pk_response.result, OK)
        self.assertEqual(self.server.counters["stream_hosts_refused"], 1)

    def test_an_ipv6_64_is_one_site(self) -> None:
        """Addresses of one IPv6 /64 share the cap; another /64 has its own."""
        self.server.registry.streams.max_per_site = 2
        ips = ["2001:db8:1:2::1", "2001:db8:1:2::abcd", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1"]
        results = []
        for i, ip in enumerate(ips):
            c = stream(self.server, self.clock, ip, 3000 + i)
            register(c, f"30000000{i}", uuid=b"v%d" % i)
            results.append(c.messages()[0].register_pk_response.result)
        self.assertEqual(results, [OK, OK, TOO_FREQUENT, OK])
        self.assertEqual(source_site("2001:db8:1:2:ffff::9"), "2001:db8:1:2::/64")
        self.assertEqual(source_site("198.51.100.1"), "198.51.100.1")

    def test_total_cap(self) -> None:
        """Beyond max_total stream hosts in all, from any sites, new ones are refused."""
        self.server.registry.streams.max_total = 5
        ok = 0
        for i in range(8):
            c = stream(self.server, self.clock, f"198.51.100.{i + 1}")
            register(c, f"40000000{i}", uuid=b"w%d" % i)
            ok += c.messages()[0].register_pk_response.result == OK
        self.assertEqual(ok, 5)
        self.assertEqual(len(self.server.registry.streams), 5)

    def test_replacing_at_the_cap_is_allowed(self) -> None:
        """At the cap, a host coming back on a new stream from the same site still gets in
        (it replaces its own stream, so nothing grows)."""
        self.server.registry.streams.max_per_site = 1
        old = stream(self.server, self.clock, port=1)
        register(old)
        new = stream(self.server, self.clock, port=2)
        register(new)
        self.assertEqual(new.messages()[0].register_pk_response.result, OK)
        self.assertEqual(self.server.registry.streams.site_count("198.51.100.1"), 1)

    def test_hostile_many_streams_many_ids(self) -> None:
        """500 streams from 50 addresses, each registering 4 ids in a row, then all closed:
        what the server holds stays within the caps at every step, every stream carries at
        most one host, and nothing is left behind (bindings, heartbeat timers)."""
        streams = self.server.registry.streams
        streams.max_per_site = 4
        streams.max_total = 120
        conns = []
        for n in range(500):
            c = stream(self.server, self.clock, f"203.0.113.{n % 50}", 10000 + n)
            conns.append(c)
            for k in range(4):
                register(c, f"{n:05d}{k:04d}", uuid=b"h%d" % n)
                self.assertLessEqual(len(streams), 120)
                self.assertLessEqual(streams.site_count(f"203.0.113.{n % 50}"), 4)
            self.clock.advance(0.05)  # 25 s in all: no stream is silent long enough to go
        self.assertEqual(len(streams), 120)
        bound = [c for c in conns if streams.peer_of(c.proto) is not None]
        self.assertEqual(len(bound), 120)
        self.assertEqual(len({streams.peer_of(c.proto).id for c in bound}), 120)  # type: ignore[union-attr]
        self.assertEqual(len(self.server._heartbeats), 120)
        for c in conns:
            c.close()
        self.assertEqual(len(streams), 0)
        self.assertEqual(self.server.registry.online_count(self.clock.seconds()), 0)
        self.assertEqual(
            [c for c in self.clock.getDelayedCalls() if c.active()], [], "timers left behind"
        )


class HypothesisTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["open", "register", "answer", "close", "wait", "punch"]),
                st.integers(min_value=0, max_value=5),
                st.integers(min_value=0, max_value=3),
            ),
            max_size=40,
        )
    )
    def test_any_sequence_keeps_bindings_consistent(self, ops: list[tuple[str, int, int]]) -> None:
        """Streams opening, registering (ids and uuids drawn from a few), answering,
        closing and time passing: every bound stream is its peer's channel and the other
        way round, the per-site counts add up, one heartbeat timer per bound stream."""
        clock = Clock()
        server, _ = make_server(clock)
        server.registry.streams.max_per_site = 3
        conns: list[Conn] = []
        for op, a, b in ops:
            if op == "open" or not conns:
                conns.append(stream(server, clock, f"198.51.100.{a % 3}", 1000 + len(conns)))
                continue
            c = conns[a % len(conns)]
            if op == "register":
                register(c, f"50000000{b}", uuid=b"uuid-%d" % (b % 2), pk=b"k%d" % a)
            elif op == "answer":
                c.receive(b"\x00")
            elif op == "close":
                c.close()
            elif op == "wait":
                clock.advance(b * 11.0)
            else:
                stream(server, clock, "203.0.113.1", 9000).send(punch_request(f"50000000{b}"))
            self._check(server, conns, clock)
        for c in conns:
            c.close()
        self.assertEqual(len(server.registry.streams), 0)
        self.assertEqual(server._heartbeats, {})

    def _check(self, server: RendezvousServer, conns: list[Conn], clock: Clock) -> None:
        streams = server.registry.streams
        sites: dict[str, int] = {}
        for ch in streams.channels():
            peer = streams.peer_of(ch)
            assert peer is not None
            self.assertIs(peer.channel, ch)
            self.assertIs(server.registry.get(peer.id), peer)
            site = source_site(ch.addr[0])
            sites[site] = sites.get(site, 0) + 1
            self.assertIn(ch, server._heartbeats)
        for site, n in sites.items():
            self.assertEqual(streams.site_count(site), n)
            self.assertLessEqual(n, 3)
        self.assertEqual(set(server._heartbeats), set(streams.channels()))
        for peer in server.registry:
            if peer.channel is not None:
                self.assertIs(streams.peer_of(peer.channel), peer)


# --- over WebSocket: the same channel, another transport ------------------------------------


class WebSocketHostTests(TestCase):
    """A host in WebSocket mode registers on P+2 (in-process server, heartbeats every 0.2 s
    instead of 15 s so that the test sees several)."""

    def setUp(self) -> None:
        self.patch(host_streams, "HOST_HEARTBEAT", 0.2)
        self.svc = start_server(Path(self.mktemp()), "--key", secret_b64(KEY))
        self._closers: list[Any] = []

    def tearDown(self) -> Any:
        for close in self._closers:
            close()

        async def settle() -> None:
            await self.svc.stopService()
            await pause(0.05)

        return Deferred.fromCoroutine(settle())

    async def test_host_on_websocket(self) -> None:
        """RegisterPk in a binary message is answered OK with keep_alive; empty messages
        are the heartbeats and their answers; a punch request arrives as a message;
        OnlineRequest (which WebSocket clients send to P+2) says online until the
        WebSocket closes."""
        ws_port = int(self.svc.rendezvous_ws.listening.getHost().port)
        host = await ws_connect(ws_port, path="/ws/id", bind="127.0.0.2")
        self._closers.append(host.abort)
        host.send_msg(rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST, uuid=UUID, pk=PK)))
        answer = await host.recv_msg()
        self.assertEqual(answer.register_pk_response.keep_alive, HOST_KEEP_ALIVE)
        for _ in range(3):
            self.assertEqual(await host.recv(), b"")
            host.send(b"")
        tcp_port = self.svc.rendezvous_tcp.listening.getHost().port
        viewer_conn = await tcp_client(tcp_port, "127.0.0.1")
        transport: Any = viewer_conn.transport
        self._closers.append(transport.abortConnection)
        viewer_conn.send_msg(punch_request())
        while True:
            push = await host.recv_msg()
            if push.WhichOneof("union") is not None:
                break
        self.assertEqual(push.WhichOneof("union"), "punch_hole")
        self.assertEqual(await self._online(ws_port), b"\x80")
        await host.close()
        await until(lambda: self.svc.server.stream_host_count() == 0, 5, message="unbound")
        self.assertEqual(await self._online(ws_port), b"\x00")

    async def _online(self, ws_port: int) -> bytes:
        c = await ws_connect(ws_port, path="/ws/id")
        self._closers.append(c.abort)
        c.send_msg(rz.RendezvousMessage(online_request=rz.OnlineRequest(id="x", peers=[HOST])))
        return bytes((await c.recv_msg()).online_response.states)


# --- end to end: a real litedesk-relay, a stock TCP-mode host, a stock client ---------------


SERVER_SEED = bytes(range(32))
SERVER_KEY = base64.b64encode(bytes(SigningKey(SERVER_SEED).verify_key)).decode()


def exchange(host: HostSession, client: socket.socket) -> None:
    """Bytes both ways over what the viewer reached; raises if either side fails."""
    client.settimeout(10)
    host.sock.settimeout(10)
    client.sendall(b"viewer says hi")
    got = b""
    while len(got) < 14:
        chunk = host.sock.recv(64)
        if not chunk:
            raise ConnectionError("host side closed")
        got += chunk
    assert got == b"viewer says hi", got
    host.sock.sendall(b"host answers")
    got = b""
    while len(got) < 12:
        chunk = client.recv(64)
        if not chunk:
            raise ConnectionError("viewer side closed")
        got += chunk
    assert got == b"host answers", got


def online_query(port: int, *ids: str) -> bytes:
    """OnlineRequest on the NAT-test port (P-1), as client.rs query_online_states."""
    with socket.create_connection(("127.0.0.1", port - 1), timeout=5) as s:
        req = rz.RendezvousMessage(online_request=rz.OnlineRequest(id="x", peers=list(ids)))
        s.sendall(encode_frame(req.SerializeToString()))
        decoder = FrameDecoder()
        while True:
            data = s.recv(4096)
            if not data:
                raise ConnectionError("closed without an answer")
            frames = decoder.feed(data)
            if frames:
                msg = rz.RendezvousMessage()
                msg.ParseFromString(frames[0])
                return bytes(msg.online_response.states)


class EndToEndTests(SynchronousTestCase):
    """A real server process; hosts on 127.0.0.2 unless they share the viewer's IP."""

    def setUp(self) -> None:
        self.port = free_port_pair()
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()
        self.log = Path(self.mktemp())
        self.relay = RelayProcess(
            self.data_dir, self.port, self.log, "--key", secret_b64(SigningKey(SERVER_SEED))
        )
        self.addCleanup(self.relay.stop)
        self.server = f"127.0.0.1:{self.port}"
        self.hosts: list[StreamHost] = []

    def tearDown(self) -> None:
        for h in self.hosts:
            h.stop()
        for h in self.hosts:
            while not h.sessions.empty():
                h.sessions.get().sock.close()

    def host(self, bind: str = "127.0.0.2", **kw: Any) -> StreamHost:
        h = StreamHost(self.server, HOST, UUID, PK, key=SERVER_KEY, bind=bind, **kw)
        self.hosts.append(h)
        h.start()
        if not h.confirmed.wait(20):
            self.fail(f"host not registered: {h.results} {h.ended} {h.errors}")
        return h

    def session(self, h: StreamHost) -> HostSession:
        return wait_until(
            lambda: None if h.sessions.empty() else h.sessions.get(),
            timeout=25,
            message=lambda: f"a viewer on the host ({h.errors})",
        )

    def test_registered_over_tcp_and_online(self) -> None:
        """The stock TCP-mode host's RegisterPk is answered OK with keep_alive 30 on its
        stream, and OnlineRequest says it is online; when it stops, offline."""
        h = self.host()
        self.assertEqual(h.results, [OK])
        self.assertEqual(h.keep_alives, [HOST_KEEP_ALIVE])
        self.assertEqual(online_query(self.port, HOST, "987654321"), b"\x80")
        h.stop()
        wait_until(lambda: online_query(self.port, HOST) == b"\x00", 10, message="offline")
        with self.assertRaisesRegex(viewer.RendezvousFailure, "Remote desktop is offline"):
            viewer.punch_hole_request(self.server, SERVER_KEY, HOST, waits=(3.0,))

    def test_punch(self) -> None:
        """PunchHole reaches the host on its stream; its PunchHoleSent comes back as the
        viewer's answer (host key signed by the server), and the viewer connects to it."""
        h = self.host()
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        self.assertEqual(answer.kind, "punch")
        self.assertEqual(answer.host_pk, PK)
        self.assertEqual(answer.peer_addr[0], "127.0.0.2")  # type: ignore[index]
        sock = viewer.connect_direct(answer, timeout=5)
        self.addCleanup(sock.close)
        got = self.session(h)
        self.assertEqual(got.path, "punch")
        exchange(got, sock)
        self.assertEqual(h.pushes.get_nowait().WhichOneof("union"), "punch_hole")

    def test_lan_address(self) -> None:
        """A viewer on the host's own public IP gets the host's LAN address (FetchLocalAddr
        on the stream, LocalAddr back) and connects to it."""
        h = self.host(bind="127.0.0.1")
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        self.assertEqual(answer.kind, "local")
        sock = viewer.connect_direct(answer, timeout=5)
        self.addCleanup(sock.close)
        got = self.session(h)
        self.assertEqual(got.path, "local")
        exchange(got, sock)

    def test_relay_opened_by_the_host(self) -> None:
        """A client forcing the relay: the host gets PunchHole(SYMMETRIC) on its stream,
        opens the relay itself and the client joins it (through the server's own relay)."""
        h = self.host()
        reached = viewer.reach(self.server, SERVER_KEY, HOST, force_relay=True)
        self.addCleanup(reached.sock.close)
        self.assertEqual(reached.path, "relay")
        self.assertEqual(reached.answer.host_pk, PK)
        got = self.session(h)
        self.assertEqual((got.path, got.uuid), ("relay", reached.uuid))
        exchange(got, reached.sock)

    def test_request_relay(self) -> None:
        """RequestRelay from the client reaches the host on its stream; the host answers
        and meets the client on the relay under the client's uuid."""
        h = self.host()
        # The punch answer names the relay; the host's punch listener is left waiting.
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        ticket = viewer.request_relay(self.server, SERVER_KEY, HOST, answer.relay_server)
        sock = viewer.connect_via_relay(ticket.relay, ticket.uuid, SERVER_KEY, HOST)
        self.addCleanup(sock.close)
        got = self.session(h)
        self.assertEqual((got.path, got.uuid), ("relay", ticket.uuid))
        exchange(got, sock)
        kinds = []
        while not h.pushes.empty():
            kinds.append(h.pushes.get().WhichOneof("union"))
        self.assertEqual(kinds, ["punch_hole", "request_relay"])

    test_punch.timeout = 60  # type: ignore[attr-defined]
    test_request_relay.timeout = 60  # type: ignore[attr-defined]

    def test_secure_tcp_host(self) -> None:
        """A TCP-mode host as it really runs, with secure_tcp first: the server's KeyExchange,
        then RegisterPk, heartbeats and pushes sealed; reached by punch."""
        h = self.host(secure=True)
        self.assertTrue(h.secured)
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        sock = viewer.connect_direct(answer, timeout=5)
        self.addCleanup(sock.close)
        exchange(self.session(h), sock)

    def test_stream_outlives_the_read_timeout(self) -> None:
        """Heartbeats keep a host that says nothing else online past the 30 s the listener
        allows between messages."""
        h = self.host()
        time.sleep(33)
        self.assertGreaterEqual(h.heartbeats, 2)
        self.assertEqual(h.streams, 1)
        self.assertEqual(online_query(self.port, HOST), b"\x80")
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        self.assertEqual(answer.kind, "punch")

    test_stream_outlives_the_read_timeout.timeout = 90  # type: ignore[attr-defined]

    def test_hostile_streams_from_one_address(self) -> None:
        """80 streams from one address, each registering its own id: the per-IP RegisterPk
        limit admits 32 at most, every refused stream is closed, the rest stay bounded, and
        a real host elsewhere registers and is reached as usual."""
        socks = []
        results = []
        for i in range(80):
            s = socket.socket()
            s.bind(("127.0.0.9", 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", self.port))
            socks.append(s)
            reg = rz.RegisterPk(id=f"77{i:07d}", uuid=b"hostile-%d" % i, pk=PK)
            s.sendall(encode_frame(rz.RendezvousMessage(register_pk=reg).SerializeToString()))
            results.append(self._answer_or_close(s))
        for s in socks:
            self.addCleanup(s.close)
        oks = [r for r in results if r == ("answer", OK)]
        self.assertLessEqual(len(oks), 32)
        self.assertGreaterEqual(len(oks), 1)
        refused = [i for i, r in enumerate(results) if r != ("answer", OK)]
        for i in refused:
            self.assertEqual(results[i], ("answer", TOO_FREQUENT))
            self.assertEqual(socks[i].recv(1), b"", "a refused stream is closed")
        self.host()
        answer = viewer.punch_hole_request(self.server, SERVER_KEY, HOST)
        self.assertEqual(answer.kind, "punch")

    def _answer_or_close(self, s: socket.socket) -> tuple[str, int]:
        decoder = FrameDecoder()
        while True:
            data = s.recv(4096)
            if not data:
                return ("closed", -1)
            for payload in decoder.feed(data):
                msg = rz.RendezvousMessage()
                msg.ParseFromString(payload)
                if msg.WhichOneof("union") == "register_pk_response":
                    return ("answer", msg.register_pk_response.result)
