"""The rendezvous server over real UDP/TCP sockets on loopback, as RustDesk peers see it.

The checks of docs/protocol.rst §9.  The "fake host"
registers from 127.0.0.2 and the viewer connects from 127.0.0.1, so they have
different public IPs as far as the server can tell.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import encode_frame
from litedesk.wire.keys import secret_b64, verify_id_pk

from .rendezvous_harness import sleep, start_server, tcp_client, udp_client
from .support.polling import until
from .support.skips import cannot_run

ID = "123456789"
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
REGISTER_PEER = bytes.fromhex("320d0a093132333435363738391003")
REGISTER_PK = bytes.fromhex(
    "7a4f0a0931323334353637383912203031323334353637383961626364656630313233343536373839"
    "616263646566" + "1a20" + "07" * 32
)
SERVER_SEED = bytes(range(32))
SERVER_PK_B64 = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="


class RendezvousTestBase(TestCase):
    extra_args: tuple[str, ...] = ("--key", secret_b64(SigningKey(SERVER_SEED)))

    def setUp(self) -> Any:
        self.data_dir = Path(self.mktemp())
        self.svc = start_server(self.data_dir, *self.extra_args)
        self.server = self.svc.server
        self.udp_port = self.svc.rendezvous_udp.listening.getHost().port
        self._clients: list[Any] = []
        return self._ports()

    @inlineCallbacks
    def _ports(self) -> Any:
        yield sleep(0)
        self.tcp_port = self.svc.rendezvous_tcp.listening.getHost().port
        self.nat_port = self.svc.nat_test.listening.getHost().port

    @inlineCallbacks
    def tearDown(self) -> Any:  # type: ignore[override]
        for c in self._clients:
            if hasattr(c, "close"):
                yield c.close()
            else:
                yield c.transport.stopListening()
        yield self.svc.stopService()
        # Let the server side of closed connections finish before the next test.
        for _ in range(20):
            yield sleep(0.01)

    def udp(self, interface: str = "127.0.0.1") -> Any:
        c = udp_client(interface)
        self._clients.append(c)
        return c

    @inlineCallbacks
    def tcp(self, bind: str = "127.0.0.1", port: int | None = None) -> Any:
        c = yield tcp_client(port or self.tcp_port, bind)
        self._clients.append(c)
        return c

    @inlineCallbacks
    def register_host(self, interface: str = "127.0.0.2") -> Any:
        """Register the vector host (id 123456789) over UDP; return its socket."""
        host = self.udp(interface)
        host.send(REGISTER_PK, self.udp_port)
        data, _ = yield host.recv()
        self.assertEqual(data.hex(), "820100")
        return host


class UDPRegistrationTests(RendezvousTestBase):
    @inlineCallbacks
    def test_register_peer_new_id(self) -> Any:
        """A new id's heartbeat is answered with exactly 3a021001 (vector 3)."""
        host = self.udp("127.0.0.2")
        host.send(REGISTER_PEER, self.udp_port)
        data, addr = yield host.recv()
        self.assertEqual(data.hex(), "3a021001")
        self.assertEqual(addr[1], self.udp_port)

    @inlineCallbacks
    def test_register_pk_then_heartbeat(self) -> Any:
        """RegisterPk is acknowledged 820100, then heartbeats get 3a00 (vector 4)."""
        host = yield self.register_host()
        host.send(REGISTER_PEER, self.udp_port)
        data, _ = yield host.recv()
        self.assertEqual(data.hex(), "3a00")

    @inlineCallbacks
    def test_no_reply_to_empty_uuid_and_short_id(self) -> Any:
        """Empty uuid: silence; 5-character id: UUID_MISMATCH 8201020802 (vector 5)."""
        host = self.udp("127.0.0.2")
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=ID, uuid=b"", pk=PK))
        host.send(msg.SerializeToString(), self.udp_port)
        quiet = yield host.nothing_within(0.3)
        self.assertTrue(quiet)
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="12345", uuid=UUID, pk=PK))
        host.send(msg.SerializeToString(), self.udp_port)
        data, _ = yield host.recv()
        self.assertEqual(data.hex(), "8201020802")

    @inlineCallbacks
    def test_uuid_rules(self) -> Any:
        """Another uuid, or a new key from another IP, is refused; same IP may rekey (6)."""
        yield self.register_host()
        other = self.udp("127.0.0.3")
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=ID, uuid=b"u" * 32, pk=PK))
        other.send(msg.SerializeToString(), self.udp_port)
        data, _ = yield other.recv()
        self.assertEqual(data.hex(), "8201020802")
        newpk = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=ID, uuid=UUID, pk=b"\x08" * 32))
        other.send(newpk.SerializeToString(), self.udp_port)
        data, _ = yield other.recv()
        self.assertEqual(data.hex(), "8201020802")
        same_ip = self.udp("127.0.0.2")
        same_ip.send(newpk.SerializeToString(), self.udp_port)
        data, _ = yield same_ip.recv()
        self.assertEqual(data.hex(), "820100")
        peer = self.server.registry.get(ID)
        self.assertEqual(peer.pk, b"\x08" * 32)

    @inlineCallbacks
    def test_per_id_rate_limit(self) -> Any:
        """The 4th RegisterPk for one id within 6 s is TOO_FREQUENT 8201020804 (vector 7)."""
        host = self.udp("127.0.0.2")
        replies = []
        for _ in range(4):
            host.send(REGISTER_PK, self.udp_port)
            data, _ = yield host.recv()
            replies.append(data.hex())
        self.assertEqual(replies, ["820100"] * 3 + ["8201020804"])

    @inlineCallbacks
    def test_per_ip_rate_limit(self) -> Any:
        """The 33rd RegisterPk from one IP (new ids) is TOO_FREQUENT (vector 8)."""
        host = self.udp("127.0.0.4")
        replies = []
        for i in range(33):
            msg = rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id=f"9{i:08d}", uuid=UUID + bytes([i]), pk=PK)
            )
            host.send(msg.SerializeToString(), self.udp_port)
            data, _ = yield host.recv()
            replies.append(data.hex())
        self.assertEqual(replies[:32], ["820100"] * 32)
        self.assertEqual(replies[32], "8201020804")

    @inlineCallbacks
    def test_punch_hole_request_by_udp_ignored(self) -> Any:
        """PunchHoleRequest by UDP gets no answer (reflection hardening)."""
        yield self.register_host()
        viewer = self.udp()
        msg = rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=ID))
        viewer.send(msg.SerializeToString(), self.udp_port)
        quiet = yield viewer.nothing_within(0.3)
        self.assertTrue(quiet)


