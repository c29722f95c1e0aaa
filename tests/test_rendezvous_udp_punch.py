"""UDP punch brokering for RustDesk 1.4.1 and later (docs/protocol.rst §5.12).

The rules (L{litedesk.rendezvous.udp_punch.UdpPunchBroker}) on plain numbers for time;
the controller on a task.Clock with StringTransport connections: the viewer's UDP
TestNatRequest noted and never answered, C{udp_port} forwarded (the port the viewer's
NAT test came from), the host's UDP PunchHoleSent turned into C{PunchHoleResponse{is_udp}}
on the viewer's TCP or WebSocket connection, requests without C{udp_port} byte for byte
as before, forged and flooding datagrams.  Then the server in this process over loopback
(TCP and WebSocket viewers, a host's raw UDP socket), and a real C{twistd litedesk-relay}
between the stock-client emulator (L{tests.support.rustdesk_rendezvous},
C{udp_punch_hole_request}) and a stock 1.4.1+ host emulator
(L{tests.support.rustdesk_host.UdpPunchHost}) that punch each other's UDP endpoints.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import message_pb2 as pb
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.udp_punch import (
    MAX_OBSERVED_SOURCES,
    OBSERVATION_TTL,
    PUNCH_TTL,
    UdpPunchBroker,
)
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey, public_b64, secret_b64

from .rendezvous_harness import start_server, tcp_client, udp_client
from .support import rustdesk_rendezvous as viewer
from .support.polling import pause, until, wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess
from .support.rustdesk_host import UdpPunchHost
from .support.ws_client import ws_connect

KEY = SigningKey(bytes(range(32)))
LICENCE = public_b64(KEY)
HOST_ID = "123456789"
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
HOST_ADDR = ("198.51.100.7", 40001)  # the host's registration socket
HOST_PUNCH = ("198.51.100.7", 40777)  # its fresh punch socket
VIEWER = IPv4Address("TCP", "203.0.113.9", 50000)
VIEWER_UDP = ("203.0.113.9", 61000)  # the viewer's punch socket, as the server sees it
STUN_PORT = 62000  # what public STUN told the viewer, about another socket
SERVER_LOCAL = IPv4Address("TCP", "198.51.100.1", 21116)
RELAY = "rs.example.com:21117"


# -- the rules ------------------------------------------------------------------------


class BrokerPortTests(SynchronousTestCase):
    def test_no_udp_port_asked_means_none(self) -> None:
        """A request with udp_port 0 gets no UDP punch, whatever the server saw: RustDesk
        1.4.2+ sends that one beside a UDP request, and its TCP punch must stay."""
        b = UdpPunchBroker()
        b.observe(VIEWER_UDP, 10.0)
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], 0, 10.0).port, 0)
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], -5, 10.0).port, 0)

    def test_observed_port_replaces_the_stun_port(self) -> None:
        b = UdpPunchBroker()
        b.observe(VIEWER_UDP, 10.0)
        choice = b.viewer_port(VIEWER_UDP[0], STUN_PORT, 10.5)
        self.assertEqual(choice.port, VIEWER_UDP[1])
        self.assertIn(str(STUN_PORT), choice.reason)

    def test_claimed_port_kept_when_observed(self) -> None:
        """Two viewers behind one NAT: each keeps its own port if it sent the right one."""
        b = UdpPunchBroker()
        b.observe((VIEWER_UDP[0], 1111), 10.0)
        b.observe((VIEWER_UDP[0], 2222), 10.1)
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], 1111, 10.2).port, 1111)
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], 2222, 10.2).port, 2222)
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], 3333, 10.2).port, 2222)  # most recent

    def test_without_observation_the_claim_stands_if_it_is_a_port(self) -> None:
        b = UdpPunchBroker()
        self.assertEqual(b.viewer_port("192.0.2.1", 4444, 1.0).port, 4444)
        self.assertEqual(b.viewer_port("192.0.2.1", 65535, 1.0).port, 65535)
        self.assertEqual(b.viewer_port("192.0.2.1", 65536, 1.0).port, 0)
        b.observe(("192.0.2.2", 5555), 1.0)
        self.assertEqual(b.viewer_port("192.0.2.1", 4444, 1.0).port, 4444)  # another IP

    def test_observations_expire(self) -> None:
        b = UdpPunchBroker()
        b.observe(VIEWER_UDP, 10.0)
        self.assertEqual(
            b.viewer_port(VIEWER_UDP[0], STUN_PORT, 10.0 + OBSERVATION_TTL).port, 61000
        )
        late = 10.0 + OBSERVATION_TTL + 0.1
        self.assertEqual(b.viewer_port(VIEWER_UDP[0], STUN_PORT, late).port, STUN_PORT)
        b.observe(("192.0.2.1", 1), late)  # expiry is lazy: the next observation prunes
        self.assertEqual(b.observed_sources(), 1)

    def test_observation_table_is_bounded(self) -> None:
        b = UdpPunchBroker(max_sources=100, ports_per_source=3)
        for i in range(1000):
            b.observe((f"10.0.{i // 250}.{i % 250}", 1000 + i), 1.0)
        self.assertEqual(b.observed_sources(), 100)
        for port in range(50):
            b.observe(("192.0.2.1", port + 1), 1.0)
        # Only the 3 most recent ports of one IP are kept.
        self.assertEqual(b.viewer_port("192.0.2.1", 48, 1.0).port, 48)
        self.assertEqual(b.viewer_port("192.0.2.1", 47, 1.0).port, 50)


class BrokerPendingTests(SynchronousTestCase):
    viewer = (VIEWER.host, VIEWER.port)

    def test_accepted_once_from_the_host(self) -> None:
        b = UdpPunchBroker()
        b.expect(self.viewer, HOST_ID, [HOST_ADDR[0]], 1.0)
        self.assertTrue(b.claim(self.viewer, HOST_ID, HOST_PUNCH[0], 1.5).accepted)
        again = b.claim(self.viewer, HOST_ID, HOST_PUNCH[0], 1.5)
        self.assertFalse(again.accepted)
        self.assertFalse(again.first_refusal)  # the host's 2nd and 3rd copies: no warning
        self.assertEqual(b.pending_count(), 0)

    def test_refusals(self) -> None:
        b = UdpPunchBroker()
        b.expect(self.viewer, HOST_ID, [HOST_ADDR[0]], 1.0)
        wrong_ip = b.claim(self.viewer, HOST_ID, "192.0.2.66", 1.1)
        self.assertEqual(
            (wrong_ip.accepted, wrong_ip.first_refusal),
            (False, True),
        )
        self.assertIn("registered address", wrong_ip.reason)
        wrong_id = b.claim(self.viewer, "987654321", HOST_ADDR[0], 1.2)
        self.assertEqual((wrong_id.accepted, wrong_id.first_refusal), (False, False))
        self.assertIn("987654321", wrong_id.reason)
        other = b.claim(("203.0.113.9", 50001), HOST_ID, HOST_ADDR[0], 1.2)
        self.assertFalse(other.accepted)
        # The real answer still gets through after the forgeries.
        self.assertTrue(b.claim(self.viewer, HOST_ID, HOST_ADDR[0], 1.3).accepted)

    def test_ipv6_host_may_answer_from_its_64(self) -> None:
        b = UdpPunchBroker()
        b.expect(self.viewer, HOST_ID, ["2001:db8:1:2::10"], 1.0)
        self.assertFalse(b.claim(self.viewer, HOST_ID, "2001:db8:1:3::10", 1.0).accepted)
        self.assertTrue(b.claim(self.viewer, HOST_ID, "2001:db8:1:2:aaaa::1", 1.0).accepted)

    def test_expiry_and_forget(self) -> None:
        b = UdpPunchBroker()
        b.expect(self.viewer, HOST_ID, [HOST_ADDR[0]], 1.0)
        self.assertFalse(b.claim(self.viewer, HOST_ID, HOST_ADDR[0], 1.0 + PUNCH_TTL).accepted)
        self.assertEqual(b.pending_count(), 0)
        b.expect(self.viewer, HOST_ID, [HOST_ADDR[0]], 50.0)
        b.forget(self.viewer)
        self.assertFalse(b.claim(self.viewer, HOST_ID, HOST_ADDR[0], 50.0).accepted)

    def test_pending_table_is_bounded(self) -> None:
        b = UdpPunchBroker(max_pending=10)
        for port in range(100):
            b.expect(("203.0.113.9", port + 1), HOST_ID, [HOST_ADDR[0]], 1.0)
        self.assertEqual(b.pending_count(), 10)
        self.assertTrue(b.claim(("203.0.113.9", 100), HOST_ID, HOST_ADDR[0], 1.0).accepted)
        self.assertFalse(b.claim(("203.0.113.9", 1), HOST_ID, HOST_ADDR[0], 1.0).accepted)

    @settings(max_examples=150)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["observe", "expect", "claim", "forget"]),
                st.integers(0, 5),  # which viewer / source port
                st.sampled_from(["a", "b"]),  # which host id
                st.sampled_from(["198.51.100.7", "192.0.2.66"]),  # where a claim comes from
                st.floats(0, 20, allow_nan=False),  # time step
            ),
            max_size=60,
        )
    )
    def test_claims_follow_a_model(self, ops: list[tuple[str, int, str, str, float]]) -> None:
        """Any sequence: a claim is accepted exactly when the model says a punch for that
        viewer and id is pending from that host and younger than PUNCH_TTL; the tables
        never exceed their bounds."""
        b = UdpPunchBroker(max_pending=4, max_sources=3, ports_per_source=2)
        model: dict[tuple[str, int], tuple[str, float]] = {}
        now = 0.0
        for op, n, peer, ip, step in ops:
            now += step
            addr = ("203.0.113.9", 50000 + n)
            model = {k: v for k, v in model.items() if v[1] > now}
            if op == "observe":
                b.observe((f"203.0.113.{n}", 1000 + n), now)
            elif op == "expect":
                b.expect(addr, peer, ["198.51.100.7"], now)
                model.pop(addr, None)
                model[addr] = (peer, now + PUNCH_TTL)
                while len(model) > 4:
                    del model[next(iter(model))]
            elif op == "claim":
                got = b.claim(addr, peer, ip, now).accepted
                want = model.get(addr, ("", 0.0))[0] == peer and ip == "198.51.100.7"
                self.assertEqual(got, want)
                if want:
                    del model[addr]
            else:
                b.forget(addr)
                model.pop(addr, None)
            self.assertLessEqual(b.pending_count(), 4)
            self.assertLessEqual(b.observed_sources(), 3)


# -- the controller -------------------------------------------------------------------


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


class Conn:
    """A viewer's TCP (or WebSocket) connection as the controller sees it."""

    def __init__(self, peer: IPv4Address = VIEWER, *, websocket: bool = False) -> None:
        self.addr = (peer.host, peer.port)
        self.local = (SERVER_LOCAL.host, SERVER_LOCAL.port)
        self.websocket = websocket
        self.transport = StringTransport()

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        self.transport.write(encode_frame(msg.SerializeToString()))

    def payloads(self) -> list[bytes]:
        data = self.transport.value()
        self.transport.clear()
        return FrameDecoder().feed(data)

    def messages(self) -> list[rz.RendezvousMessage]:
        out = []
        for p in self.payloads():
            m = rz.RendezvousMessage()
            m.ParseFromString(p)
            out.append(m)
        return out


