"""The UDP-reflection property: no datagram makes the server send more bytes than it had.

UDP sources are not authenticated, so every byte the server sends by UDP because of a
datagram may land on whoever's address the datagram was forged with.  The property
(docs/protocol.rst §5.9 and §5.12): for every datagram, the bytes the server writes to
its UDP socket while handling it are at most the datagram's size.  Checked here through
the real datagram protocol (flood guard off, so every datagram is handled) on a server
with state worth attacking: a host registered by UDP, one on a stream, a viewer waiting
for a UDP punch, a server serial newer than the clients' (the ConfigUpdate of hbbs, 399
bytes for 5 with 12 servers) and a peer store that answers at once.  Hypothesis draws
sequences of datagrams: every C{RendezvousMessage} member with arbitrary fields, crafted
ones that match the server's state, and garbage; from the host's, the viewer's and
strangers' addresses.  A last test shows the check catching an amplifier: a server that
answers the UDP TestNatRequest as RustDesk Pro's clients expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.floodguard import FloodGuard
from litedesk.rendezvous.protocols import RendezvousDatagramProtocol
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.server import RendezvousServer
from litedesk.rendezvous.store import PeerRecord
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import encode_frame
from litedesk.wire.keys import ServerKey, public_b64

KEY = SigningKey(bytes(range(32)))
HOST_ID = "123456789"
STREAM_HOST_ID = "stream-host-1"
UUID = b"0123456789abcdef0123456789abcdef"
PK = bytes([7]) * 32
HOST_ADDR = ("198.51.100.7", 40001)
VIEWER = ("203.0.113.9", 50000)
SERVERS = [f"rendezvous{i}.example.com:21116" for i in range(12)]
UNION = [f.name for f in rz.RendezvousMessage.DESCRIPTOR.oneofs_by_name["union"].fields]


class RecordingUDP:
    """The datagram protocol's transport: what would leave the UDP socket."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))


class InstantStore:
    """A peer store whose writes succeed at once (replies go out during the datagram)."""

    def save(self, record: PeerRecord) -> Deferred[bytes]:
        return succeed(b"guid-" + record.id.encode())


class Stream:
    """A TCP connection as the controller sees it."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.addr = addr
        self.local = ("198.51.100.1", 21116)
        self.transport = StringTransport()

    def send_message(self, msg: rz.RendezvousMessage) -> None:
        self.transport.write(encode_frame(msg.SerializeToString()))


class Fixture:
    """A server in a state worth attacking, and its datagram protocol."""

    def __init__(self, server_class: type[RendezvousServer] = RendezvousServer) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.server = server_class(
            clock=self.clock,
            registry=Registry(server_serial=7),
            key=ServerKey(public_b64(KEY), KEY),
            relays=RelayList(["rs.example.com:21117"]),
            store=InstantStore(),
            rendezvous_servers=SERVERS,
        )
        self.proto = RendezvousDatagramProtocol(self.server, FloodGuard(0))
        self.udp = RecordingUDP()
        self.proto.transport = self.udp  # type: ignore[assignment]
        self.server.udp = self.proto
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST_ID, uuid=UUID, pk=PK))
        self.proto.datagramReceived(reg.SerializeToString(), HOST_ADDR)
        host_stream = Stream(("198.51.100.50", 40200))
        reg.register_pk.id = STREAM_HOST_ID
        self.server.handle_stream_message(host_stream, reg)
        # A viewer waiting for a UDP punch: its NAT test, then its request.
        self.viewer = Stream(VIEWER)
        nat_test = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest())
        self.proto.datagramReceived(nat_test.SerializeToString(), (VIEWER[0], 61000))
        request = rz.PunchHoleRequest(
            id=HOST_ID, licence_key=public_b64(KEY), version="1.4.9", udp_port=62000
        )
        self.server.handle_stream_message(
            self.viewer, rz.RendezvousMessage(punch_hole_request=request)
        )
        self.udp.written.clear()

    def send(self, data: bytes, source: tuple[str, int]) -> int:
        """Handle one datagram; the bytes written to the UDP socket meanwhile."""
        before = len(self.udp.written)
        self.proto.datagramReceived(data, source)
        return sum(len(d) for d, _ in self.udp.written[before:])


# -- arbitrary messages ------------------------------------------------------------------

_T = FieldDescriptor
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    _T.TYPE_STRING: st.text(max_size=24),
    _T.TYPE_BYTES: st.binary(max_size=40),
    _T.TYPE_BOOL: st.booleans(),
    _T.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    _T.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
    _T.TYPE_SFIXED32: st.integers(-(2**31), 2**31 - 1),
    _T.TYPE_UINT32: st.integers(0, 2**32 - 1),
    _T.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    _T.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
    _T.TYPE_SINT64: st.integers(-(2**63), 2**63 - 1),
    _T.TYPE_SFIXED64: st.integers(-(2**63), 2**63 - 1),
    _T.TYPE_UINT64: st.integers(0, 2**64 - 1),
    _T.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    # Open enums: values the schema does not name are legal on the wire.
    _T.TYPE_ENUM: st.integers(-3, 12),
    _T.TYPE_FLOAT: st.floats(width=32, allow_nan=False),
    _T.TYPE_DOUBLE: st.floats(allow_nan=False),
}


def _field_values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == _T.TYPE_MESSAGE:
        assert field.message_type is not None
        one = messages(field.message_type, depth - 1)
    else:
        one = _SCALARS[field.type]
    return st.lists(one, max_size=3) if field.is_repeated else one


def messages(descriptor: Any, depth: int = 2) -> st.SearchStrategy[Message]:
    """Messages of C{descriptor}'s type with any subset of fields set to any values."""
    cls: Callable[[], Message] = GetMessageClass(descriptor)
    if depth <= 0:
        return st.builds(cls)
    fields = {f.name: st.none() | _field_values(f, depth) for f in descriptor.fields}

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            target = getattr(msg, name)
            if field.is_repeated and field.type == _T.TYPE_MESSAGE:
                for v in value:
                    target.add().CopyFrom(v)
            elif field.is_repeated:
                target.extend(value)
            elif field.type == _T.TYPE_MESSAGE:
                target.CopyFrom(value)
                target.SetInParent()
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries(fields).map(build)