class ConfigUpdateTests(RendezvousTestBase):
    extra_args = (
        *RendezvousTestBase.extra_args,
        "--serial",
        "7",
        "--rendezvous-servers",
        "rs1.example.com,rs2.example.com:21116",
    )

    @inlineCallbacks
    def test_config_update_not_sent_by_udp_when_larger(self) -> Any:
        """A client with serial 3 gets no ConfigUpdate by UDP: it is larger than the request.

        hbbs sends it (an amplifier: 5 bytes in, 399 out with 12 servers); it reaches
        clients in the TCP TestNatResponse instead (the next test).
        """
        host = self.udp("127.0.0.2")
        host.send(REGISTER_PEER, self.udp_port)
        first, _ = yield host.recv()
        self.assertEqual(first.hex(), "3a021001")
        quiet = yield host.nothing_within(0.3)
        self.assertTrue(quiet)
        self.assertEqual(self.svc.server.counters["udp_reply_too_large"], 1)

    @inlineCallbacks
    def test_config_update_sent_when_it_fits(self) -> Any:
        """A RegisterPeer at least as large as the ConfigUpdate still gets it by UDP."""
        host = self.udp("127.0.0.2")
        padded = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="x" * 60, serial=3))
        host.send(padded.SerializeToString(), self.udp_port)
        yield host.recv()
        second, _ = yield host.recv()
        self.assertLessEqual(len(second), len(padded.SerializeToString()))
        msg = rz.RendezvousMessage()
        msg.ParseFromString(second)
        self.assertEqual(msg.configure_update.serial, 7)
        self.assertEqual(
            list(msg.configure_update.rendezvous_servers),
            ["rs1.example.com", "rs2.example.com:21116"],
        )

    @inlineCallbacks
    def test_test_nat_on_rendezvous_port_carries_config(self) -> Any:
        """TestNatRequest on TCP 21116 answers with the port and ConfigUpdate cu."""
        viewer = yield self.tcp()
        viewer.send_raw(bytes.fromhex("14a201020803"))
        msg = yield viewer.recv_msg()
        self.assertEqual(msg.test_nat_response.port, viewer.local()[1])
        self.assertEqual(msg.test_nat_response.cu.serial, 7)