def make_server(
    clock: Clock, *, udp_punch: bool = True, always_use_relay: bool = False
) -> tuple[RendezvousServer, Datagrams]:
    server = RendezvousServer(
        clock=clock,
        registry=Registry(),
        key=ServerKey(LICENCE, KEY),
        relays=RelayList([RELAY]),
        always_use_relay=always_use_relay,
        udp_punch=udp_punch,
    )
    udp = Datagrams()
    server.udp = udp
    clock.advance(1000)
    reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST_ID, uuid=UUID, pk=PK))
    server.handle_datagram(reg.SerializeToString(), HOST_ADDR)
    udp.sent.clear()
    return server, udp


def nat_test() -> bytes:
    """What test_udp_uat sends: TestNatRequest with nothing set, 3 bytes."""
    return rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()).SerializeToString()


def punch_request(udp_port: int = 0, **kw: Any) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(
            id=HOST_ID, licence_key=LICENCE, version="1.4.9", udp_port=udp_port, **kw
        )
    )


def punch_sent(socket_addr: bytes, peer_id: str = HOST_ID) -> bytes:
    sent = rz.PunchHoleSent(
        socket_addr=socket_addr,
        id=peer_id,
        relay_server=RELAY,
        nat_type=rz.ASYMMETRIC,
        version="1.4.9",
    )
    return rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString()


