"""Tests for L{litedesk.discovery}: the LiteDesk v1 JSON discovery protocol."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from litedesk.discovery import (
    DiscoveryFactory,
    DiscoveryProtocol,
    DiscoveryRegistry,
    IDiscoveryPeer,
    ProtocolViolation,
    decode_request,
)
from litedesk.discovery.protocol import MAX_UNREAD_PUSH, GetPeerInfo, Ping, Register

# Deadline and health checks as in the shared profile (tests/__init__.py), so
# this module behaves the same when run on its own; more examples, since the
# inputs are small.
_HYPOTHESIS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_REPLY_TYPES = {"registered", "peer_list", "peer_info", "pong", "error", "connection_request"}


@implementer(IDiscoveryPeer)
class FakePeer:
    """An L{IDiscoveryPeer} that records what it was sent."""

    def __init__(self) -> None:
        self.sent: list[Mapping[str, object]] = []
        self.closed = False

    def send_message(self, message: Mapping[str, object]) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True


def frame(body: bytes) -> bytes:
    """Length-prefix C{body}."""
    return struct.pack(">I", len(body)) + body


def jframe(message: object) -> bytes:
    """One framed JSON message."""
    return frame(json.dumps(message).encode("utf-8"))


def frames(data: bytes) -> list[Any]:
    """Decode every whole frame in C{data} (asserting there is no leftover)."""
    out = []
    while data:
        assert len(data) >= 4, data
        (length,) = struct.unpack(">I", data[:4])
        assert len(data) >= 4 + length, data
        out.append(json.loads(data[4 : 4 + length].decode("utf-8")))
        data = data[4 + length :]
    return out


def assert_consistent(registry: DiscoveryRegistry) -> None:
    """The by-id and by-connection views of C{registry} agree."""
    records = list(registry.peers())
    assert len(records) == len(registry)
    assert len({id(r.connection) for r in records}) == len(records)
    for record in records:
        assert registry.lookup(record.peer_id) is record
        assert registry.peer_for(record.connection) is record
    listed = registry.list_peers()["peers"]
    assert isinstance(listed, list)
    assert [p["peer_id"] for p in listed] == [r.peer_id for r in records]


class RegistryTests(SynchronousTestCase):
    """The sans-IO L{DiscoveryRegistry}."""

    def setUp(self) -> None:
        self.registry = DiscoveryRegistry()
        self.a = FakePeer()
        self.b = FakePeer()

    def test_fake_peer_provides_interface(self) -> None:
        """The test double really provides L{IDiscoveryPeer}."""
        verifyObject(IDiscoveryPeer, self.a)

    def test_register(self) -> None:
        """Registering answers C{registered} with the address the server saw."""
        reply = self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        self.assertEqual(
            reply,
            {"type": "registered", "peer_id": "alice", "public_ip": "1.2.3.4", "public_port": 5000},
        )
        record = self.registry.lookup("alice")
        assert record is not None
        self.assertIs(record.connection, self.a)
        self.assertEqual(len(self.registry), 1)

    def test_reregister_same_connection_replaces(self) -> None:
        """Registering again on one connection replaces its entry and frees the old id."""
        self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        reply = self.registry.register(self.a, "alice2", "viewer", "1.2.3.4", 5000)
        self.assertEqual(reply["type"], "registered")
        self.assertIsNone(self.registry.lookup("alice"))
        record = self.registry.peer_for(self.a)
        assert record is not None
        self.assertEqual((record.peer_id, record.peer_type), ("alice2", "viewer"))
        self.assertEqual(len(self.registry), 1)
        self.assertFalse(self.a.closed)
        assert_consistent(self.registry)

    def test_reregister_same_id_updates_type(self) -> None:
        """Re-registering the same id on the same connection updates the type, no eviction."""
        self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        self.registry.register(self.a, "alice", "viewer", "1.2.3.4", 5000)
        record = self.registry.lookup("alice")
        assert record is not None
        self.assertEqual(record.peer_type, "viewer")
        self.assertEqual(self.a.sent, [])
        self.assertFalse(self.a.closed)

    def test_newer_connection_wins(self) -> None:
        """A held id moves to the newer connection; the old one is told and closed."""
        self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        reply = self.registry.register(self.b, "alice", "host", "5.6.7.8", 6000)
        self.assertEqual(reply["type"], "registered")
        record = self.registry.lookup("alice")
        assert record is not None
        self.assertIs(record.connection, self.b)
        self.assertIsNone(self.registry.peer_for(self.a))
        self.assertEqual(
            self.a.sent, [{"type": "error", "reason": "peer_id registered by another connection"}]
        )
        self.assertTrue(self.a.closed)
        # The evicted connection's close later must not remove the new holder.
        self.assertIsNone(self.registry.unregister(self.a))
        self.assertIs(self.registry.lookup("alice"), record)
        assert_consistent(self.registry)

    def test_list_peers(self) -> None:
        """C{peer_list} has every registered peer with its type and address."""
        self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        self.registry.register(self.b, "bob", "viewer", "::1", 6000)
        self.assertEqual(
            self.registry.list_peers(),
            {
                "type": "peer_list",
                "peers": [
                    {
                        "peer_id": "alice",
                        "peer_type": "host",
                        "public_ip": "1.2.3.4",
                        "public_port": 5000,
                    },
                    {
                        "peer_id": "bob",
                        "peer_type": "viewer",
                        "public_ip": "::1",
                        "public_port": 6000,
                    },
                ],
            },
        )

    def test_list_peers_empty(self) -> None:
        """With nobody registered, C{peer_list} is empty."""
        self.assertEqual(self.registry.list_peers(), {"type": "peer_list", "peers": []})

    def test_get_peer_info(self) -> None:
        """C{get_peer_info} answers the target's details and sends it C{connection_request}."""
        self.registry.register(self.a, "alice", "viewer", "1.2.3.4", 5000)
        self.registry.register(self.b, "bob", "host", "5.6.7.8", 6000)
        reply = self.registry.get_peer_info(self.a, "bob")
        self.assertEqual(
            reply,
            {
                "type": "peer_info",
                "peer_id": "bob",
                "peer_type": "host",
                "public_ip": "5.6.7.8",
                "public_port": 6000,
            },
        )
        self.assertEqual(
            self.b.sent,
            [
                {
                    "type": "connection_request",
                    "from_peer_id": "alice",
                    "from_peer_type": "viewer",
                    "from_public_ip": "1.2.3.4",
                    "from_public_port": 5000,
                }
            ],
        )
        self.assertEqual(self.a.sent, [])

    def test_get_peer_info_unregistered_asker(self) -> None:
        """Asking before registering is an error and nobody is notified."""
        self.registry.register(self.b, "bob", "host", "5.6.7.8", 6000)
        reply = self.registry.get_peer_info(self.a, "bob")
        self.assertEqual(reply, {"type": "error", "reason": "register before get_peer_info"})
        self.assertEqual(self.b.sent, [])

    def test_get_peer_info_unknown_target(self) -> None:
        """Asking for an id nobody holds is an error."""
        self.registry.register(self.a, "alice", "viewer", "1.2.3.4", 5000)
        reply = self.registry.get_peer_info(self.a, "nobody")
        self.assertEqual(reply, {"type": "error", "reason": "unknown peer"})

    def test_unregister(self) -> None:
        """A closed connection leaves the list; closing an unregistered one is harmless."""
        self.registry.register(self.a, "alice", "host", "1.2.3.4", 5000)
        self.registry.register(self.b, "bob", "host", "1.2.3.4", 5001)
        removed = self.registry.unregister(self.a)
        assert removed is not None
        self.assertEqual(removed.peer_id, "alice")
        self.assertIsNone(self.registry.lookup("alice"))
        self.assertIsNone(self.registry.unregister(FakePeer()))
        self.assertEqual([r.peer_id for r in self.registry.peers()], ["bob"])
        assert_consistent(self.registry)

    def test_cap(self) -> None:
        """Past C{max_peers} new registrations get an error; replacing or leaving frees room."""
        registry = DiscoveryRegistry(max_peers=2)
        registry.register(self.a, "alice", "host", "1.2.3.4", 1)
        registry.register(self.b, "bob", "host", "1.2.3.4", 2)
        c = FakePeer()
        self.assertEqual(
            registry.register(c, "carol", "host", "1.2.3.4", 3),
            {"type": "error", "reason": "registry full"},
        )
        self.assertIsNone(registry.peer_for(c))
        # Renaming an existing entry and taking over a held id don't grow the table.
        self.assertEqual(
            registry.register(self.a, "alice2", "host", "1.2.3.4", 1)["type"], "registered"
        )
        self.assertEqual(registry.register(c, "bob", "host", "1.2.3.4", 3)["type"], "registered")
        self.assertTrue(self.b.closed)
        registry.unregister(self.a)
        self.assertEqual(
            registry.register(self.a, "alice", "host", "1.2.3.4", 1)["type"], "registered"
        )
        self.assertEqual(len(registry), 2)
        assert_consistent(registry)

    def test_invalid_values_rejected(self) -> None:
        """Empty, oversize or non-Unicode ids and oversize types are refused, no side effects."""
        for peer_id, peer_type in [("", "t"), ("x" * 65, "t"), ("\ud800", "t"), ("ok", "t" * 65)]:
            reply = self.registry.register(self.a, peer_id, peer_type, "1.2.3.4", 1)
            self.assertEqual(reply["type"], "error")
        self.assertEqual(len(self.registry), 0)
        self.assertEqual(
            self.registry.register(self.a, "x" * 64, "", "1.2.3.4", 1)["type"], "registered"
        )

    def test_negative_cap(self) -> None:
        """A negative C{max_peers} is a configuration error."""
        self.assertRaises(ValueError, DiscoveryRegistry, -1)


