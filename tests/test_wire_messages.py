"""Tests for L{litedesk.wire.messages}: parsing and serializing RendezvousMessage.

Hex vectors for the checks of docs/protocol.rst §9 (items 3-5, 10, 12-16, 19, 20, 28).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.addrmangle import decode
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.messages import RendezvousMessage, kind, parse_rendezvous, serialize

REPO_ROOT = Path(__file__).resolve().parent.parent

UUID = b"0123456789abcdef0123456789abcdef"
RELAY_UUID = "0f5c3a1e-1111-4222-8333-444455556666"

REGISTER_PK_HEX = (
    "7a4f0a09313233343536373839"
    "12203031323334353637383961626364656630313233343536373839616263646566"
    "1a20" + "07" * 32
)
PUNCH_HOLE_HEX = "4a220a0a7c520000000080512140121472732e6578616d706c652e636f6d3a3231313137"

# (hex, member name, the member message) for the vectors of §9.
VECTORS: list[tuple[str, str, object]] = [
    (
        "320d0a093132333435363738391003",
        "register_peer",
        rz.RegisterPeer(id="123456789", serial=3),
    ),
    ("3a021001", "register_peer_response", rz.RegisterPeerResponse(request_pk=True)),
    ("3a00", "register_peer_response", rz.RegisterPeerResponse()),
    (
        REGISTER_PK_HEX,
        "register_pk",
        rz.RegisterPk(id="123456789", uuid=UUID, pk=b"\x07" * 32),
    ),
    ("820100", "register_pk_response", rz.RegisterPkResponse(result=rz.RegisterPkResponse.OK)),
    (
        "8201020802",
        "register_pk_response",
        rz.RegisterPkResponse(result=rz.RegisterPkResponse.UUID_MISMATCH),
    ),
    (
        "8201020804",
        "register_pk_response",
        rz.RegisterPkResponse(result=rz.RegisterPkResponse.TOO_FREQUENT),
    ),
    (
        "8201020806",
        "register_pk_response",
        rz.RegisterPkResponse(result=rz.RegisterPkResponse.NOT_SUPPORT),
    ),
    ("a201020803", "test_nat_request", rz.TestNatRequest(serial=3)),
    ("aa010408b1a803", "test_nat_response", rz.TestNatResponse(port=54321)),
    (
        "5a021803",
        "punch_hole_response",
        rz.PunchHoleResponse(failure=rz.PunchHoleResponse.LICENSE_MISMATCH),
    ),
    ("5a00", "punch_hole_response", rz.PunchHoleResponse()),
    (
        "5a021802",
        "punch_hole_response",
        rz.PunchHoleResponse(failure=rz.PunchHoleResponse.OFFLINE),
    ),
    (
        PUNCH_HOLE_HEX,
        "punch_hole",
        rz.PunchHole(
            socket_addr=bytes.fromhex("7c520000000080512140"),
            relay_server="rs.example.com:21117",
        ),
    ),
    (
        "ba012c0a09313131313131313131"
        "1209313233343536373839"
        "1209393837363534333231"
        "1209353535353535353535",
        "online_request",
        rz.OnlineRequest(id="111111111", peers=["123456789", "987654321", "555555555"]),
    ),
    ("c201030a01a0", "online_response", rz.OnlineResponse(states=b"\xa0")),
    (
        "920126122430663563336131652d313131312d343232322d383333332d343434343535353536363636",
        "request_relay",
        rz.RequestRelay(uuid=RELAY_UUID),
    ),
]


class VectorTests(SynchronousTestCase):
    def test_parse_vectors(self) -> None:
        """
        Each §9 hex vector parses to the expected oneof member with the
        expected field values.
        """
        for hexdata, member, expected in VECTORS:
            with self.subTest(member=member, hex=hexdata):
                msg = parse_rendezvous(bytes.fromhex(hexdata))
                assert msg is not None
                self.assertEqual(kind(msg), member)
                self.assertEqual(getattr(msg, member), expected)

    def test_serialize_vectors(self) -> None:
        """
        Serializing each §9 message gives exactly the bytes RustDesk sends.
        """
        for hexdata, member, value in VECTORS:
            with self.subTest(member=member, hex=hexdata):
                self.assertEqual(serialize(**{member: value}).hex(), hexdata)

    def test_register_peer_fields(self) -> None:
        """
        §9 item 3: a host's RegisterPeer carries its id and serial.
        """
        msg = parse_rendezvous(bytes.fromhex("320d0a093132333435363738391003"))
        assert msg is not None
        self.assertEqual(msg.register_peer.id, "123456789")
        self.assertEqual(msg.register_peer.serial, 3)

    def test_register_pk_fields(self) -> None:
        """
        §9 item 4: RegisterPk carries id, 32-byte uuid and 32-byte pk.
        """
        msg = parse_rendezvous(bytes.fromhex(REGISTER_PK_HEX))
        assert msg is not None
        self.assertEqual(msg.register_pk.id, "123456789")
        self.assertEqual(msg.register_pk.uuid, UUID)
        self.assertEqual(msg.register_pk.pk, b"\x07" * 32)

    def test_test_nat_framed(self) -> None:
        """
        §9 item 10 over TCP: the framed TestNatRequest C{14a201020803}
        decodes to serial 3, and the framed reply for source port 54321 is
        C{1caa010408b1a803}.
        """
        frames = FrameDecoder().feed(bytes.fromhex("14a201020803"))
        self.assertEqual(len(frames), 1)
        msg = parse_rendezvous(frames[0])
        assert msg is not None
        self.assertEqual(msg.test_nat_request.serial, 3)
        reply = serialize(test_nat_response=rz.TestNatResponse(port=54321))
        self.assertEqual(encode_frame(reply).hex(), "1caa010408b1a803")

    def test_punch_hole_addr(self) -> None:
        """
        §9 item 13: the PunchHole pushed to a host carries the requester's
        mangled address, which decodes to 192.168.16.32:21116, and the relay
        server.
        """
        msg = parse_rendezvous(bytes.fromhex(PUNCH_HOLE_HEX))
        assert msg is not None
        self.assertEqual(decode(msg.punch_hole.socket_addr), ("192.168.16.32", 21116))
        self.assertEqual(msg.punch_hole.relay_server, "rs.example.com:21117")
        self.assertEqual(msg.punch_hole.nat_type, rz.UNKNOWN_NAT)

    def test_punch_hole_response_nat_type_zero(self) -> None:
        """
        §4.3/§9 item 14: a PunchHoleResponse with nat_type explicitly set to
        0 (UNKNOWN_NAT) still emits C{28 00}, because nat_type is a oneof
        member with presence; clients rely on it being present.
        """
        response = rz.PunchHoleResponse(
            socket_addr=bytes.fromhex("7c520000000080512140"), nat_type=rz.UNKNOWN_NAT
        )
        data = serialize(punch_hole_response=response)
        self.assertEqual(data.hex(), "5a0e0a0a7c5200000000805121402800")
        msg = parse_rendezvous(data)
        assert msg is not None
        self.assertEqual(msg.punch_hole_response.WhichOneof("union"), "nat_type")
        self.assertEqual(
            serialize(punch_hole_response=rz.PunchHoleResponse(nat_type=rz.UNKNOWN_NAT)),
            bytes.fromhex("5a022800"),
        )

    def test_punch_hole_response_is_local(self) -> None:
        """
        §9 item 15: a LAN answer sets is_local (C{30 01}), which replaces
        nat_type in the oneof.
        """
        response = rz.PunchHoleResponse(nat_type=rz.SYMMETRIC)
        response.is_local = True
        data = serialize(punch_hole_response=response)
        self.assertEqual(data.hex(), "5a023001")
        msg = parse_rendezvous(data)
        assert msg is not None
        self.assertTrue(msg.punch_hole_response.is_local)
        self.assertEqual(msg.punch_hole_response.WhichOneof("union"), "is_local")

    def test_relay_response_union(self) -> None:
        """
        §9 item 16: a RelayResponse carries either the host id or the signed
        pk, never both; setting pk clears id.
        """
        response = rz.RelayResponse(uuid=RELAY_UUID, relay_server="r:21117", id="123456789")
        response.pk = b"\x01" * 109
        msg = parse_rendezvous(serialize(relay_response=response))
        assert msg is not None
        self.assertEqual(msg.relay_response.WhichOneof("union"), "pk")
        self.assertEqual(msg.relay_response.id, "")
        self.assertEqual(msg.relay_response.pk, b"\x01" * 109)
        self.assertEqual(msg.relay_response.uuid, RELAY_UUID)

    def test_request_relay_forwarded(self) -> None:
        """
        §9 item 16: a RequestRelay re-serialized with socket_addr added
        keeps every other field intact.
        """
        original = rz.RequestRelay(
            id="123456789", uuid=RELAY_UUID, relay_server="r:21117", licence_key="k"
        )
        msg = parse_rendezvous(serialize(request_relay=original))
        assert msg is not None
        msg.request_relay.socket_addr = b"\x01\x02"
        again = parse_rendezvous(msg.SerializeToString())
        assert again is not None
        self.assertEqual(again.request_relay.id, "123456789")
        self.assertEqual(again.request_relay.uuid, RELAY_UUID)
        self.assertEqual(again.request_relay.relay_server, "r:21117")
        self.assertEqual(again.request_relay.licence_key, "k")
        self.assertEqual(again.request_relay.socket_addr, b"\x01\x02")

    def test_empty(self) -> None:
        """
        Zero bytes are an empty RendezvousMessage with no member set (the
        server ignores it), not a parse failure.
        """
        msg = parse_rendezvous(b"")
        assert msg is not None
        self.assertIsInstance(msg, RendezvousMessage)
        self.assertIsNone(kind(msg))
        self.assertEqual(serialize(), b"")


class RobustnessTests(SynchronousTestCase):
    def test_nested_groups(self) -> None:
        """
        §9 item 28 (upstream test): 300,000 group-start bytes followed by
        300,000 group-end bytes are rejected (None) without crashing or
        exhausting the stack of the server process.
        """
        self.assertIsNone(parse_rendezvous(b"\x0b" * 300_000 + b"\x0c" * 300_000))

    def test_nested_groups_pure_python_runtime(self) -> None:
        """
        The §9 item 28 input is also rejected, not a crash, when protobuf
        runs its pure-Python implementation (a platform without upb).
        """
        script = (
            "from litedesk.wire.messages import parse_rendezvous\n"
            "assert parse_rendezvous(b'\\x0b' * 300000 + b'\\x0c' * 300000) is None\n"
            "from google.protobuf.internal import api_implementation\n"
            "print(api_implementation.Type())\n"
        )
        env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "python")

    def test_nested_groups_inside_member(self) -> None:
        """
        The same deep nesting hidden inside a known member's unknown field is
        also rejected without crashing.
        """
        inner = b"\x5b" * 100_000 + b"\x5c" * 100_000
        data = b"\x32" + _varint(len(inner)) + inner
        self.assertIsNone(parse_rendezvous(data))

    def test_garbage(self) -> None:
        """
        Truncated or malformed input gives None.
        """
        for data in [b"\x32", b"\x32\x05\x0a", b"\x0c", b"\xff" * 11, b"\x32\x03\x0a\x01\xff"]:
            with self.subTest(data=data):
                self.assertIsNone(parse_rendezvous(data))

    def test_unknown_fields(self) -> None:
        """
        Unknown fields, at the top level and inside a member, are skipped
        (newer clients add fields); the known fields still parse.
        """
        register_peer = bytes.fromhex("0a093132333435363738391003") + bytes.fromhex(
            "f806011a036162639d0100000000"
        )
        data = bytes.fromhex("f80601") + b"\x32" + _varint(len(register_peer)) + register_peer
        data += bytes.fromhex("fa0f03616263")
        msg = parse_rendezvous(data)
        assert msg is not None
        self.assertEqual(kind(msg), "register_peer")
        self.assertEqual(msg.register_peer.id, "123456789")
        self.assertEqual(msg.register_peer.serial, 3)

    def test_unknown_member(self) -> None:
        """
        A RendezvousMessage member this server does not know (field 99) is
        tolerated: it parses, with no member set.
        """
        msg = parse_rendezvous(bytes.fromhex("9a060300000a"))
        assert msg is not None
        self.assertIsNone(kind(msg))

    def test_unknown_enum_values(self) -> None:
        """
        Enum values newer than our protos (a NatType of 7, a Failure of 99)
        are kept as numbers instead of failing the parse.
        """
        msg = parse_rendezvous(bytes.fromhex("42050a01311007"))
        assert msg is not None
        self.assertEqual(msg.punch_hole_request.id, "1")
        self.assertEqual(msg.punch_hole_request.nat_type, 7)
        msg = parse_rendezvous(bytes.fromhex("5a021863"))
        assert msg is not None
        self.assertEqual(msg.punch_hole_response.failure, 99)

    @given(st.binary(max_size=512))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """
        Whatever a UDP datagram or TCP frame contains, parse_rendezvous
        returns a message or None and never raises.
        """
        msg = parse_rendezvous(data)
        self.assertTrue(msg is None or isinstance(msg, RendezvousMessage))

    @given(st.sampled_from(VECTORS), st.data())
    def test_mutated_vectors(self, vector: tuple[str, str, object], data: st.DataObject) -> None:
        """
        Real messages with a byte changed, inserted or cut off never make
        parse_rendezvous raise.
        """
        raw = bytearray.fromhex(vector[0])
        index = data.draw(st.integers(min_value=0, max_value=len(raw)))
        byte = data.draw(st.integers(min_value=0, max_value=255))
        operation = data.draw(st.sampled_from(["replace", "insert", "truncate"]))
        if operation == "replace" and index < len(raw):
            raw[index] = byte
        elif operation == "insert":
            raw.insert(index, byte)
        else:
            del raw[index:]
        msg = parse_rendezvous(bytes(raw))
        self.assertTrue(msg is None or isinstance(msg, RendezvousMessage))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