def pushed(udp: Datagrams) -> list[rz.RendezvousMessage]:
    out = []
    for data, addr in udp.sent:
        assert addr == HOST_ADDR, addr
        m = rz.RendezvousMessage()
        m.ParseFromString(data)
        out.append(m)
    udp.sent.clear()
    return out


class ControllerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.server, self.udp = make_server(self.clock)

    def now_us(self) -> int:
        return int(self.clock.seconds() * 1_000_000)

    def udp_punch(self, conn: Conn, claimed: int = STUN_PORT) -> rz.PunchHole:
        """The viewer's NAT test datagrams, its request; the host's push."""
        for _ in range(3):
            self.server.handle_datagram(nat_test(), VIEWER_UDP)
        self.assertEqual(self.udp.sent, [])  # never answered
        self.assertTrue(self.server.handle_stream_message(conn, punch_request(claimed)))
        [push] = pushed(self.udp)
        return push.punch_hole

    def test_udp_punch_end_to_end(self) -> None:
        """TestNatRequest noted, not answered; PunchHole carries the port the NAT test came
        from (not the STUN port); the host's UDP PunchHoleSent becomes the viewer's
        PunchHoleResponse{is_udp} on its TCP connection with the host's UDP source,
        the server-signed key and the host's NAT type.  Nothing goes out by UDP."""
        conn = Conn()
        ph = self.udp_punch(conn)
        self.assertEqual(ph.udp_port, VIEWER_UDP[1])
        self.assertEqual(addrmangle.decode(ph.socket_addr), (VIEWER.host, VIEWER.port))
        self.assertEqual(ph.relay_server, RELAY)
        self.assertEqual(conn.messages(), [])
        self.clock.advance(0.05)
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        self.assertEqual(self.udp.sent, [])
        [answer] = conn.messages()
        resp = answer.punch_hole_response
        self.assertTrue(resp.is_udp)
        self.assertEqual(addrmangle.decode(resp.socket_addr), HOST_PUNCH)
        self.assertEqual(resp.WhichOneof("union"), "nat_type")
        self.assertEqual(resp.nat_type, rz.ASYMMETRIC)
        self.assertEqual(resp.relay_server, RELAY)
        idpk = pb.IdPk()
        idpk.ParseFromString(KEY.verify_key.verify(resp.pk))
        self.assertEqual((idpk.id, idpk.pk), (HOST_ID, PK))
        # The two other copies a stock host sends change nothing.
        for _ in range(2):
            self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        self.assertEqual((conn.messages(), self.udp.sent), ([], []))
        c = self.server.counters
        self.assertEqual(
            (
                c["udp_nat_tests"],
                c["udp_punch_requests"],
                c["udp_punch_port_replaced"],
                c["udp_punch_answers"],
                c["udp_punch_sent_refused"],
            ),
            (3, 1, 1, 1, 2),
        )
        # The relay the host named may now be asked for by this viewer.
        self.assertTrue(self.server.relay_known(RELAY, conn, HOST_ID))

    def test_without_nat_test_the_claimed_port_is_forwarded(self) -> None:
        conn = Conn()
        self.server.handle_stream_message(conn, punch_request(STUN_PORT))
        [push] = pushed(self.udp)
        self.assertEqual(push.punch_hole.udp_port, STUN_PORT)
        self.assertEqual(self.server.counters["udp_punch_port_replaced"], 0)

    def test_websocket_viewer(self) -> None:
        """A viewer on WebSocket gets the UDP punch too, its answer on the WebSocket."""
        conn = Conn(websocket=True)
        ph = self.udp_punch(conn)
        self.assertEqual(ph.udp_port, VIEWER_UDP[1])
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        [answer] = conn.messages()
        self.assertTrue(answer.punch_hole_response.is_udp)

    def test_requests_without_udp_port_are_byte_identical(self) -> None:
        """A request without udp_port (every client before 1.4.1, and 1.4.2+'s parallel TCP
        attempt) makes the same bytes as hbbs' fields would, even after a UDP NAT test from
        the viewer's IP, and a TCP PunchHoleSent's answer has no is_udp."""
        for _ in range(2):
            self.server.handle_datagram(nat_test(), VIEWER_UDP)
        conn = Conn()
        self.server.handle_stream_message(conn, punch_request(0))
        [(data, _)] = self.udp.sent
        self.udp.sent.clear()
        socket_addr = addrmangle.encode((VIEWER.host, VIEWER.port), now_us=self.now_us)
        hbbs = rz.RendezvousMessage(
            punch_hole=rz.PunchHole(
                socket_addr=socket_addr, relay_server=RELAY, nat_type=rz.UNKNOWN_NAT
            )
        )
        self.assertEqual(data, hbbs.SerializeToString())
        host = Conn(IPv4Address("TCP", HOST_ADDR[0], 40100))
        self.server.handle_stream_message(
            host, rz.RendezvousMessage.FromString(punch_sent(socket_addr))
        )
        [answer] = conn.payloads()
        expected = rz.PunchHoleResponse(
            socket_addr=addrmangle.encode(host.addr, now_us=self.now_us),
            pk=answer_pk(answer),
            relay_server=RELAY,
            nat_type=rz.ASYMMETRIC,
        )
        self.assertEqual(
            answer, rz.RendezvousMessage(punch_hole_response=expected).SerializeToString()
        )
        # A UDP PunchHoleSent for that viewer finds no UDP punch: nothing happens.
        self.server.handle_datagram(punch_sent(socket_addr), HOST_PUNCH)
        self.assertEqual((conn.payloads(), self.udp.sent), ([], []))

    def test_same_bytes_with_brokering_on_and_off(self) -> None:
        """One stock exchange (request without udp_port, TCP answer) on two servers, one
        with UDP brokering off (as hbbs): every byte is the same."""
        outputs = []
        for on in (True, False):
            clock = Clock()
            server, udp = make_server(clock, udp_punch=on)
            server.handle_datagram(nat_test(), VIEWER_UDP)
            conn = Conn()
            server.handle_stream_message(conn, punch_request(0))
            [(push, _)] = udp.sent
            socket_addr = rz.RendezvousMessage.FromString(push).punch_hole.socket_addr
            host = Conn(IPv4Address("TCP", HOST_ADDR[0], 40100))
            server.handle_stream_message(
                host, rz.RendezvousMessage.FromString(punch_sent(socket_addr))
            )
            outputs.append((udp.sent, conn.transport.value()))
        self.assertEqual(outputs[0], outputs[1])

    def test_stream_host_gets_no_udp_port(self) -> None:
        """A host registered on a stream (UDP off or broken for it) is asked to TCP punch."""
        host = Conn(IPv4Address("TCP", "198.51.100.50", 40200))
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="stream-host", uuid=UUID, pk=PK))
        self.server.handle_stream_message(host, reg)
        host.messages()
        self.server.handle_datagram(nat_test(), VIEWER_UDP)
        req = punch_request(STUN_PORT)
        req.punch_hole_request.id = "stream-host"
        self.server.handle_stream_message(Conn(), req)
        [push] = host.messages()
        self.assertEqual(push.punch_hole.udp_port, 0)
        self.assertEqual(self.server.counters["udp_punch_requests"], 0)

    def test_always_use_relay_brokers_no_udp_punch(self) -> None:
        server, udp = make_server(Clock(), always_use_relay=True)
        server.handle_datagram(nat_test(), VIEWER_UDP)
        server.handle_stream_message(Conn(), punch_request(STUN_PORT))
        [push] = pushed(udp)
        self.assertEqual((push.punch_hole.udp_port, push.punch_hole.nat_type), (0, rz.SYMMETRIC))

    def test_brokering_off_ignores_udp_punch(self) -> None:
        server, udp = make_server(Clock(), udp_punch=False)
        server.handle_datagram(nat_test(), VIEWER_UDP)
        conn = Conn()
        server.handle_stream_message(conn, punch_request(STUN_PORT))
        [push] = pushed(udp)
        self.assertEqual(push.punch_hole.udp_port, 0)
        server.handle_datagram(punch_sent(push.punch_hole.socket_addr), HOST_PUNCH)
        self.assertEqual((conn.messages(), udp.sent), ([], []))
        self.assertEqual(server.counters["udp_nat_tests"], 0)

    def test_forged_answers_are_refused_and_logged_once(self) -> None:
        """A UDP PunchHoleSent from another IP, or naming another id, reaches nobody; the
        first refusal of a waiting punch is a warning with the reason, the rest debug."""
        conn = Conn()
        ph = self.udp_punch(conn)
        with capturedLogs() as events:
            for _ in range(5):
                self.server.handle_datagram(punch_sent(ph.socket_addr), ("192.0.2.66", 999))
            self.server.handle_datagram(punch_sent(ph.socket_addr, "987654321"), HOST_PUNCH)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["ip"], "192.0.2.66")
        self.assertIn("registered address", warnings[0]["reason"])
        self.assertEqual((conn.messages(), self.udp.sent), ([], []))
        self.assertEqual(self.server.counters["udp_punch_sent_refused"], 6)
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        [answer] = conn.messages()
        self.assertEqual(addrmangle.decode(answer.punch_hole_response.socket_addr), HOST_PUNCH)

    def test_closed_viewer_forgets_its_punch(self) -> None:
        conn = Conn()
        ph = self.udp_punch(conn)
        self.assertEqual(self.server.udp_punch.pending_count(), 1)  # type: ignore[union-attr]
        self.server.connection_closed(conn)
        self.assertEqual(self.server.udp_punch.pending_count(), 0)  # type: ignore[union-attr]
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        self.assertEqual(self.server.counters["udp_punch_answers"], 0)

    def test_late_answer_is_dropped(self) -> None:
        conn = Conn()
        ph = self.udp_punch(conn)
        self.clock.advance(PUNCH_TTL + 1)
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        self.assertEqual(conn.messages(), [])

    def test_hostile_udp_floods_hold_bounded_state(self) -> None:
        """A spoofed flood: TestNatRequest from 50,000 sources and PunchHoleSent naming
        50,000 viewers.  Nothing is sent by UDP, nothing delivered, the noted sources stay
        within MAX_OBSERVED_SOURCES, and a real viewer's punch still works after it."""
        pending_before = self.server.udp_punch.pending_count()  # type: ignore[union-attr]
        for i in range(50_000):
            src = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1024 + i % 60000)
            self.server.handle_datagram(nat_test(), src)
            fake = addrmangle.encode((f"203.0.{i >> 8 & 255}.{i & 255}", 1 + i % 65535))
            self.server.handle_datagram(punch_sent(fake), src)
        broker = self.server.udp_punch
        assert broker is not None
        self.assertEqual(self.udp.sent, [])
        self.assertEqual(broker.observed_sources(), MAX_OBSERVED_SOURCES)
        self.assertEqual(broker.pending_count(), pending_before)
        self.assertEqual(self.server.counters["udp_punch_answers"], 0)
        conn = Conn()
        ph = self.udp_punch(conn)
        self.assertEqual(ph.udp_port, VIEWER_UDP[1])
        self.server.handle_datagram(punch_sent(ph.socket_addr), HOST_PUNCH)
        self.assertTrue(conn.messages()[0].punch_hole_response.is_udp)