class DecodeTests(SynchronousTestCase):
    """L{decode_request} turns bodies into requests or L{ProtocolViolation}."""

    def test_requests(self) -> None:
        """Each client message type decodes, and unknown extra fields are ignored."""
        self.assertEqual(
            decode_request(b'{"type":"register","peer_id":"a","peer_type":"host","x":1}'),
            Register("a", "host"),
        )
        self.assertEqual(
            decode_request(b'{"type":"get_peer_info","target_id":"b"}'), GetPeerInfo("b")
        )
        self.assertEqual(decode_request(b' {"type": "ping"} '), Ping())

    def test_violations(self) -> None:
        """Malformed bodies raise L{ProtocolViolation} with a readable reason."""
        for body in [b"\xff", b"{", b"[]", b"NaN", b'{"x":NaN,"type":"ping"}', b"[" * 100000]:
            with self.assertRaises(ProtocolViolation):
                decode_request(body)


# (name, body, reason) for every bad input that closes the connection.
BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("not utf-8", b'{"type":"ping","x":"\xff"}', "message is not UTF-8"),
    ("bad json", b'{"type":"ping"', "message is not valid JSON"),
    ("empty body", b"", "message is not valid JSON"),
    ("nan", b'{"type":"ping","x":NaN}', "message is not valid JSON"),
    ("deep nesting", b"[" * 60000, "message is nested too deeply"),
    ("array", b'["type","ping"]', "message is not a JSON object"),
    ("string", b'"ping"', "message is not a JSON object"),
    ("number", b"42", "message is not a JSON object"),
    ("null", b"null", "message is not a JSON object"),
    ("no type", b'{"peer_id":"a"}', "message has no string 'type'"),
    ("type not string", b'{"type":1}', "message has no string 'type'"),
    ("unknown type", b'{"type":"frobnicate"}', "unknown message type"),
    ("server-only type", b'{"type":"registered"}', "unknown message type"),
    ("missing peer_id", b'{"type":"register","peer_type":"h"}', "missing field 'peer_id'"),
    ("missing peer_type", b'{"type":"register","peer_id":"a"}', "missing field 'peer_type'"),
    (
        "null peer_id",
        b'{"type":"register","peer_id":null,"peer_type":"h"}',
        "field 'peer_id' must be a string",
    ),
    (
        "int peer_id",
        b'{"type":"register","peer_id":7,"peer_type":"h"}',
        "field 'peer_id' must be a string",
    ),
    (
        "list peer_type",
        b'{"type":"register","peer_id":"a","peer_type":[]}',
        "field 'peer_type' must be a string",
    ),
    (
        "empty peer_id",
        b'{"type":"register","peer_id":"","peer_type":"h"}',
        "peer_id must not be empty",
    ),
    (
        "oversize peer_id",
        b'{"type":"register","peer_id":"' + b"x" * 65 + b'","peer_type":"h"}',
        "peer_id is longer than 64 characters",
    ),
    (
        "lone surrogate peer_id",
        b'{"type":"register","peer_id":"\\ud800","peer_type":"h"}',
        "peer_id is not valid Unicode text",
    ),
    (
        "oversize peer_type",
        b'{"type":"register","peer_id":"a","peer_type":"' + b"t" * 65 + b'"}',
        "peer_type is longer than 64 characters",
    ),
    ("missing target_id", b'{"type":"get_peer_info"}', "missing field 'target_id'"),
    (
        "bool target_id",
        b'{"type":"get_peer_info","target_id":true}',
        "field 'target_id' must be a string",
    ),
    (
        "empty target_id",
        b'{"type":"get_peer_info","target_id":""}',
        "target_id must not be empty",
    ),
]