class TCPRendezvousTests(RendezvousTestBase):
    extra_args = (*RendezvousTestBase.extra_args, "--relay-servers", "rs.example.com:21117")

    @inlineCallbacks
    def test_test_nat_request(self) -> Any:
        """TestNatRequest framed 14a201020803 gets our source port, then the server closes (10)."""
        viewer = yield self.tcp()
        viewer.send_raw(bytes.fromhex("14a201020803"))
        frame = yield viewer.recv()
        port = viewer.local()[1]
        expected = rz.RendezvousMessage(test_nat_response=rz.TestNatResponse(port=port))
        self.assertEqual(frame, expected.SerializeToString())
        yield viewer.closed

    @inlineCallbacks
    def test_register_pk_over_tcp_registers_a_stream_host(self) -> Any:
        """RegisterPk over TCP is answered OK with keep_alive 30, 820102101e (check 11).

        OSS hbbs answers NOT_SUPPORT (8201020806); LiteDesk keeps the stream
        as the host's channel (docs/protocol.rst §5.11), so it stays open.
        """
        host = yield self.tcp()
        host.send_raw(encode_frame(REGISTER_PK))
        frame = yield host.recv()
        self.assertEqual(frame.hex(), "820102101e")
        self.assertFalse(host.closed.called)
        host.transport.loseConnection()
        yield host.closed

    @inlineCallbacks
    def test_punch_failures(self) -> Any:
        """Wrong key → 5a021803; unknown id → 5a00; stale registration → 5a021802 (12)."""
        viewer = yield self.tcp()
        bad = rz.PunchHoleRequest(id=ID, licence_key="wrong")
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=bad))
        frame = yield viewer.recv()
        self.assertEqual(frame.hex(), "5a021803")
        unknown = rz.PunchHoleRequest(id="nobody-here", licence_key=SERVER_PK_B64)
        viewer2 = yield self.tcp()
        viewer2.send_msg(rz.RendezvousMessage(punch_hole_request=unknown))
        frame = yield viewer2.recv()
        self.assertEqual(frame.hex(), "5a00")
        yield self.register_host()
        # Age the registration instead of sleeping 30 s.
        self.server.registry.get(ID).last_reg -= 30.0
        viewer3 = yield self.tcp()
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
        viewer3.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        frame = yield viewer3.recv()
        self.assertEqual(frame.hex(), "5a021802")

    @inlineCallbacks
    def test_punch_hole_round_trip(self) -> Any:
        """The host gets PunchHole by UDP; its PunchHoleSent yields a signed answer (13, 14)."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64, nat_type=rz.ASYMMETRIC)
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, addr = yield host.recv()
        self.assertEqual(addr[1], self.udp_port)
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        self.assertEqual(push.WhichOneof("union"), "punch_hole")
        self.assertEqual(addrmangle.decode(push.punch_hole.socket_addr), viewer.local())
        self.assertEqual(push.punch_hole.relay_server, "rs.example.com:21117")
        self.assertEqual(push.punch_hole.nat_type, rz.ASYMMETRIC)
        self.assertEqual(len(viewer.queue.pending), 0)

        host_tcp = yield self.tcp("127.0.0.2")
        sent = rz.PunchHoleSent(
            socket_addr=push.punch_hole.socket_addr,
            id=ID,
            relay_server=push.punch_hole.relay_server,
            nat_type=rz.UNKNOWN_NAT,
            version="1.4.9",
        )
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        frame = yield viewer.recv()
        resp = rz.RendezvousMessage()
        resp.ParseFromString(frame)
        phr = resp.punch_hole_response
        self.assertEqual(addrmangle.decode(phr.socket_addr), host_tcp.local())
        self.assertEqual(phr.relay_server, "rs.example.com:21117")
        self.assertEqual(phr.WhichOneof("union"), "nat_type")
        self.assertIn(b"\x28\x00", frame)
        self.assertEqual(len(phr.pk), 64 + 2 + 9 + 2 + 32)
        verified = verify_id_pk(base64.b64decode(SERVER_PK_B64), phr.pk)
        self.assertEqual(verified, (ID, PK))
        yield host_tcp.closed  # the server closes the host's connection

    @inlineCallbacks
    def test_punch_hole_sent_without_version_has_no_pk(self) -> Any:
        """PunchHoleSent with an empty version gets a response without pk (vector 14)."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        host_tcp = yield self.tcp("127.0.0.2")
        sent = rz.PunchHoleSent(socket_addr=push.punch_hole.socket_addr, id=ID)
        host_tcp.send_msg(rz.RendezvousMessage(punch_hole_sent=sent))
        resp = yield viewer.recv_msg()
        self.assertEqual(resp.punch_hole_response.pk, b"")
        self.assertTrue(resp.punch_hole_response.socket_addr)

    @inlineCallbacks
    def test_same_public_ip_gets_local_address(self) -> Any:
        """Viewer and host behind one IP: FetchLocalAddr, then is_local response (13, 15)."""
        host = yield self.register_host("127.0.0.1")
        viewer = yield self.tcp("127.0.0.1")
        req = rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
        viewer.send_msg(rz.RendezvousMessage(punch_hole_request=req))
        data, _ = yield host.recv()
        self.assertEqual(data[:1], b"\x62")
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        host_tcp = yield self.tcp("127.0.0.1")
        lan = addrmangle.encode(("192.168.1.20", 21118))
        la = rz.LocalAddr(
            socket_addr=push.fetch_local_addr.socket_addr, local_addr=lan, id=ID, version="1.4.9"
        )
        host_tcp.send_msg(rz.RendezvousMessage(local_addr=la))
        frame = yield viewer.recv()
        resp = rz.RendezvousMessage()
        resp.ParseFromString(frame)
        self.assertEqual(resp.punch_hole_response.socket_addr, lan)
        self.assertTrue(resp.punch_hole_response.is_local)
        self.assertIn(b"\x30\x01", frame)
        self.assertEqual(
            verify_id_pk(base64.b64decode(SERVER_PK_B64), resp.punch_hole_response.pk), (ID, PK)
        )

    @inlineCallbacks
    def test_relay_negotiation(self) -> Any:
        """RequestRelay reaches the host by UDP; its RelayResponse reaches the viewer (16)."""
        host = yield self.register_host()
        viewer = yield self.tcp()
        uuid = "0f5c3a1e-1111-4222-8333-444455556666"
        req = rz.RequestRelay(id=ID, uuid=uuid, relay_server="rs.example.com", secure=True)
        viewer.send_msg(rz.RendezvousMessage(request_relay=req))
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        fwd = push.request_relay
        self.assertEqual(
            (fwd.id, fwd.uuid, fwd.relay_server, fwd.secure), (ID, uuid, "rs.example.com", True)
        )
        self.assertEqual(addrmangle.decode(fwd.socket_addr), viewer.local())
        host_tcp = yield self.tcp("127.0.0.2")
        rr = rz.RelayResponse(
            socket_addr=fwd.socket_addr,
            uuid=uuid,
            relay_server="rs.example.com",
            id=ID,
            version="1.4.9",
        )
        host_tcp.send_msg(rz.RendezvousMessage(relay_response=rr))
        resp = yield viewer.recv_msg()
        out = resp.relay_response
        self.assertEqual(out.socket_addr, b"")
        self.assertEqual(out.uuid, uuid)
        self.assertEqual(out.WhichOneof("union"), "pk")
        self.assertEqual(verify_id_pk(base64.b64decode(SERVER_PK_B64), out.pk), (ID, PK))
        yield host_tcp.closed

    @inlineCallbacks
    def test_relay_request_for_unknown_id_is_silent(self) -> Any:
        """RequestRelay for an id the server does not hold gets no answer (16)."""
        viewer = yield self.tcp()
        req = rz.RequestRelay(id="nobody-here", uuid="u")
        viewer.send_msg(rz.RendezvousMessage(request_relay=req))
        # Silence is the behaviour under test: give an answer time to come.
        yield sleep(0.3)
        self.assertEqual(len(viewer.queue.pending), 0)
        self.assertEqual(self.server.parked_count(), 1)

    @inlineCallbacks
    def test_parked_connection_removed_on_close(self) -> Any:
        """A viewer that hangs up stops being a target for host answers."""
        yield self.register_host()
        viewer = yield self.tcp()
        viewer.send_msg(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
            )
        )
        yield until(lambda: self.server.parked_count() == 1, 5, message="the viewer parked")
        yield viewer.close()
        yield until(lambda: self.server.parked_count() == 0, 5, message="the parked viewer gone")

    @inlineCallbacks
    def test_empty_frame_keepalive(self) -> Any:
        """An empty frame (heartbeat) does not close a parked viewer connection."""
        yield self.register_host()
        viewer = yield self.tcp()
        viewer.send_raw(b"\x00")
        viewer.send_raw(b"\x01\x00")  # non-canonical empty frame
        # The server must not close: give a close time to happen.
        yield sleep(0.1)
        self.assertFalse(viewer.closed.called)