def answer_pk(payload: bytes) -> bytes:
    return bytes(rz.RendezvousMessage.FromString(payload).punch_hole_response.pk)


# The datagrams of every kind a parity check feeds both dispatchers.
_SOURCES = st.sampled_from([HOST_ADDR, HOST_PUNCH, VIEWER_UDP, ("192.0.2.66", 7)])
_IDS = st.sampled_from([HOST_ID, "987654321", "abc", ""])
_DATAGRAMS = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda i, s: rz.RendezvousMessage(
            register_peer=rz.RegisterPeer(id=i, serial=s)
        ).SerializeToString(),
        _IDS,
        st.integers(-3, 9),
    ),
    st.builds(
        lambda i, u, p: rz.RendezvousMessage(
            register_pk=rz.RegisterPk(id=i, uuid=u, pk=p)
        ).SerializeToString(),
        _IDS,
        st.sampled_from([UUID, b"other-uuid", b""]),
        st.sampled_from([PK, bytes(32), b""]),
    ),
    st.just(nat_test()),
    st.builds(punch_sent, st.binary(max_size=18), _IDS),
)


class DispatcherParityTests(SynchronousTestCase):
    @settings(max_examples=100)
    @given(st.lists(st.tuples(_DATAGRAMS, _SOURCES, st.floats(0, 10)), max_size=20))
    def test_udp_output_same_as_the_registration_dispatcher(
        self, datagrams: list[tuple[bytes, tuple[str, int], float]]
    ) -> None:
        """The UDP punch adds to the registrations' dispatcher without changing a
        byte it sends by UDP, for any datagrams: a server with it and one without."""
        a, udp_a = make_server(Clock())
        b, udp_b = make_server(Clock())
        b.udp_punch = None
        for data, source, step in datagrams:
            a.clock.advance(step)  # type: ignore[attr-defined]
            b.clock.advance(step)  # type: ignore[attr-defined]
            a.handle_datagram(data, source)
            b.handle_datagram(data, source)
            self.assertEqual(udp_a.sent, udp_b.sent)


