"""One-layer tests of the rendezvous protocols: StringTransport, task.Clock, hypothesis."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.protocols import (
    NatTestProtocol,
    RendezvousStreamFactory,
    RendezvousStreamProtocol,
)
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey, public_b64

KEY = SigningKey(bytes(range(32)))
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def make_server(clock: Clock, licence: str | None = None) -> tuple[RendezvousServer, Datagrams]:
    key = ServerKey(public_b64(KEY) if licence is None else licence, KEY)
    server = RendezvousServer(clock=clock, registry=Registry(), key=key, relays=RelayList([]))
    udp = Datagrams()
    server.udp = udp
    return server, udp


def connect(
    server: RendezvousServer,
    clock: Clock,
    peer: Any = None,
    proto_class: Any = RendezvousStreamProtocol,
    max_frame: int = 65536,
) -> tuple[Any, StringTransport, RendezvousStreamFactory]:
    factory = RendezvousStreamFactory(server, proto_class, clock=clock, max_frame=max_frame)
    proto = factory.buildProtocol(None)
    assert proto is not None
    transport = StringTransport(peerAddress=peer or IPv4Address("TCP", "198.51.100.1", 40000))
    proto.makeConnection(transport)
    return proto, transport, factory


def frames(transport: StringTransport) -> list[rz.RendezvousMessage]:
    out = []
    for f in FrameDecoder().feed(transport.value()):
        m = rz.RendezvousMessage()
        m.ParseFromString(f)
        out.append(m)
    return out


class StreamProtocolTests(SynchronousTestCase):
    def test_frames_split_at_every_byte(self) -> None:
        """A TestNatRequest delivered one byte at a time is answered once."""
        clock = Clock()
        server, _ = make_server(clock)
        proto, transport, _ = connect(server, clock)
        for b in bytes.fromhex("14a201020803"):
            proto.dataReceived(bytes([b]))
        msgs = frames(transport)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(msgs[0].test_nat_response.port, 40000)
        self.assertTrue(transport.disconnecting)

    def test_read_timeout(self) -> None:
        """A connection silent for 30 s is closed, and its parked slot is freed."""
        clock = Clock()
        server, _ = make_server(clock)
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        proto, transport, factory = connect(server, clock)
        req = rz.RendezvousMessage(
            punch_hole_request=rz.PunchHoleRequest(id="123456789", licence_key=public_b64(KEY))
        )
        proto.dataReceived(encode_frame(req.SerializeToString()))
        self.assertEqual(server.parked_count(), 1)
        clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(b"\x00")  # a keep-alive restarts the 30 s window
        clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting or transport.disconnected)
        proto.connectionLost(None)
        self.assertEqual(server.parked_count(), 0)
        self.assertEqual(factory.open_connections, 0)

    def test_oversize_frame_closes(self) -> None:
        """A frame over --max-frame closes the connection without buffering it."""
        clock = Clock()
        server, _ = make_server(clock)
        proto, transport, _ = connect(server, clock, max_frame=1024)
        proto.dataReceived(encode_frame(b"x" * 1025)[:10])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_messages_after_close_decision_ignored(self) -> None:
        """After a one-shot message the rest of the chunk is not processed."""
        clock = Clock()
        server, _ = make_server(clock)
        proto, transport, _ = connect(server, clock)
        nat = bytes.fromhex("14a201020803")
        proto.dataReceived(nat + nat)
        self.assertEqual(len(frames(transport)), 1)

    def test_ipv6_viewer_address_mangled_as_18_bytes(self) -> None:
        """A viewer on IPv6 is announced to the host with an 18-byte address."""
        clock = Clock()
        server, udp = make_server(clock)
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        proto, _, _ = connect(server, clock, peer=IPv6Address("TCP", "2001:db8::7", 5555))
        req = rz.RendezvousMessage(
            punch_hole_request=rz.PunchHoleRequest(id="123456789", licence_key=public_b64(KEY))
        )
        proto.dataReceived(encode_frame(req.SerializeToString()))
        ((data, addr),) = udp.sent
        self.assertEqual(addr, ("203.0.113.5", 1))
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        self.assertEqual(len(push.punch_hole.socket_addr), 18)
        self.assertEqual(addrmangle.decode(push.punch_hole.socket_addr), ("2001:db8::7", 5555))

    def test_v4_mapped_peer_normalised(self) -> None:
        """A dual-stack listener's ::ffff:a.b.c.d peer is keyed and answered as IPv4."""
        clock = Clock()
        server, _ = make_server(clock)
        proto, _transport, _ = connect(
            server, clock, peer=IPv6Address("TCP", "::ffff:198.51.100.9", 6000)
        )
        self.assertEqual(proto.addr, ("198.51.100.9", 6000))

    def test_always_use_relay(self) -> None:
        """--always-use-relay tells the host the viewer is behind symmetric NAT."""
        clock = Clock()
        server, udp = make_server(clock)
        server.always_use_relay = True
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        proto, _, _ = connect(server, clock)
        req = rz.RendezvousMessage(
            punch_hole_request=rz.PunchHoleRequest(
                id="123456789", licence_key=public_b64(KEY), nat_type=rz.ASYMMETRIC
            )
        )
        proto.dataReceived(encode_frame(req.SerializeToString()))
        push = rz.RendezvousMessage()
        push.ParseFromString(udp.sent[0][0])
        self.assertEqual(push.punch_hole.nat_type, rz.SYMMETRIC)

    def test_literal_licence_means_no_signature(self) -> None:
        """With a literal licence string the server checks it but signs nothing."""
        clock = Clock()
        server = RendezvousServer(
            clock=clock, registry=Registry(), key=ServerKey("secret", None), relays=RelayList([])
        )
        server.udp = Datagrams()
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        self.assertEqual(server._signed_pk("1.4.9", "123456789"), b"")
        proto, transport, _ = connect(server, clock)
        bad = rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id="123456789"))
        proto.dataReceived(encode_frame(bad.SerializeToString()))
        self.assertEqual(frames(transport)[0].punch_hole_response.failure, 3)

    def test_empty_licence_accepts_any_key(self) -> None:
        """--key '' signs but requires no licence: any licence_key is accepted."""
        clock = Clock()
        server, udp = make_server(clock, licence="")
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        proto, transport, _ = connect(server, clock)
        req = rz.RendezvousMessage(
            punch_hole_request=rz.PunchHoleRequest(id="123456789", licence_key="whatever")
        )
        proto.dataReceived(encode_frame(req.SerializeToString()))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(udp.sent), 1)