class NatPortTests(RendezvousTestBase):
    @inlineCallbacks
    def test_test_nat_same_port_both_probes(self) -> Any:
        """Both NAT probes from one local port see the same port, without cu (10, 18)."""
        import socket

        s1 = socket.socket()
        s1.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s1.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s1.bind(("127.0.0.1", 0))
        local_port = s1.getsockname()[1]
        s1.close()
        seen = []
        for port in (self.tcp_port, self.nat_port):
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

            from .rendezvous_harness import TCPClient

            ep = TCP4ClientEndpoint(
                reactor, "127.0.0.1", port, bindAddress=("127.0.0.1", local_port)
            )
            c = yield connectProtocol(ep, TCPClient())
            self._clients.append(c)
            c.send_raw(bytes.fromhex("14a201020803"))
            msg = yield c.recv_msg()
            seen.append(msg.test_nat_response.port)
            self.assertFalse(msg.test_nat_response.HasField("cu"))
            yield c.closed
            # Let TIME_WAIT on the client side not block the rebind.
            yield sleep(0.05)
        self.assertEqual(seen, [local_port, local_port])

    @inlineCallbacks
    def test_online_request(self) -> Any:
        """OnlineRequest gets the MSB-first bitmap: peers 1 and 3 online → c201030a01a0 (19)."""
        yield self.register_host()
        other = self.udp("127.0.0.3")
        msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="555555555", uuid=b"v" * 32, pk=PK))
        other.send(msg.SerializeToString(), self.udp_port)
        yield other.recv()
        c = yield self.tcp(port=self.nat_port)
        c.send_raw(b"")
        req = bytes.fromhex(
            "ba012c0a09313131313131313131120931323334353637383912093938373635343332311209"
            "353535353535353535"
        )
        c.send_raw(encode_frame(req))
        frame = yield c.recv()
        self.assertEqual(frame.hex(), "c201030a01a0")
        yield c.closed