class ProtocolTestsMixin:
    """Builds protocols on L{StringTransport}s sharing one registry and clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = DiscoveryRegistry()
        self.factory = DiscoveryFactory(self.registry, self.clock)

    def connect(
        self,
        peer: IPv4Address | IPv6Address | None = None,
        factory: DiscoveryFactory | None = None,
    ) -> tuple[DiscoveryProtocol, StringTransport]:
        factory = factory or self.factory
        proto = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        proto.makeConnection(transport)
        return proto, transport

    def lose(self, proto: DiscoveryProtocol) -> None:
        proto.connectionLost(Failure(ConnectionError("gone")))

    def register(
        self, peer_id: str, peer_type: str = "host", port: int = 5000
    ) -> tuple[DiscoveryProtocol, StringTransport]:
        proto, transport = self.connect(IPv4Address("TCP", "10.1.1.1", port))
        proto.dataReceived(jframe({"type": "register", "peer_id": peer_id, "peer_type": peer_type}))
        [reply] = frames(transport.value())
        assert reply["type"] == "registered", reply
        transport.clear()
        return proto, transport


class ProtocolTests(ProtocolTestsMixin, SynchronousTestCase):
    """L{DiscoveryProtocol} over L{StringTransport}."""

    def test_provides_interface(self) -> None:
        """The protocol is an L{IDiscoveryPeer} the registry can push to."""
        proto, _ = self.connect()
        verifyObject(IDiscoveryPeer, proto)

    def test_register_reports_public_address(self) -> None:
        """C{registered} carries the TCP source address the server sees."""
        proto, transport = self.connect(IPv4Address("TCP", "203.0.113.7", 40000))
        proto.dataReceived(jframe({"type": "register", "peer_id": "a", "peer_type": "host"}))
        self.assertEqual(
            frames(transport.value()),
            [
                {
                    "type": "registered",
                    "peer_id": "a",
                    "public_ip": "203.0.113.7",
                    "public_port": 40000,
                }
            ],
        )
        self.assertFalse(transport.disconnecting)

    def test_v4_mapped_address_normalised(self) -> None:
        """A dual-stack listener's C{::ffff:a.b.c.d} peer is reported as plain IPv4."""
        proto, transport = self.connect(IPv6Address("TCP", "::ffff:198.51.100.9", 41000))
        proto.dataReceived(jframe({"type": "register", "peer_id": "a", "peer_type": "host"}))
        [reply] = frames(transport.value())
        self.assertEqual((reply["public_ip"], reply["public_port"]), ("198.51.100.9", 41000))

    def test_ipv6_address_kept(self) -> None:
        """A real IPv6 peer keeps its IPv6 address."""
        proto, transport = self.connect(IPv6Address("TCP", "2001:db8::1", 41000))
        proto.dataReceived(jframe({"type": "register", "peer_id": "a", "peer_type": "host"}))
        [reply] = frames(transport.value())
        self.assertEqual(reply["public_ip"], "2001:db8::1")

    def test_ping(self) -> None:
        """C{ping} is answered with C{pong}, registered or not."""
        proto, transport = self.connect()
        proto.dataReceived(jframe({"type": "ping"}))
        self.assertEqual(frames(transport.value()), [{"type": "pong"}])

    def _exchange(self) -> tuple[bytes, list[Any]]:
        data = jframe({"type": "register", "peer_id": "a", "peer_type": "host"}) + jframe(
            {"type": "list_peers"}
        )
        proto, transport = self.connect()
        proto.dataReceived(data)
        expected = frames(transport.value())
        self.assertEqual([m["type"] for m in expected], ["registered", "peer_list"])
        self.lose(proto)
        return data, expected

    def test_two_messages_in_one_chunk(self) -> None:
        """Two frames arriving in one read are both answered, in order."""
        _data, expected = self._exchange()
        self.assertEqual(expected[1]["peers"][0]["peer_id"], "a")

    def test_split_at_every_byte(self) -> None:
        """However the stream is split into two reads, the replies are the same."""
        data, expected = self._exchange()
        for cut in range(len(data) + 1):
            proto, transport = self.connect()
            proto.dataReceived(data[:cut])
            proto.dataReceived(data[cut:])
            self.assertEqual(frames(transport.value()), expected, f"cut at {cut}")
            self.lose(proto)
            self.assertEqual(len(self.registry), 0)

    def test_one_byte_at_a_time(self) -> None:
        """A stream fed one byte per read is answered as if it came whole."""
        data, expected = self._exchange()
        proto, transport = self.connect()
        for i in range(len(data)):
            proto.dataReceived(data[i : i + 1])
        self.assertEqual(frames(transport.value()), expected)

    def test_bad_inputs(self) -> None:
        """Each kind of bad message gets exactly one error, then the connection closes."""
        for name, body, reason in BAD_INPUTS:
            observer = EventLoggingObserver()
            globalLogPublisher.addObserver(observer)
            try:
                proto, transport = self.connect()
                # A valid ping queued behind the bad message must not be answered.
                proto.dataReceived(frame(body) + jframe({"type": "ping"}))
            finally:
                globalLogPublisher.removeObserver(observer)
            self.assertEqual(frames(transport.value()), [{"type": "error", "reason": reason}], name)
            self.assertTrue(transport.disconnecting, name)
            warnings = [e for e in observer if e["log_level"] == LogLevel.warn]
            self.assertEqual([e["reason"] for e in warnings], [reason], name)
            self.assertIn("{reason}", warnings[0]["log_format"])
            # Data still in flight after the close is ignored.
            proto.dataReceived(jframe({"type": "ping"}))
            self.assertEqual(len(frames(transport.value())), 1, name)
            self.lose(proto)

    def test_oversize_length(self) -> None:
        """A length prefix over 64 KiB gets an error and a close without waiting for the body."""
        proto, transport = self.connect()
        proto.dataReceived(struct.pack(">I", 65537) + b"{")
        self.assertEqual(
            frames(transport.value()),
            [{"type": "error", "reason": "message length 65537 exceeds 65536"}],
        )
        self.assertTrue(transport.disconnecting)
        proto.dataReceived(b"x" * 70000)
        self.assertEqual(len(frames(transport.value())), 1)

    def test_max_length_accepted(self) -> None:
        """A message of exactly 64 KiB (padded with whitespace) is accepted."""
        proto, transport = self.connect()
        body = b'{"type":"ping"}'
        proto.dataReceived(frame(body.ljust(65536, b" ")))
        self.assertEqual(frames(transport.value()), [{"type": "pong"}])

    def test_violation_after_register_removes_peer(self) -> None:
        """A registered peer that misbehaves is closed and leaves the list once closed."""
        proto, transport = self.register("a")
        proto.dataReceived(jframe([1]))
        self.assertTrue(transport.disconnecting)
        self.lose(proto)
        self.assertIsNone(self.registry.lookup("a"))

    def test_request_failures_keep_connection(self) -> None:
        """Unknown target and asking before registering are errors that keep the connection open."""
        proto, transport = self.connect()
        proto.dataReceived(jframe({"type": "get_peer_info", "target_id": "b"}))
        self.assertEqual(
            frames(transport.value()),
            [{"type": "error", "reason": "register before get_peer_info"}],
        )
        transport.clear()
        proto.dataReceived(jframe({"type": "register", "peer_id": "a", "peer_type": "v"}))
        proto.dataReceived(jframe({"type": "get_peer_info", "target_id": "nobody"}))
        self.assertEqual(frames(transport.value())[1], {"type": "error", "reason": "unknown peer"})
        self.assertFalse(transport.disconnecting)

    def test_registry_full_keeps_connection(self) -> None:
        """A full registry answers C{register} with an error but keeps serving the client."""
        factory = DiscoveryFactory(DiscoveryRegistry(max_peers=0), self.clock)
        proto, transport = self.connect(factory=factory)
        proto.dataReceived(jframe({"type": "register", "peer_id": "a", "peer_type": "h"}))
        proto.dataReceived(jframe({"type": "ping"}))
        self.assertEqual(
            frames(transport.value()),
            [{"type": "error", "reason": "registry full"}, {"type": "pong"}],
        )
        self.assertFalse(transport.disconnecting)

    def test_get_peer_info_notifies_target(self) -> None:
        """The target connection receives C{connection_request} with the asker's address."""
        _target, target_transport = self.register("b", "host", port=6000)
        asker, asker_transport = self.register("a", "viewer", port=5000)
        asker.dataReceived(jframe({"type": "get_peer_info", "target_id": "b"}))
        self.assertEqual(
            frames(asker_transport.value()),
            [
                {
                    "type": "peer_info",
                    "peer_id": "b",
                    "peer_type": "host",
                    "public_ip": "10.1.1.1",
                    "public_port": 6000,
                }
            ],
        )
        self.assertEqual(
            frames(target_transport.value()),
            [
                {
                    "type": "connection_request",
                    "from_peer_id": "a",
                    "from_peer_type": "viewer",
                    "from_public_ip": "10.1.1.1",
                    "from_public_port": 5000,
                }
            ],
        )

    def test_newer_connection_evicts_older(self) -> None:
        """Registering a held id closes the older connection; its close keeps the new entry."""
        old, old_transport = self.register("a", port=5000)
        new, _new_transport = self.register("a", port=5001)
        self.assertEqual(
            frames(old_transport.value()),
            [{"type": "error", "reason": "peer_id registered by another connection"}],
        )
        self.assertTrue(old_transport.disconnecting)
        self.lose(old)
        record = self.registry.lookup("a")
        assert record is not None
        self.assertIs(record.connection, new)

    def test_close_unregisters(self) -> None:
        """When a connection closes its peer leaves C{peer_list}."""
        a, a_transport = self.register("a")
        b, _ = self.register("b")
        self.lose(b)
        a.dataReceived(jframe({"type": "list_peers"}))
        [reply] = frames(a_transport.value())
        self.assertEqual([p["peer_id"] for p in reply["peers"]], ["a"])
        self.assertEqual(self.factory.connection_count, 1)

    def test_first_message_timeout(self) -> None:
        """A connection that sends nothing for 60 s gets an idle-timeout error and is closed."""
        _proto, transport = self.connect()
        self.clock.advance(59)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(frames(transport.value()), [{"type": "error", "reason": "idle timeout"}])
        self.assertTrue(transport.disconnecting)

    def test_partial_message_does_not_reset_timeout(self) -> None:
        """Trickling a frame byte by byte does not keep an unregistered connection alive."""
        proto, transport = self.connect()
        data = jframe({"type": "ping"})
        for i in range(len(data) - 1):
            self.clock.advance(10)
            proto.dataReceived(data[i : i + 1])
        self.assertTrue(transport.disconnecting)

    def test_messages_reset_timeout(self) -> None:
        """Each complete message restarts the idle countdown."""
        proto, transport = self.connect()
        for _ in range(5):
            self.clock.advance(50)
            proto.dataReceived(jframe({"type": "ping"}))
        self.assertFalse(transport.disconnecting)
        self.clock.advance(60)
        self.assertTrue(transport.disconnecting)

    def test_registered_peers_stay(self) -> None:
        """By default a registered peer is never timed out and no timer is kept for it."""
        _proto, transport = self.register("a")
        self.clock.advance(10 * 24 * 3600)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_registered_idle_timeout(self) -> None:
        """With C{registered_idle_timeout}, registered peers keep alive with C{ping}."""
        self.factory = DiscoveryFactory(self.registry, self.clock, registered_idle_timeout=300)
        proto, transport = self.register("a")
        self.clock.advance(299)
        proto.dataReceived(jframe({"type": "ping"}))
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(frames(transport.value())[-1], {"type": "error", "reason": "idle timeout"})

    def test_close_grace_abort(self) -> None:
        """A closed connection whose client never drains it is aborted after the grace period."""
        proto, transport = self.connect()
        proto.dataReceived(jframe(1))
        self.assertFalse(transport.disconnected)
        self.clock.advance(10)
        self.assertTrue(transport.disconnected)

    def test_connection_lost_cancels_timers(self) -> None:
        """Once the connection is gone no timer is left behind."""
        proto, _transport = self.connect()
        proto.dataReceived(jframe(1))
        self.lose(proto)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.factory.connection_count, 0)

    def test_registers_as_producer(self) -> None:
        """The protocol is its own transport's streaming producer and lets go when closing."""
        proto, transport = self.connect()
        self.assertIs(transport.producer, proto)
        self.assertTrue(transport.streaming)
        proto.dataReceived(jframe(1))
        self.assertIsNone(transport.producer)

    def test_paused_stops_reading(self) -> None:
        """While the client's write buffer is full, queued requests wait; they run on resume."""
        proto, transport = self.connect()
        proto.pauseProducing()
        proto.dataReceived(jframe({"type": "ping"}) + jframe({"type": "ping"}))
        self.assertEqual(transport.value(), b"")
        proto.resumeProducing()
        self.assertEqual(frames(transport.value()), [{"type": "pong"}, {"type": "pong"}])

    def test_slow_consumer_dropped(self) -> None:
        """A target that never reads is aborted once 64 KiB of pushes pile up, and leaves."""
        target, target_transport = self.register("b")
        target.pauseProducing()
        asker, asker_transport = self.register("a")
        ask = jframe({"type": "get_peer_info", "target_id": "b"})
        sent = 0
        while not target_transport.disconnected:
            asker.dataReceived(ask)
            sent += 1
            self.assertLess(sent, MAX_UNREAD_PUSH)
        self.assertLessEqual(len(target_transport.value()), MAX_UNREAD_PUSH + 4 * sent)
        self.lose(target)
        self.assertIsNone(self.registry.lookup("b"))
        self.assertFalse(asker_transport.disconnecting)

    def test_factory_settings(self) -> None:
        """The factory hands its registry, clock and timeouts to each protocol."""
        factory = DiscoveryFactory(
            self.registry, self.clock, idle_timeout=5, registered_idle_timeout=7, close_grace=1
        )
        proto, transport = self.connect(factory=factory)
        self.assertIs(proto.factory, factory)
        self.assertEqual(factory.connection_count, 1)
        self.clock.advance(5)
        self.assertTrue(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
_ids = st.sampled_from(["a", "b", "c", ""]) | st.text(max_size=70)
_message_like = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["register", "list_peers", "get_peer_info", "ping", "nope"])
        | _json_values
    },
    optional={
        "peer_id": _ids | _json_values,
        "peer_type": st.text(max_size=70) | _json_values,
        "target_id": _ids | _json_values,
    },
)


