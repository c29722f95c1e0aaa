"""C{/metrics} beyond the basics: online hosts, punch results and latency, relay
refusals and unpaired legs, sign-in counters.

Two kinds of test.  With an injected clock (L{Clock}): a rendezvous server
whose stream connections are the real stream protocol on a
C{StringTransport}, datagrams fed to it as the UDP protocol would, scraped
through the real collector; time moves by 30 s without waiting.  With a
real server on loopback (L{tests.rendezvous_harness.start_server}): real UDP,
TCP and WebSocket peers, scraped over HTTP.  The online count, kept without walking
the peers, is also checked against the plain walk (L{Peer.online}) after
random sequences of registrations, binds, unbinds and silences
(hypothesis).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.core import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.ops.counters import LOGIN_OUTCOMES
from litedesk.ops.metrics import ServerCollector
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.protocols import RendezvousStreamFactory, RendezvousStreamProtocol
from litedesk.rendezvous.punch_stats import PUNCH_BUCKETS, PUNCH_RESULTS
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.server.assembly import LiteDeskServer
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey

from .rendezvous_harness import TIMEOUT, sleep, start_server, tcp_client, udp_client, with_timeout
from .support.ws_client import ws_connect
from .test_ops_web import http_get, samples

PK = bytes([9]) * 32
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(s: Samples, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


def register_pk(peer_id: str, uuid: bytes = b"u" * 16) -> bytes:
    msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=uuid, pk=PK))
    return msg.SerializeToString()


def register_peer(peer_id: str) -> bytes:
    return rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=peer_id)).SerializeToString()


class Stream:
    """A stream connection to the real rendezvous protocol, on a StringTransport."""

    def __init__(self, server: RendezvousServer, clock: Clock, ip: str, port: int) -> None:
        factory = RendezvousStreamFactory(
            server, RendezvousStreamProtocol, clock=clock, key_exchange_wait=None
        )
        self.proto = cast(RendezvousStreamProtocol, factory.buildProtocol(None))
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, port))
        self.proto.makeConnection(self.transport)
        self._decoder = FrameDecoder()

    def send(self, msg: rz.RendezvousMessage) -> None:
        self.proto.dataReceived(encode_frame(msg.SerializeToString()))

    def messages(self) -> list[rz.RendezvousMessage]:
        data = self.transport.value()
        self.transport.clear()
        out = []
        for payload in self._decoder.feed(data):
            m = rz.RendezvousMessage()
            m.ParseFromString(payload)
            out.append(m)
        return out

    def close(self) -> None:
        self.proto.connectionLost(None)  # type: ignore[arg-type]


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class ClockedServer:
    """A rendezvous server on a Clock, and its scrape through the real collector."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.registry = Registry()
        self.server = RendezvousServer(
            clock=self.clock,
            registry=self.registry,
            key=ServerKey("", None),
            relays=RelayList([]),
        )
        self.udp = Datagrams()
        self.server.udp = self.udp
        top = LiteDeskServer(ServerKey("", None))
        top.server, top.registry = self.server, self.registry
        self.top = top
        self._metrics = CollectorRegistry(auto_describe=False)
        self._metrics.register(ServerCollector(top, self.clock, None))

    def scrape(self) -> Samples:
        return samples(generate_latest(self._metrics).decode())

    def online(self) -> float:
        return value(self.scrape(), "litedesk_hosts_online")

    def udp_host(self, peer_id: str, port: int) -> None:
        """RegisterPk then a heartbeat from 192.0.2.1:port, as a stock host starts."""
        addr = ("192.0.2.1", port)
        self.server.handle_datagram(register_pk(peer_id), addr)
        self.server.handle_datagram(register_peer(peer_id), addr)

    def advance(self, seconds: float) -> None:
        # Step by step so the stream heartbeats run as a reactor would run them.
        while seconds > 0:
            step = min(seconds, 1.0)
            self.clock.advance(step)
            seconds -= step