class RobustnessTests(RendezvousTestBase):
    @inlineCallbacks
    def assert_still_serving(self) -> Any:
        host = self.udp("127.0.0.9")
        host.send(REGISTER_PEER, self.udp_port)
        data, _ = yield host.recv()
        self.assertIn(data.hex(), ("3a021001", "3a00"))
        c = yield self.tcp()
        c.send_raw(bytes.fromhex("14a201020803"))
        msg = yield c.recv_msg()
        self.assertEqual(msg.test_nat_response.port, c.local()[1])
        n = yield self.tcp(port=self.nat_port)
        n.send_raw(bytes.fromhex("14a201020803"))
        msg = yield n.recv_msg()
        self.assertEqual(msg.test_nat_response.port, n.local()[1])

    @inlineCallbacks
    def test_deeply_nested_protobuf(self) -> Any:
        """300,000 nested groups by UDP and TCP are rejected; service continues (28)."""
        bomb = b"\x0b" * 300_000 + b"\x0c" * 300_000
        attacker = self.udp("127.0.0.5")
        attacker.send(bomb[:60000], self.udp_port)
        c = yield self.tcp("127.0.0.5")
        c.send_raw(bytes.fromhex("03") + (len(bomb) << 2 | 3).to_bytes(4, "little")[1:] + bomb)
        yield c.closed
        big = yield self.tcp("127.0.0.5")
        # A frame within the limit holding nested groups: closed as undecodable.
        small = b"\x0b" * 20000 + b"\x0c" * 20000
        big.send_raw((len(small) << 2 | 2).to_bytes(3, "little") + small)
        yield big.closed
        yield self.assert_still_serving()

    @inlineCallbacks
    def test_oversize_frame_closed(self) -> Any:
        """A header announcing 1 GiB closes that connection only; memory is not allocated."""
        c = yield self.tcp("127.0.0.6")
        c.send_raw((0x3FFFFFFF << 2 | 3).to_bytes(4, "little"))
        yield c.closed
        yield self.assert_still_serving()

    @inlineCallbacks
    def test_random_bytes_at_every_port(self) -> Any:
        """Random bytes thrown at UDP, TCP and NAT-test ports leave normal service intact."""
        rnd = __import__("random").Random(1234)
        attacker = self.udp("127.0.0.7")
        for _ in range(300):
            attacker.send(os.urandom(rnd.randint(0, 1400)), self.udp_port)
        for port in (self.tcp_port, self.nat_port):
            for _ in range(10):
                c = yield self.tcp("127.0.0.7", port=port)
                for _ in range(5):
                    c.send_raw(os.urandom(rnd.randint(1, 5000)))
                yield sleep(0)
                yield c.close()
        # Let the server read the garbage before checking that it still serves.
        yield sleep(0.1)
        yield self.assert_still_serving()
        yield self.register_host()
        viewer = yield self.tcp()
        viewer.send_msg(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
            )
        )
        # A viewer request still reaches the host after the garbage.
        host_sock = self._clients[-2]
        data, _ = yield host_sock.recv()
        self.assertEqual(data[:1], b"\x4a")

    @inlineCallbacks
    def test_udp_flood_from_one_ip_does_not_starve_others(self) -> Any:
        """A datagram flood from one IP is capped per IP; another host still registers."""
        guard = self.svc.rendezvous_udp.protocol.guard
        attacker = self.udp("127.0.0.8")
        for _ in range(40):
            for _ in range(100):
                attacker.send(REGISTER_PEER, self.udp_port)
            yield sleep(0.002)  # let the server drain its socket between bursts
        yield sleep(0.2)  # and read the last burst before the check
        yield self.assert_still_serving()
        answered = len(attacker.queue.pending)
        self.assertGreater(guard.dropped, 0)
        self.assertLessEqual(answered, guard.burst + guard.rate * 5)

    @inlineCallbacks
    def test_connection_cap_per_ip(self) -> Any:
        """Past --max-connections-per-ip, new TCP connections from that IP are closed."""
        self.svc.rendezvous_tcp.factory.max_per_ip = 3
        kept = []
        for _ in range(3):
            c = yield self.tcp("127.0.0.10")
            kept.append(c)
        extra = yield self.tcp("127.0.0.10")
        yield extra.closed
        for c in kept:
            self.assertFalse(c.closed.called)
        yield self.assert_still_serving()