BYSTANDER = "bystander-7f3a9c"


class FuzzTests(ProtocolTestsMixin, SynchronousTestCase):
    """Arbitrary input never breaks the protocol or the registry."""

    def setUp(self) -> None:
        super().setUp()
        # Another client, registered throughout, under an id the fuzzers won't hit.
        self.bystander, self.bystander_transport = self.register(BYSTANDER, port=1)

    def check_outcome(self, proto: DiscoveryProtocol, transport: StringTransport) -> None:
        replies = frames(transport.value())
        for reply in replies:
            self.assertIsInstance(reply, dict)
            self.assertIn(reply["type"], _REPLY_TYPES)
        if transport.disconnecting:
            self.assertEqual(replies[-1]["type"], "error")
            # Nothing more is answered after the close.
            before = transport.value()
            proto.dataReceived(jframe({"type": "ping"}))
            self.assertEqual(transport.value(), before)
        assert_consistent(self.registry)
        self.lose(proto)
        assert_consistent(self.registry)
        self.assertIsNone(self.registry.peer_for(proto))
        # The listener keeps serving everyone else.
        self.bystander.dataReceived(jframe({"type": "ping"}))
        self.assertEqual(frames(self.bystander_transport.value())[-1]["type"], "pong")
        self.bystander_transport.clear()
        self.assertEqual(self.factory.connection_count, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)

    @_HYPOTHESIS
    @given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
    def test_arbitrary_bytes(self, data: bytes, cuts: list[int]) -> None:
        """Random bytes, split anywhere, give valid replies or one error then close."""
        proto, transport = self.connect()
        start = 0
        for cut in [*sorted(set(cuts)), len(data)]:
            proto.dataReceived(data[start:cut])
            start = max(start, cut)
        self.check_outcome(proto, transport)

    @_HYPOTHESIS
    @given(bodies=st.lists(st.binary(max_size=100), max_size=5))
    def test_arbitrary_framed_bytes(self, bodies: list[bytes]) -> None:
        """Well-framed random bodies give valid replies or one error then close."""
        proto, transport = self.connect()
        proto.dataReceived(b"".join(frame(b) for b in bodies))
        self.check_outcome(proto, transport)

    @_HYPOTHESIS
    @given(values=st.lists(_json_values | _message_like, min_size=1, max_size=6))
    def test_arbitrary_json(self, values: list[object]) -> None:
        """Arbitrary JSON and near-miss messages give valid replies or one error then close."""
        proto, transport = self.connect()
        for value in values:
            proto.dataReceived(jframe(value))
        self.check_outcome(proto, transport)

    @_HYPOTHESIS
    @given(
        ops=st.lists(
            st.tuples(
                st.integers(0, 3),
                st.sampled_from(["register", "list", "get", "ping", "close", "garbage"]),
                st.sampled_from(["x", "y", "z"]),
            ),
            max_size=30,
        )
    )
    def test_interleaved_connections(self, ops: list[tuple[int, str, str]]) -> None:
        """Any order of registers, lookups and closes over several connections keeps state right."""
        conns: dict[int, tuple[DiscoveryProtocol, StringTransport]] = {}
        model: dict[str, int] = {}  # peer_id -> connection slot
        for slot, op, name in ops:
            if slot not in conns:
                conns[slot] = self.connect(IPv4Address("TCP", "10.0.0.2", 1000 + slot))
            proto, transport = conns[slot]
            if op == "register":
                proto.dataReceived(jframe({"type": "register", "peer_id": name, "peer_type": "h"}))
                for key, owner in list(model.items()):
                    if owner == slot or key == name:
                        del model[key]
                        if owner != slot:
                            self.lose(conns.pop(owner)[0])
                model[name] = slot
            elif op == "list":
                proto.dataReceived(jframe({"type": "list_peers"}))
            elif op == "get":
                proto.dataReceived(jframe({"type": "get_peer_info", "target_id": name}))
            elif op == "ping":
                proto.dataReceived(jframe({"type": "ping"}))
            else:
                if op == "garbage":
                    proto.dataReceived(frame(b"\x00garbage"))
                    self.assertTrue(transport.disconnecting)
                self.lose(proto)
                del conns[slot]
                model = {k: v for k, v in model.items() if v != slot}
            assert_consistent(self.registry)
            self.assertEqual({r.peer_id for r in self.registry.peers()} - {BYSTANDER}, set(model))
        for proto, _ in conns.values():
            self.lose(proto)
        self.assertEqual([r.peer_id for r in self.registry.peers()], [BYSTANDER])