class OnlineCountTests(SynchronousTestCase):
    def test_udp_hosts_go_offline_after_30_s_of_silence(self) -> None:
        s = ClockedServer()
        for i, peer_id in enumerate(("host0001", "host0002", "host0003")):
            s.udp_host(peer_id, 30000 + i)
        self.assertEqual(s.online(), 3)
        s.advance(20)
        s.server.handle_datagram(register_peer("host0001"), ("192.0.2.1", 30000))
        self.assertEqual(s.online(), 3)
        s.advance(10.5)
        # host0002 and host0003 last registered 30.5 s ago; host0001 10.5 s ago.
        self.assertEqual(s.online(), 1)
        self.assertEqual(value(s.scrape(), "litedesk_peers_registered"), 3)
        s.advance(20)
        self.assertEqual(s.online(), 0)
        # A host back from silence counts again.
        s.server.handle_datagram(register_peer("host0002"), ("192.0.2.1", 30001))
        self.assertEqual(s.online(), 1)

    def test_stream_hosts_online_while_their_stream_holds(self) -> None:
        s = ClockedServer()
        s.udp_host("udphost01", 30000)
        conns = [Stream(s.server, s.clock, "198.51.100.1", 40000 + i) for i in range(2)]
        for i, conn in enumerate(conns):
            conn.send(
                rz.RendezvousMessage(
                    register_pk=rz.RegisterPk(id=f"stream0{i}", uuid=b"s" * 16, pk=PK)
                )
            )
        self.assertEqual(s.online(), 3)
        # 60 s: the UDP host is silent, the stream hosts answer every heartbeat.
        for _ in range(60):
            s.advance(1)
            for conn in conns:
                if conn.messages():
                    conn.proto.dataReceived(encode_frame(b""))
        self.assertEqual(s.online(), 2)
        conns[0].close()
        self.assertEqual(s.online(), 1)
        # The other goes silent: the server drops it after its idle limit.
        s.advance(60)
        self.assertEqual(s.online(), 0)
        self.assertEqual(len(s.registry.streams), 0)

    def test_host_on_a_stream_and_by_udp_counts_once(self) -> None:
        s = ClockedServer()
        conn = Stream(s.server, s.clock, "198.51.100.1", 40000)
        conn.send(
            rz.RendezvousMessage(register_pk=rz.RegisterPk(id="bothways1", uuid=b"b" * 16, pk=PK))
        )
        s.server.handle_datagram(register_peer("bothways1"), ("198.51.100.1", 50000))
        self.assertEqual(s.online(), 1)
        conn.close()
        # Its UDP heartbeat came from another address: still online by UDP.
        self.assertEqual(s.online(), 1)
        s.advance(31)
        self.assertEqual(s.online(), 0)


class _Channel:
    def __init__(self, n: int) -> None:
        self.addr = (f"198.51.100.{n % 200 + 1}", 40000 + n)


# One step of the random walk: (what, which peer, seconds to wait after).
_steps = st.lists(
    st.tuples(
        st.sampled_from(["udp", "bind", "unbind", "rebind"]),
        st.integers(0, 5),
        st.sampled_from([0.0, 1.0, 10.0, 29.5, 30.0, 31.0]),
    ),
    max_size=40,
)


class OnlineCountModelTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(_steps)
    def test_count_is_the_walk(self, steps: list[tuple[str, int, float]]) -> None:
        """After any sequence, the kept count equals counting L{Peer.online} one by one."""
        registry = Registry()
        now = 1000.0
        ids = [f"peer{i:04d}" for i in range(6)]
        channels: dict[int, _Channel] = {}
        serial = 0
        for kind, i, wait in steps:
            peer_id = ids[i]
            if kind == "udp":
                registry.register_pk(peer_id, b"u" * 16, PK, ("192.0.2.1", 1000 + i), now)
                registry.register_peer(peer_id, 0, ("192.0.2.1", 1000 + i), now)
            elif kind in ("bind", "rebind"):
                peer = registry.get(peer_id)
                if peer is None:
                    registry.register_pk(peer_id, b"u" * 16, PK, ("192.0.2.9", 9), now)
                    peer = registry.get(peer_id)
                assert peer is not None
                if kind == "rebind" or i not in channels:
                    serial += 1
                    channels[i] = _Channel(serial)
                registry.streams.bind(channels[i], peer, now)  # type: ignore[arg-type]
            elif i in channels:
                registry.streams.unbind(channels.pop(i))  # type: ignore[arg-type]
            now += wait
            walk = sum(1 for p in registry if p.online(now))
            self.assertEqual(registry.online_count(now), walk)


class PunchResultTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.s = ClockedServer()
        self.s.udp_host("target01", 30000)
        self.s.udp.sent.clear()

    def punch(self, peer_id: str = "target01", port: int = 50000) -> Stream:
        viewer = Stream(self.s.server, self.s.clock, "203.0.113.5", port)
        viewer.send(rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=peer_id)))
        return viewer

    def pushed(self) -> rz.RendezvousMessage:
        data, _ = self.s.udp.sent.pop()
        msg = rz.RendezvousMessage()
        msg.ParseFromString(data)
        return msg

    def results(self) -> dict[str, float]:
        got = self.s.scrape()
        return {r: value(got, "litedesk_punch_results_total", result=r) for r in PUNCH_RESULTS}

    def test_answers_timed_from_request_to_delivery(self) -> None:
        """0.3 s to a PunchHoleSent, 4 s to a RelayResponse: two observations, right buckets."""
        host = Stream(self.s.server, self.s.clock, "192.0.2.1", 45000)
        viewer = self.punch()
        socket_addr = self.pushed().punch_hole.socket_addr
        self.s.clock.advance(0.3)
        host.send(
            rz.RendezvousMessage(
                punch_hole_sent=rz.PunchHoleSent(socket_addr=socket_addr, id="target01")
            )
        )
        self.assertTrue(viewer.messages()[0].HasField("punch_hole_response"))

        viewer2 = self.punch(port=50001)
        socket_addr = self.pushed().punch_hole.socket_addr
        self.s.clock.advance(4)
        # A host answers each push on a connection of its own.
        host = Stream(self.s.server, self.s.clock, "192.0.2.1", 45001)
        host.send(
            rz.RendezvousMessage(
                relay_response=rz.RelayResponse(
                    socket_addr=socket_addr, uuid="x", relay_server="relay.example"
                )
            )
        )
        self.assertTrue(viewer2.messages()[0].HasField("relay_response"))

        got = self.s.scrape()
        name = "litedesk_punch_latency_seconds"
        self.assertEqual(value(got, name + "_count"), 2)
        self.assertAlmostEqual(value(got, name + "_sum"), 4.3)
        self.assertEqual(value(got, name + "_bucket", le="0.25"), 0)
        self.assertEqual(value(got, name + "_bucket", le="0.5"), 1)
        self.assertEqual(value(got, name + "_bucket", le="2.5"), 1)
        self.assertEqual(value(got, name + "_bucket", le="5.0"), 2)
        self.assertEqual(value(got, name + "_bucket", le="+Inf"), 2)
        self.assertEqual(
            {k for k in got if k[0] == name + "_bucket"},
            {(name + "_bucket", (("le", repr(b)),)) for b in PUNCH_BUCKETS}
            | {(name + "_bucket", (("le", "+Inf"),))},
        )
        r = self.results()
        self.assertEqual((r["punch"], r["relay"]), (1, 1))

    def test_udp_punch_answer_timed(self) -> None:
        """A punch brokered by UDP (RustDesk 1.4.1+): the host's UDP PunchHoleSent
        delivered on the viewer's stream counts as udp_punch, with its latency."""
        for _ in range(3):
            self.s.server.handle_datagram(
                rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()).SerializeToString(),
                ("203.0.113.5", 41000),
            )
        viewer = Stream(self.s.server, self.s.clock, "203.0.113.5", 50000)
        viewer.send(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id="target01", udp_port=3478)
            )
        )
        push = self.pushed().punch_hole
        self.assertEqual(push.udp_port, 41000)
        self.s.clock.advance(0.002)
        sent = rz.PunchHoleSent(socket_addr=push.socket_addr, id="target01")
        self.s.server.handle_datagram(
            rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString(), ("192.0.2.1", 31000)
        )
        self.assertTrue(viewer.messages()[0].punch_hole_response.is_udp)
        got = self.s.scrape()
        self.assertEqual(value(got, "litedesk_punch_results_total", result="udp_punch"), 1)
        name = "litedesk_punch_latency_seconds_bucket"
        self.assertEqual(value(got, name, le="0.001"), 0)
        self.assertEqual(value(got, name, le="0.0025"), 1)

    def test_failures_and_abandoned_counted_apart(self) -> None:
        self.punch("nosuchid1").close()
        self.s.advance(31)  # target01 is now offline
        self.punch("target01", 50001).close()
        self.s.server.handle_datagram(register_peer("target01"), ("192.0.2.1", 30000))
        self.s.udp.sent.clear()
        viewer = self.punch("target01", 50002)
        viewer.close()  # left before the host answered
        late_addr = self.pushed().punch_hole.socket_addr
        host = Stream(self.s.server, self.s.clock, "192.0.2.1", 45000)
        host.send(
            rz.RendezvousMessage(
                punch_hole_sent=rz.PunchHoleSent(socket_addr=late_addr, id="target01")
            )
        )
        r = self.results()
        self.assertEqual(
            {k: v for k, v in r.items() if v},
            {"id_not_exist": 1, "offline": 1, "abandoned": 1},
        )
        got = self.s.scrape()
        self.assertEqual(value(got, "litedesk_punch_latency_seconds_count"), 0)
        # Nothing is left waiting: the parked viewers and their start times are gone.
        self.assertEqual(self.s.server.parked_count(), 0)
        self.assertEqual(self.s.server._punch_started, {})