class DiscoveryWiringTests(RendezvousTestBase):
    extra_args = (
        *RendezvousTestBase.extra_args,
        "--discovery",
        "--discovery-endpoint",
        "tcp:0:interface=127.0.0.1",
    )

    @inlineCallbacks
    def test_discovery_served_by_the_plugin(self) -> Any:
        """With --discovery the server answers LiteDesk v1 register on its own port."""
        import json
        import struct

        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Protocol

        port = self.svc.discovery.listening.getHost().port
        got: list[bytes] = []

        class Client(Protocol):
            def dataReceived(self, data: bytes) -> None:
                got.append(data)

        c = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Client())
        body = json.dumps({"type": "register", "peer_id": "host-a", "peer_type": "host"}).encode()
        c.transport.write(struct.pack(">I", len(body)) + body)
        yield until(lambda: got, 5, message="the reply to register")
        raw = b"".join(got)
        reply = json.loads(raw[4 : 4 + struct.unpack(">I", raw[:4])[0]])
        self.assertEqual(reply["type"], "registered")
        self.assertEqual((reply["peer_id"], reply["public_ip"]), ("host-a", "127.0.0.1"))
        c.transport.loseConnection()
        yield sleep(0.05)  # let the server see the close before tearDown stops it


class DualStackTests(RendezvousTestBase):
    """The default listeners are dual-stack '::': IPv4 peers appear as ::ffff:a.b.c.d."""

    def setUp(self) -> Any:
        self.data_dir = Path(self.mktemp())
        self.svc = start_server(self.data_dir, *self.extra_args, host="::")
        self.server = self.svc.server
        self.udp_port = self.svc.rendezvous_udp.listening.getHost().port
        self._clients = []
        return self._ports()

    @inlineCallbacks
    def test_ipv4_host_and_viewer_on_dual_stack(self) -> Any:
        """An IPv4 host is keyed by its IPv4 address and reached by UDP through the v6 socket."""
        host = yield self.register_host("127.0.0.2")
        self.assertEqual(self.server.registry.get(ID).addr[0], "127.0.0.2")
        viewer = yield self.tcp()
        viewer.send_msg(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
            )
        )
        data, _ = yield host.recv()
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        decoded = addrmangle.decode(push.punch_hole.socket_addr)
        self.assertEqual(decoded, viewer.local())
        self.assertLessEqual(len(push.punch_hole.socket_addr), 11)  # mangled as IPv4

    @inlineCallbacks
    def test_ipv6_host_registers(self) -> Any:
        """A host on IPv6 (::1) registers and receives pushes at its IPv6 address."""
        host = yield self.register_host("::1")
        self.assertEqual(self.server.registry.get(ID).addr[0], "::1")
        viewer = yield self.tcp()
        viewer.send_msg(
            rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(id=ID, licence_key=SERVER_PK_B64)
            )
        )
        data, _addr = yield host.recv()
        self.assertEqual(data[:1], b"\x4a")


class UdpBufferTests(RendezvousTestBase):
    extra_args = (*RendezvousTestBase.extra_args, "--udp-rcvbuf", "4194304")

    def test_receive_buffer_raised(self) -> None:
        """--udp-rcvbuf enlarges the kernel queue that absorbs heartbeat bursts."""
        import socket

        sock = self.svc.rendezvous_udp.listening.getHandle()
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if os.geteuid() != 0 and got < 4194304:
            cannot_run("needs root (or a large net.core.rmem_max) to raise the buffer")
        self.assertGreaterEqual(got, 4194304)