def member(name: str) -> st.SearchStrategy[bytes]:
    """A RendezvousMessage whose union holds C{name}, fields arbitrary."""
    field = rz.RendezvousMessage.DESCRIPTOR.fields_by_name[name]
    assert field.message_type is not None

    def wrap(inner: Message) -> bytes:
        msg = rz.RendezvousMessage()
        getattr(msg, name).CopyFrom(inner)
        getattr(msg, name).SetInParent()
        return msg.SerializeToString()

    return messages(field.message_type).map(wrap)


def _matching() -> st.SearchStrategy[bytes]:
    """Datagrams that hit the server's state: its host, its waiting viewer."""
    viewer_addr = addrmangle.encode(VIEWER)
    return st.one_of(
        st.builds(
            lambda i, s: rz.RendezvousMessage(
                register_peer=rz.RegisterPeer(id=i, serial=s)
            ).SerializeToString(),
            st.sampled_from([HOST_ID, STREAM_HOST_ID, "a", "x" * 60]),
            st.integers(-1, 9),
        ),
        st.builds(
            lambda i, u, p, o: rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id=i, uuid=u, pk=p, old_id=o)
            ).SerializeToString(),
            st.sampled_from([HOST_ID, STREAM_HOST_ID, "abcdefgh", "a"]),
            st.sampled_from([UUID, b"other"]),
            st.sampled_from([PK, bytes(32)]),
            st.sampled_from(["", HOST_ID]),
        ),
        st.builds(
            lambda i, a: rz.RendezvousMessage(
                punch_hole_sent=rz.PunchHoleSent(
                    socket_addr=a, id=i, relay_server="rs.example.com", version="1.4.9"
                )
            ).SerializeToString(),
            st.sampled_from([HOST_ID, STREAM_HOST_ID]),
            st.sampled_from([viewer_addr, addrmangle.encode(("203.0.113.9", 1))]),
        ),
        st.builds(
            lambda s: rz.RendezvousMessage(
                test_nat_request=rz.TestNatRequest(serial=s)
            ).SerializeToString(),
            st.integers(-(2**31), 2**31 - 1),
        ),
        st.builds(
            lambda i: rz.RendezvousMessage(
                punch_hole_request=rz.PunchHoleRequest(
                    id=i, licence_key=public_b64(KEY), udp_port=5
                )
            ).SerializeToString(),
            st.sampled_from([HOST_ID, STREAM_HOST_ID]),
        ),
    )