# -- over loopback, the server in this process -----------------------------------------


class LoopbackTests(TestCase):
    """TCP and WebSocket viewers on 127.0.0.1, the host's UDP sockets on 127.0.0.2."""

    def setUp(self) -> None:
        self.svc = start_server(Path(self.mktemp()), "--key", secret_b64(KEY))
        self.udp_port = self.svc.rendezvous_udp.listening.getHost().port
        self.closers: list[Any] = []

    def tearDown(self) -> Any:
        for c in self.closers:
            c()

        async def settle() -> None:
            await self.svc.stopService()
            await pause(0.05)

        return Deferred.fromCoroutine(settle())

    def udp(self, interface: str) -> Any:
        c = udp_client(interface)
        t: Any = c.transport
        self.closers.append(t.stopListening)
        return c

    async def host(self) -> Any:
        h = self.udp("127.0.0.2")
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST_ID, uuid=UUID, pk=PK))
        h.send(reg.SerializeToString(), self.udp_port)
        data, _ = await h.recv()
        self.assertEqual(data.hex(), "820100")
        return h

    async def check_udp_punch(self, send: Any, recv: Any) -> None:
        host = await self.host()
        punch_socket = self.udp("127.0.0.1")
        for _ in range(2):
            punch_socket.send(nat_test(), self.udp_port)
        await until(lambda: self.svc.server.counters["udp_nat_tests"] == 2, timeout=5)
        send(punch_request(STUN_PORT))
        data, _ = await host.recv()
        ph = rz.RendezvousMessage.FromString(data).punch_hole
        self.assertEqual(ph.udp_port, punch_socket.port())
        host_punch = self.udp("127.0.0.2")
        host_punch.send(punch_sent(ph.socket_addr), self.udp_port)
        answer = await recv()
        resp = answer.punch_hole_response
        # The whole answer in the message: a flake here must say what came instead.
        self.assertTrue(resp.is_udp, f"not a UDP punch answer: {answer}")
        self.assertEqual(addrmangle.decode(resp.socket_addr), ("127.0.0.2", host_punch.port()))
        # No datagram came back to any of the UDP sockets.
        for s in (punch_socket, host_punch):
            self.assertTrue(await s.nothing_within(0.2))

    async def test_tcp_viewer(self) -> None:
        c = await tcp_client(self.svc.rendezvous_tcp.listening.getHost().port, "127.0.0.1")
        t: Any = c.transport
        self.closers.append(t.abortConnection)
        await self.check_udp_punch(c.send_msg, c.recv_msg)

    async def test_websocket_viewer(self) -> None:
        port = self.svc.rendezvous_ws.listening.getHost().port
        c = await ws_connect(port, path="/ws/id")
        self.closers.append(c.abort)
        await self.check_udp_punch(c.send_msg, c.recv_msg)