class SignInCounterTests(SynchronousTestCase):
    def test_counts_by_kind_and_outcome(self) -> None:
        s = ClockedServer()
        before = s.scrape()
        for name in ("litedesk_api_logins_total", "litedesk_console_sign_ins_total"):
            self.assertEqual(
                {dict(k[1])["outcome"] for k in before if k[0] == name}, set(LOGIN_OUTCOMES)
            )
        s.top.ops_counters.login("api", "ok")
        s.top.ops_counters.login("api", "ok")
        s.top.ops_counters.login("console", "bad_password")
        got = s.scrape()
        self.assertEqual(value(got, "litedesk_api_logins_total", outcome="ok"), 2)
        self.assertEqual(value(got, "litedesk_api_logins_total", outcome="bad_password"), 0)
        self.assertEqual(value(got, "litedesk_console_sign_ins_total", outcome="bad_password"), 1)
        with self.assertRaises(KeyError):
            s.top.ops_counters.login("api", "something else")


def connect_and_hold(port: int, first_frame: bytes | None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    if first_frame is not None:
        sock.sendall(first_frame)
    return sock


def refused(port: int) -> bool:
    """Connect and see the relay close at once (a refusal at accept)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        return sock.recv(1) == b""


class RealServerTests(TestCase):
    timeout = 60

    def start(self, data_dir: Path, *extra: str) -> Any:
        svc = start_server(data_dir, "--key", "", *extra)
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    @inlineCallbacks
    def scrape(self, svc: Any) -> Any:
        port = svc.api.listening.getHost().port
        status, _, body = yield with_timeout(deferToThread(http_get, port, "/metrics"))
        self.assertEqual(status, 200)
        return samples(body.decode())

    @inlineCallbacks
    def test_punch_answered_over_real_sockets(self) -> Any:
        """A host registered by UDP, a viewer's TCP punch, the host's TCP LocalAddr: timed."""
        svc = self.start(Path(self.mktemp()))
        rz_port = svc.rendezvous_tcp.listening.getHost().port
        udp_port = svc.rendezvous_udp.listening.getHost().port
        host = udp_client()
        assert host.transport is not None
        self.addCleanup(host.transport.stopListening)
        host.send(register_pk("realhost1"), udp_port)
        yield host.recv()
        viewer = yield tcp_client(rz_port)
        self.addCleanup(viewer.close)
        viewer.send_msg(
            rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id="realhost1"))
        )
        data, _ = yield host.recv()
        pushed = rz.RendezvousMessage()
        pushed.ParseFromString(data)
        # Host and viewer share an IP (loopback): the server asks for the LAN address.
        asked = pushed.fetch_local_addr.socket_addr
        self.assertEqual(addrmangle.normalize(addrmangle.decode(asked)), viewer.local())
        answer = yield tcp_client(rz_port)
        self.addCleanup(answer.close)
        local = addrmangle.encode(("127.0.0.1", 21118))
        answer.send_msg(
            rz.RendezvousMessage(
                local_addr=rz.LocalAddr(socket_addr=asked, local_addr=local, id="realhost1")
            )
        )
        reply = yield viewer.recv_msg()
        self.assertTrue(reply.HasField("punch_hole_response"))
        got = yield self.scrape(svc)
        self.assertEqual(value(got, "litedesk_punch_latency_seconds_count"), 1)
        self.assertGreater(value(got, "litedesk_punch_latency_seconds_sum"), 0)
        self.assertEqual(value(got, "litedesk_punch_results_total", result="local"), 1)
        self.assertEqual(value(got, "litedesk_hosts_online"), 1)

    @inlineCallbacks
    def test_punch_from_a_websocket_viewer(self) -> Any:
        """A viewer on the WebSocket port: the host's PunchHoleSent answer is timed too."""
        svc = self.start(Path(self.mktemp()))
        udp_port = svc.rendezvous_udp.listening.getHost().port
        host = udp_client()
        assert host.transport is not None
        self.addCleanup(host.transport.stopListening)
        host.send(register_pk("wshost001"), udp_port)
        yield host.recv()
        viewer = yield ws_connect(svc.rendezvous_ws.listening.getHost().port, path="/ws/id")
        self.addCleanup(viewer.abort)
        viewer.send_msg(
            rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id="wshost001"))
        )
        data, _ = yield host.recv()
        # A WebSocket viewer is never asked for its LAN address: a punch.
        asked = rz.RendezvousMessage.FromString(data).punch_hole.socket_addr
        answer = yield tcp_client(svc.rendezvous_tcp.listening.getHost().port)
        self.addCleanup(answer.close)
        answer.send_msg(
            rz.RendezvousMessage(
                punch_hole_sent=rz.PunchHoleSent(socket_addr=asked, id="wshost001")
            )
        )
        reply = yield viewer.recv_msg()
        self.assertTrue(reply.HasField("punch_hole_response"))
        got = yield self.scrape(svc)
        self.assertEqual(value(got, "litedesk_punch_results_total", result="punch"), 1)
        self.assertEqual(value(got, "litedesk_punch_latency_seconds_count"), 1)

    @inlineCallbacks
    def test_relay_unpaired_and_refusals(self) -> Any:
        """A leg waiting for its partner is unpaired; past --max-unpaired one is refused."""
        svc = self.start(Path(self.mktemp()), "--max-unpaired", "1")
        relay_port = (yield svc.relay.when_listening()).getHost().port
        frame = encode_frame(
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(uuid="waiting-leg")
            ).SerializeToString()
        )
        sock = yield deferToThread(connect_and_hold, relay_port, frame)
        self.addCleanup(sock.close)
        table = svc.relay.relay.table
        for _ in range(250):
            if table.waiting_count:
                break
            yield sleep(0.02)
        got = yield self.scrape(svc)
        self.assertEqual(value(got, "litedesk_relay_unpaired"), 1)
        self.assertTrue((yield deferToThread(refused, relay_port)))
        got = yield self.scrape(svc)
        self.assertEqual(value(got, "litedesk_refusals_total", reason="relay_unpaired"), 1)
        self.assertEqual(value(got, "litedesk_refusals_total", reason="relay_blocklist"), 0)
        self.assertEqual(value(got, "litedesk_refusals_total", reason="login_required"), 0)

    @inlineCallbacks
    def test_relay_blocklist_refusal(self) -> Any:
        data_dir = Path(self.mktemp())
        data_dir.mkdir(mode=0o700)
        (data_dir / "blocklist.txt").write_text("127.0.0.1\n")
        svc = self.start(data_dir)
        relay_port = (yield svc.relay.when_listening()).getHost().port
        self.assertTrue((yield deferToThread(refused, relay_port)))
        got = yield self.scrape(svc)
        self.assertEqual(value(got, "litedesk_refusals_total", reason="relay_blocklist"), 1)
        self.assertEqual(value(got, "litedesk_relay_unpaired"), 0)