ANY_MEMBER = st.one_of(*(member(name) for name in UNION))
GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.tuples(ANY_MEMBER, st.binary(min_size=1, max_size=8)).map(lambda t: t[0] + t[1]),
    ANY_MEMBER.filter(lambda d: len(d) > 1).flatmap(
        lambda d: st.integers(1, len(d) - 1).map(lambda n: d[:n])
    ),
    st.tuples(ANY_MEMBER, ANY_MEMBER).map(lambda t: t[0] + t[1]),  # protobuf merges these
)
DATAGRAMS = st.one_of(ANY_MEMBER, _matching(), GARBAGE)
SOURCES = st.one_of(
    st.sampled_from([HOST_ADDR, (HOST_ADDR[0], 40777), (VIEWER[0], 61000), ("::1", 5)]),
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(1, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(1, 65535)),
)


class ReflectionPropertyTests(SynchronousTestCase):
    @settings(max_examples=300)
    @given(st.lists(st.tuples(DATAGRAMS, SOURCES, st.floats(0, 40)), min_size=1, max_size=10))
    def test_no_datagram_gets_more_bytes_back(
        self, datagrams: list[tuple[bytes, tuple[str, int], float]]
    ) -> None:
        """For every datagram in any sequence: bytes written to the UDP socket while it is
        handled <= its size.  Handling never raises (the protocol would log the error,
        which fails the test)."""
        f = Fixture()
        for data, source, step in datagrams:
            f.clock.advance(step)
            sent = f.send(data, source)
            self.assertLessEqual(sent, len(data), f"{data.hex()} from {source}")

    def test_every_member_empty_and_full(self) -> None:
        """Every union member, empty and with every field set, from the host, the waiting
        viewer's NAT and a stranger: no reply larger than the request."""
        full: dict[str, bytes] = {}
        for name in UNION:
            field = rz.RendezvousMessage.DESCRIPTOR.fields_by_name[name]
            assert field.message_type is not None
            empty = rz.RendezvousMessage()
            getattr(empty, name).SetInParent()
            full[name] = _filled(field.message_type, name)
            for data in (empty.SerializeToString(), full[name]):
                for source in (HOST_ADDR, (VIEWER[0], 61000), ("192.0.2.1", 9)):
                    f = Fixture()
                    self.assertLessEqual(f.send(data, source), len(data), (name, source))
        self.assertEqual(len(full), 23)

    def test_known_replies_still_go_out(self) -> None:
        """The property is not met by silence: a heartbeat and a RegisterPk are answered."""
        f = Fixture()
        hb = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=HOST_ID, serial=7))
        self.assertEqual(f.send(hb.SerializeToString(), HOST_ADDR), 2)
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id="987654321", uuid=UUID, pk=PK))
        self.assertEqual(f.send(reg.SerializeToString(), ("192.0.2.1", 9)), 3)

    def test_the_check_catches_an_amplifier(self) -> None:
        """A server answering the UDP TestNatRequest (what RustDesk Pro's clients wait for,
        and what public hbbs patches add) fails the same check: 3 bytes in, 7 out."""
        f = Fixture(AnsweringServer)
        stock = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest()).SerializeToString()
        self.assertEqual(len(stock), 3)
        self.assertGreater(f.send(stock, ("192.0.2.1", 54321)), len(stock))


def _filled(descriptor: Any, name: str) -> bytes:
    """RendezvousMessage{name: every field set to a non-default value}."""
    msg = rz.RendezvousMessage()
    inner = getattr(msg, name)
    inner.SetInParent()
    for field in descriptor.fields:
        value: Any = {
            _T.TYPE_STRING: "x" * 10,
            _T.TYPE_BYTES: b"\x07" * 18,
            _T.TYPE_BOOL: True,
            _T.TYPE_ENUM: 1,
        }.get(field.type, 7)
        if field.type == _T.TYPE_MESSAGE:
            sub = getattr(inner, field.name)
            (sub.add() if field.is_repeated else sub).SetInParent()
            continue
        if field.is_repeated:
            getattr(inner, field.name).extend([value, value])
        else:
            setattr(inner, field.name, value)
    return msg.SerializeToString()


class AnsweringServer(RendezvousServer):
    """The amplifier the property rules out: TestNatResponse by UDP to any source."""

    def handle_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        msg = rz.RendezvousMessage()
        msg.ParseFromString(data)
        if msg.WhichOneof("union") == "test_nat_request" and self.udp is not None:
            answer = rz.RendezvousMessage(test_nat_response=rz.TestNatResponse(port=source[1]))
            self.udp.send_datagram(answer.SerializeToString(), source)
            return
        super().handle_datagram(data, source)