class NatPortProtocolTests(SynchronousTestCase):
    def test_one_request_per_connection(self) -> None:
        """The NAT-test port answers one request and closes, without ConfigUpdate."""
        clock = Clock()
        server, _ = make_server(clock)
        server.registry.server_serial = 9
        proto, transport, _ = connect(server, clock, proto_class=NatTestProtocol)
        proto.dataReceived(bytes.fromhex("14a201020803"))
        (msg,) = frames(transport)
        self.assertEqual(msg.test_nat_response.port, 40000)
        self.assertFalse(msg.test_nat_response.HasField("cu"))
        self.assertTrue(transport.disconnecting)


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.lists(st.binary(max_size=300), max_size=10))
    def test_tcp_garbage_never_raises(self, chunks: list[bytes]) -> None:
        """Arbitrary bytes on TCP 21116 never raise; the connection is answered or closed."""
        clock = Clock()
        server, _ = make_server(clock)
        proto, _transport, factory = connect(server, clock)
        for c in chunks:
            proto.dataReceived(c)
        proto.connectionLost(None)
        self.assertEqual(server.parked_count(), 0)
        self.assertEqual(factory.open_connections, 0)

    @settings(max_examples=300)
    @given(st.lists(st.binary(max_size=200), max_size=20))
    def test_udp_garbage_never_raises(self, datagrams: list[bytes]) -> None:
        """Arbitrary datagrams never raise and never change a registered peer."""
        clock = Clock()
        server, _ = make_server(clock)
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        for d in datagrams:
            server.handle_datagram(d, ("198.51.100.77", 9))
        peer = server.registry.get("123456789")
        assert peer is not None
        self.assertEqual((peer.uuid, peer.pk), (UUID, PK))

    @settings(max_examples=200)
    @given(
        st.lists(
            st.one_of(
                st.builds(
                    lambda i, k, n: rz.RendezvousMessage(
                        punch_hole_request=rz.PunchHoleRequest(id=i, licence_key=k, nat_type=n)
                    ),
                    st.sampled_from(["123456789", "", "x"]),
                    st.sampled_from([public_b64(KEY), ""]),
                    st.integers(min_value=0, max_value=1000),
                ),
                st.builds(
                    lambda a, i, v: rz.RendezvousMessage(
                        punch_hole_sent=rz.PunchHoleSent(socket_addr=a, id=i, version=v)
                    ),
                    st.binary(max_size=20),
                    st.sampled_from(["123456789", "zz"]),
                    st.sampled_from(["", "1.4.9"]),
                ),
                st.builds(
                    lambda a, i: rz.RendezvousMessage(
                        relay_response=rz.RelayResponse(socket_addr=a, id=i, version="1")
                    ),
                    st.binary(max_size=20),
                    st.sampled_from(["123456789", ""]),
                ),
                st.builds(
                    lambda i: rz.RendezvousMessage(request_relay=rz.RequestRelay(id=i)),
                    st.sampled_from(["123456789", "nope"]),
                ),
            ),
            max_size=8,
        )
    )
    def test_message_sequences_keep_state_consistent(self, msgs: list[Any]) -> None:
        """Any sequence of valid-but-odd messages leaves no parked connection behind."""
        clock = Clock()
        server, _ = make_server(clock)
        server.registry.register_pk("123456789", UUID, PK, ("203.0.113.5", 1), 0)
        proto, _transport, _ = connect(server, clock)
        for m in msgs:
            proto.dataReceived(encode_frame(m.SerializeToString()))
        proto.connectionLost(None)
        self.assertEqual(server.parked_count(), 0)