class _Client(Int32StringReceiver):
    """A test client that queues the decoded messages it receives."""

    MAX_LENGTH = 1 << 24

    def __init__(self) -> None:
        self.messages: DeferredQueue[Any] = DeferredQueue()
        self.lost: Deferred[None] = Deferred()

    def stringReceived(self, string: bytes) -> None:
        self.messages.put(json.loads(string))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)

    @property
    def tcp(self) -> ITCPTransport:
        """The connected TCP transport."""
        assert ITCPTransport.providedBy(self.transport)
        return self.transport

    @property
    def local_port(self) -> int:
        """The client's own port, which the server sees as its public port."""
        host = self.tcp.getHost()
        assert isinstance(host, IPv4Address)
        return host.port

    def send(self, message: object) -> None:
        self.sendString(json.dumps(message).encode("utf-8"))

    async def next(self) -> Any:
        d = self.messages.get()
        d.addTimeout(10, reactor)
        return await d

    async def ask(self, message: object) -> Any:
        self.send(message)
        return await self.next()


class IntegrationTests(TestCase):
    """The factory on a real loopback TCP listener with real clients."""

    async def listen(self) -> None:
        """Start the server on a free loopback port."""
        self.registry = DiscoveryRegistry()
        self.factory = DiscoveryFactory(self.registry, reactor)
        # Cleanups run last-in first-out: clients close, the port stops, then we
        # wait for the server side of every connection to be gone.
        self.addCleanup(self._drain)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.factory)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def _drain(self) -> None:
        for _ in range(1000):
            if self.factory.connection_count == 0:
                return
            await deferLater(reactor, 0.01)
        self.fail("server connections did not close")

    async def client(self) -> _Client:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
        client: _Client = await connectProtocol(endpoint, _Client())
        self.addCleanup(self._close, client)
        return client

    def _close(self, client: _Client) -> Deferred[None]:
        if not client.lost.called:
            client.tcp.loseConnection()
        return client.lost

    async def test_discovery_end_to_end(self) -> None:
        """Two real clients register, list, look each other up and see departures."""
        await self.listen()
        a = await self.client()
        b = await self.client()
        a_port = a.local_port
        reply = await a.ask({"type": "register", "peer_id": "alice", "peer_type": "viewer"})
        self.assertEqual(
            reply,
            {
                "type": "registered",
                "peer_id": "alice",
                "public_ip": "127.0.0.1",
                "public_port": a_port,
            },
        )
        reply = await b.ask({"type": "register", "peer_id": "bob", "peer_type": "host"})
        self.assertEqual(reply["type"], "registered")

        reply = await a.ask({"type": "list_peers"})
        self.assertEqual(
            sorted((p["peer_id"], p["peer_type"]) for p in reply["peers"]),
            [("alice", "viewer"), ("bob", "host")],
        )

        reply = await a.ask({"type": "get_peer_info", "target_id": "bob"})
        self.assertEqual(
            reply,
            {
                "type": "peer_info",
                "peer_id": "bob",
                "peer_type": "host",
                "public_ip": "127.0.0.1",
                "public_port": b.local_port,
            },
        )
        request = await b.next()
        self.assertEqual(
            request,
            {
                "type": "connection_request",
                "from_peer_id": "alice",
                "from_peer_type": "viewer",
                "from_public_ip": "127.0.0.1",
                "from_public_port": a_port,
            },
        )

        b.tcp.loseConnection()
        await b.lost
        for _ in range(500):
            reply = await a.ask({"type": "list_peers"})
            if [p["peer_id"] for p in reply["peers"]] == ["alice"]:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual([p["peer_id"] for p in reply["peers"]], ["alice"])

    async def test_oversize_length_isolated(self) -> None:
        """An oversize frame gets the error and a close while another client keeps being served."""
        await self.listen()
        good = await self.client()
        bad = await self.client()
        reply = await good.ask({"type": "register", "peer_id": "good", "peer_type": "host"})
        self.assertEqual(reply["type"], "registered")

        bad.tcp.write(struct.pack(">I", 65537) + b"{" * 100)
        self.assertEqual(
            await bad.next(), {"type": "error", "reason": "message length 65537 exceeds 65536"}
        )
        await bad.lost

        self.assertEqual(await good.ask({"type": "ping"}), {"type": "pong"})
        reply = await good.ask({"type": "list_peers"})
        self.assertEqual([p["peer_id"] for p in reply["peers"]], ["good"])