# -- a real litedesk-relay between a stock 1.4.1+ viewer and host ------------------------


class EndToEndTests(SynchronousTestCase):
    """The stock-client emulator on 127.0.0.1, a UdpPunchHost registered from 127.0.0.2."""

    def setUp(self) -> None:
        port = free_port_pair()
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        self.relay = RelayProcess(data_dir, port, Path(self.mktemp()), "--key", secret_b64(KEY))
        self.addCleanup(self.relay.stop)
        self.server = f"127.0.0.1:{port}"
        self.host = UdpPunchHost(HOST_ID, identity=SigningKey(bytes([9]) * 32), punch_time=10)
        self.addCleanup(self.host.stop)
        self.host.start_rendezvous(self.server, LICENCE, local_ip="127.0.0.2")
        self.host.wait_registered(20)
        self.host_pk = bytes(self.host.identity.verify_key)

    def punch_attempt(self, **kw: Any) -> viewer.UdpPunchAttempt:
        attempt = viewer.udp_punch_hole_request(self.server, LICENCE, HOST_ID, **kw)
        self.addCleanup(attempt.udp.close)
        return attempt

    def test_udp_punch(self) -> None:
        """A viewer whose STUN port is another socket's: the server forwards the port its
        NAT test came from; the host punches from a fresh socket and the viewer, told
        is_udp and the host's UDP endpoint, reaches it; both exchange datagrams directly.
        The server sent no datagram to the viewer's punch socket."""
        stun = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stun.close)
        stun.bind(("127.0.0.1", 0))
        attempt = self.punch_attempt(stun_port=stun.getsockname()[1])
        self.assertEqual(attempt.udp_port, stun.getsockname()[1])
        self.assertTrue(attempt.is_udp)
        self.assertEqual(attempt.answer.host_pk, self.host_pk)
        record = wait_until(lambda: self.host.udp_punches, 10, message="the host's UDP punch")[0]
        self.assertEqual(record.target, attempt.udp.getsockname()[:2])
        self.assertEqual(attempt.answer.peer_addr, record.local)
        self.assertEqual(viewer.punch_udp(attempt.udp, listen=False, max_time=10), b"")
        attempt.udp.send(b"first KCP segment")
        self.assertTrue(record.done.wait(10))
        self.assertEqual(record.first, b"first KCP segment")
        self.assertEqual(attempt.from_server, [])
        self.assertEqual(self.host.rendezvous_sent, [])  # no TCP answer from the host

    def test_no_port_learnt_means_tcp_punch(self) -> None:
        """No STUN answer and no UDP answer from the server: udp_port 0, and the exchange is
        the classic TCP punch (RustDesk 1.4.1 in that case)."""
        # 0.5 s of NAT test: the first resend is due after 20 ms, so even a loaded
        # machine that sleeps far longer than asked sends at least one.
        attempt = self.punch_attempt(nat_test_time=0.5)
        self.assertGreaterEqual(attempt.nat_tests, 3)
        self.assertEqual(attempt.from_server, [])  # TestNatRequest is never answered by UDP
        self.assertEqual((attempt.udp_port, attempt.is_udp), (0, False))
        self.assertEqual(attempt.answer.kind, "punch")
        self.assertEqual(attempt.answer.peer_addr[0], "127.0.0.2")  # type: ignore[index]
        wait_until(lambda: self.host.rendezvous_sent, 10, message="the host's PunchHoleSent")
        self.assertEqual(self.host.udp_punches, [])
        self.assertEqual(self.host.pushes[0].punch_hole.udp_port, 0)

    def test_tcp_and_udp_attempts_side_by_side(self) -> None:
        """RustDesk 1.4.2+ runs both: the UDP attempt gets the UDP punch, the other the TCP
        punch, each on its own connection."""
        stun = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(stun.close)
        stun.bind(("127.0.0.1", 0))
        results: dict[str, Any] = {}

        def tcp_attempt() -> None:
            results["tcp"] = viewer.punch_hole_request(self.server, LICENCE, HOST_ID)

        t = threading.Thread(target=tcp_attempt)
        t.start()
        udp = self.punch_attempt(stun_port=stun.getsockname()[1])
        t.join(30)
        self.assertTrue(udp.is_udp)
        tcp = results["tcp"]
        self.assertFalse(tcp.message.punch_hole_response.is_udp)
        self.assertEqual(tcp.peer_addr[0], "127.0.0.2")
        self.assertNotEqual(tcp.peer_addr, udp.answer.peer_addr)
        self.assertEqual(viewer.punch_udp(udp.udp, listen=False, max_time=10), b"")

    def test_stock_client_sees_no_difference(self) -> None:
        """A client without UDP punch (before 1.4.1, or the option off): the host's push and
        the client's answer carry exactly hbbs' fields."""
        answer = viewer.punch_hole_request(self.server, LICENCE, HOST_ID)
        self.assertEqual(answer.host_pk, self.host_pk)
        fields = [f.name for f, _ in answer.message.punch_hole_response.ListFields()]
        self.assertEqual(fields, ["socket_addr", "pk", "relay_server", "nat_type"])
        wait_until(lambda: self.host.pushes, 10, message="the host's push")
        pushed_fields = {f.name for f, _ in self.host.pushes[0].punch_hole.ListFields()}
        self.assertIn("socket_addr", pushed_fields)
        self.assertLessEqual(pushed_fields, {"socket_addr", "relay_server", "nat_type"})

    def test_forged_punch_answer_from_elsewhere(self) -> None:
        """An attacker on 127.0.0.9 who knows the viewer's address sends the host's UDP
        PunchHoleSent first: it is refused (no answer to the viewer, no datagram back);
        the host's own arrives and is delivered."""
        self.host.stop()
        fake_host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(fake_host.close)
        fake_host.bind(("127.0.0.2", 0))
        fake_host.settimeout(10)
        target = viewer.split_host_port(self.server, viewer.RENDEZVOUS_PORT)
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="987654321", uuid=UUID, pk=PK))
        fake_host.sendto(reg.SerializeToString(), target)
        self.assertEqual(fake_host.recv(100).hex(), "820100")
        results: dict[str, Any] = {}

        def attempt() -> None:
            results["a"] = viewer.udp_punch_hole_request(
                self.server, LICENCE, "987654321", stun_port=1234, waits=(8.0,)
            )

        t = threading.Thread(target=attempt)
        t.start()
        push = rz.RendezvousMessage.FromString(fake_host.recv(1500)).punch_hole
        self.assertGreater(push.udp_port, 0)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(attacker.close)
        attacker.bind(("127.0.0.9", 0))
        attacker.settimeout(0.5)
        forged = punch_sent(push.socket_addr, "987654321")
        for _ in range(3):
            attacker.sendto(forged, target)
        with self.assertRaises(TimeoutError):
            attacker.recv(1500)
        self.assertTrue(t.is_alive())  # the viewer still waits
        real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(real.close)
        real.bind(("127.0.0.2", 0))
        real.sendto(forged, target)
        t.join(10)
        got = results["a"]
        self.addCleanup(got.udp.close)
        self.assertTrue(got.is_udp)
        self.assertEqual(got.answer.peer_addr, real.getsockname())

    test_udp_punch.timeout = 60  # type: ignore[attr-defined]
    test_tcp_and_udp_attempts_side_by_side.timeout = 60  # type: ignore[attr-defined]
