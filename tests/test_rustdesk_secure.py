"""RustDesk's secure channel: vectors, handshake decisions, framing, deadline, loopback.

The hex strings are the computed vectors of the RustDesk session reference
(T1, T2, T4, T6-T10, T15); the SignedId/PublicKey flow and the counters were
checked against hbb_common's C{tcp.rs} and RustDesk's C{server.rs} and
C{client.rs} (docs/protocol.rst §11).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, cast

from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IAddress, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.proto import message_pb2 as m
from litedesk.rustdesk import (
    ChannelTransport,
    SecureChannelProtocol,
    host_key_from_signed_id_pk,
    rustdesk_client_factory,
    rustdesk_host_factory,
)
from litedesk.rustdesk.secure import (
    INSECURE_REFUSAL,
    ClientHandshake,
    DecryptError,
    HostHandshake,
    SecretChannel,
    nonce,
)
from litedesk.session.framing import MessageProtocol
from litedesk.wire.bytescodec import FrameDecoder, encode_frame, encode_header
from litedesk.wire.keys import sign_id_pk
from tests.support.polling import until
from tests.support.vectors import FRAME_HEADERS

PEER_ID = "123456789"
HOST_SEED = bytes([1]) * 32
HOST_EPHEMERAL = bytes([2]) * 32
CLIENT_EPHEMERAL = bytes([3]) * 32
SERVER_SEED = bytes([4]) * 32
SESSION_KEY = bytes(range(32))

T4_HASH = bytes.fromhex("4a060a0173120163")
T6_FRAME = "60ca47911cc834e970e1b1d49c83122ff5883d8021810df9ad"
T6_SEQ2 = "1de36c73354f27423bdf9ca2d70efc946118c84e39369c44"
T6_EMPTY = "15c58daf8a39a27eb97e2b88fc37c3f1"
T7_FRAME = (
    "c5011a6f0a6de5f0553884b884c9e98f249a4e24b0e0daddb0b7670cdfcc2e9f0bed1c1ef40ca0798dda7fcab68199"
    "5481c217e35d0996fa64d92d723fc52723ce5005fecd010a093132333435363738391220ce8d3ad1ccb633ec7b70c1"
    "7814a5c76ecd029685050d344745ba05870e587d59"
)
T8_FRAME = (
    "590122540a205dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef221230c28d90ec2da3f7"
    "078f02c690e7a2ec57e4b7f6da3e5957f79eb585a0c54042bdbf1f990787920b95e8786330f276bc3a"
)
T9_SIGNED = (
    "282137edc983341d7c7b4f36be3046d49f5cffd15fa6a1dcb429b06fe615ee18bf6de321d7cc3e363a5e5f49b04a13"
    "f11f869c995bbe0a8f0c39991566f7a50f0a0931323334353637383912208a88e3dd7409f195fd52db2d3cba5d72ca"
    "6709bf1d94121bf3748801b40f6f5c"
)
T10_LOGIN = (
    "3a620a0931323334353637383912203c6890a42f2d96c9be9f2c4fb76726a2746828a6c7623c0f51bf972940b8dd9a"
    "22093938373635343332312a06546573746572320e520c0801280130013a0410011801502a5a05312e342e39620"
    "06a054c696e7578"
)


def _host_handshake(allow_insecure: bool = False) -> HostHandshake:
    return HostHandshake(
        SigningKey(HOST_SEED),
        PEER_ID,
        allow_insecure=allow_insecure,
        ephemeral=PrivateKey(HOST_EPHEMERAL),
    )


def _client_handshake(
    host_key: VerifyKey | None = None, peer_id: str = PEER_ID, allow_insecure: bool = False
) -> ClientHandshake:
    return ClientHandshake(
        host_key if host_key is not None else SigningKey(HOST_SEED).verify_key,
        peer_id,
        allow_insecure=allow_insecure,
        ephemeral=PrivateKey(CLIENT_EPHEMERAL),
        session_key=SESSION_KEY,
    )


def _payload(frame_hex: str) -> bytes:
    (payload,) = FrameDecoder().feed(bytes.fromhex(frame_hex))
    return payload


def _parse(payload: bytes) -> m.Message:
    msg = m.Message()
    msg.ParseFromString(payload)
    return msg


class VectorTests(SynchronousTestCase):
    """Every vector of the reference that concerns framing and the key exchange."""

    def test_t1_headers(self) -> None:
        cases = FRAME_HEADERS
        for length, header in cases.items():
            self.assertEqual(encode_header(length).hex(), header, length)

    def test_t2_nonces(self) -> None:
        self.assertEqual(nonce(1), b"\x01" + bytes(23))
        self.assertEqual(nonce(2), b"\x02" + bytes(23))
        self.assertEqual(nonce(256), b"\x00\x01" + bytes(22))

    def test_t4_t6_sealed_frames(self) -> None:
        sender = SecretChannel(SESSION_KEY)
        self.assertEqual(encode_frame(sender.seal(T4_HASH)).hex(), T6_FRAME)
        self.assertEqual(sender.seal(T4_HASH).hex(), T6_SEQ2)
        self.assertEqual(SecretChannel(SESSION_KEY).seal(b"").hex(), T6_EMPTY)
        receiver = SecretChannel(SESSION_KEY)
        self.assertEqual(receiver.open(_payload(T6_FRAME)), T4_HASH)
        self.assertEqual(receiver.open(bytes.fromhex(T6_SEQ2)), T4_HASH)
        self.assertEqual((receiver.recv_seq, sender.send_seq), (2, 2))

    def test_t7_signed_id(self) -> None:
        self.assertTrue(bytes(SigningKey(HOST_SEED).verify_key).hex().startswith("8a88e3dd"))
        self.assertTrue(bytes(PrivateKey(HOST_EPHEMERAL).public_key).hex().startswith("ce8d3ad1"))
        self.assertEqual(encode_frame(_host_handshake().begin()).hex(), T7_FRAME)

    def test_t8_public_key(self) -> None:
        outcome = _client_handshake().receive(_payload(T7_FRAME))
        assert outcome.reply is not None
        self.assertEqual(encode_frame(outcome.reply).hex(), T8_FRAME)
        self.assertEqual(outcome.key, SESSION_KEY)
        self.assertIsNone(outcome.refusal)
        host = _host_handshake().receive(_payload(T8_FRAME))
        self.assertEqual((host.key, host.reply, host.refusal), (SESSION_KEY, None, None))

    def test_t9_server_signed_host_key(self) -> None:
        server_pk = bytes(SigningKey(SERVER_SEED).verify_key)
        host_pk = bytes(SigningKey(HOST_SEED).verify_key)
        signed = bytes.fromhex(T9_SIGNED)
        self.assertEqual(sign_id_pk(SigningKey(SERVER_SEED), PEER_ID, host_pk), signed)
        self.assertEqual(host_key_from_signed_id_pk(server_pk, signed, PEER_ID), VerifyKey(host_pk))
        self.assertIsNone(host_key_from_signed_id_pk(server_pk, signed, "987654321"))
        tampered = bytearray(signed)
        tampered[-1] ^= 1
        self.assertIsNone(host_key_from_signed_id_pk(server_pk, bytes(tampered), PEER_ID))
        self.assertIsNone(host_key_from_signed_id_pk(host_pk, signed, PEER_ID))
        short = sign_id_pk(SigningKey(SERVER_SEED), PEER_ID, host_pk[:31])
        self.assertIsNone(host_key_from_signed_id_pk(server_pk, short, PEER_ID))

    def test_t10_sealed_login_request(self) -> None:
        frame = encode_frame(SecretChannel(SESSION_KEY).seal(bytes.fromhex(T10_LOGIN)))
        self.assertTrue(frame.hex().startswith("d101bb8ad38cfaf3850f"), frame[:10].hex())

    def test_t15_short_payloads_bypass_counter(self) -> None:
        sender = SecretChannel(SESSION_KEY)
        receiver = SecretChannel(SESSION_KEY)
        self.assertEqual(receiver.open(b""), b"")
        self.assertEqual(receiver.open(b"\x00"), b"\x00")
        self.assertEqual(receiver.recv_seq, 0)
        self.assertEqual(receiver.open(sender.seal(T4_HASH)), T4_HASH)
        self.assertEqual(receiver.recv_seq, 1)


class CounterTests(SynchronousTestCase):
    def test_replay_and_reorder_fail(self) -> None:
        sender = SecretChannel(SESSION_KEY)
        first, second = sender.seal(b"one"), sender.seal(b"two")
        receiver = SecretChannel(SESSION_KEY)
        self.assertEqual(receiver.open(first), b"one")
        self.assertRaises(DecryptError, receiver.open, first)
        self.assertRaises(DecryptError, SecretChannel(SESSION_KEY).open, second)

    def test_other_key_fails(self) -> None:
        sealed = SecretChannel(SESSION_KEY).seal(b"x")
        self.assertRaises(DecryptError, SecretChannel(bytes(32)).open, sealed)

    def test_key_length(self) -> None:
        self.assertRaises(ValueError, SecretChannel, bytes(31))

    @given(st.lists(st.binary(max_size=300), max_size=12))
    def test_round_trip(self, payloads: list[bytes]) -> None:
        sender, receiver = SecretChannel(SESSION_KEY), SecretChannel(SESSION_KEY)
        for p in payloads:
            self.assertEqual(receiver.open(sender.seal(p)), p)
        self.assertEqual(receiver.recv_seq, len(payloads))

    @given(st.binary(min_size=2, max_size=200))
    def test_garbage_raises_only_decrypt_error(self, data: bytes) -> None:
        with self.assertRaises(DecryptError):
            SecretChannel(SESSION_KEY).open(data)


def _message(**fields: Any) -> bytes:
    return m.Message(**fields).SerializeToString()


class HostHandshakeTests(SynchronousTestCase):
    def _refused_with_login_error(self, payload: bytes) -> None:
        outcome = _host_handshake().receive(payload)
        assert outcome.reply is not None and outcome.refusal is not None
        self.assertIn("insecure session refused", outcome.refusal)
        self.assertEqual(_parse(outcome.reply).login_response.error, INSECURE_REFUSAL)
        self.assertIsNone(outcome.key)

    def test_empty_public_key_refused(self) -> None:
        self._refused_with_login_error(_message(public_key=m.PublicKey()))

    def test_empty_message_refused(self) -> None:
        self._refused_with_login_error(b"")

    def test_other_message_refused(self) -> None:
        self._refused_with_login_error(T4_HASH)

    def test_insecure_allowed(self) -> None:
        for payload in (b"", _message(public_key=m.PublicKey()), T4_HASH):
            outcome = _host_handshake(allow_insecure=True).receive(payload)
            self.assertEqual((outcome.reply, outcome.key, outcome.refusal), (None, None, None))
            self.assertIsNotNone(outcome.insecure)

    def test_bad_key_length(self) -> None:
        outcome = _host_handshake(allow_insecure=True).receive(
            _message(public_key=m.PublicKey(asymmetric_value=bytes(31)))
        )
        self.assertEqual(outcome.refusal, "handshake: PublicKey of 31 bytes")
        self.assertIsNone(outcome.reply)

    def test_sealed_key_does_not_open(self) -> None:
        msg = _parse(_payload(T8_FRAME))
        sealed = bytearray(msg.public_key.symmetric_value)
        sealed[0] ^= 1
        msg.public_key.symmetric_value = bytes(sealed)
        outcome = _host_handshake().receive(msg.SerializeToString())
        self.assertEqual(outcome.refusal, "handshake: sealed session key does not open")

    def test_sealed_key_wrong_length(self) -> None:
        client = PrivateKey(CLIENT_EPHEMERAL)
        from nacl.public import Box

        sealed = Box(client, PrivateKey(HOST_EPHEMERAL).public_key).encrypt(bytes(16), bytes(24))
        payload = _message(
            public_key=m.PublicKey(
                asymmetric_value=bytes(client.public_key), symmetric_value=sealed.ciphertext
            )
        )
        self.assertEqual(
            _host_handshake().receive(payload).refusal, "handshake: session key of 16 bytes"
        )

    def test_garbage(self) -> None:
        outcome = _host_handshake(allow_insecure=True).receive(b"\xff\xff")
        self.assertEqual(outcome.refusal, "handshake: first frame is not a Message")

    def test_fresh_ephemeral_per_connection(self) -> None:
        key = SigningKey(HOST_SEED)
        a, b = HostHandshake(key, PEER_ID).begin(), HostHandshake(key, PEER_ID).begin()
        self.assertNotEqual(a, b)

    @given(st.binary(max_size=200))
    def test_any_payload_is_judged(self, data: bytes) -> None:
        outcome = _host_handshake().receive(data)
        self.assertTrue(outcome.refusal is not None or outcome.key is not None)


class ClientHandshakeTests(SynchronousTestCase):
    def test_no_host_key(self) -> None:
        client = ClientHandshake(None, PEER_ID)
        outcome = client.begin()
        assert outcome is not None
        self.assertEqual(outcome.refusal, "insecure session refused: no server-signed host key")
        self.assertIsNone(outcome.reply)
        allowed = ClientHandshake(None, PEER_ID, allow_insecure=True).begin()
        assert allowed is not None
        self.assertEqual((allowed.reply, allowed.refusal), (b"", None))
        self.assertIsNone(_client_handshake().begin())

    def test_wrong_signer(self) -> None:
        other = SigningKey(bytes([9]) * 32).verify_key
        self.assertIn(
            "not signed", _client_handshake(other).receive(_payload(T7_FRAME)).refusal or ""
        )
        outcome = _client_handshake(other, allow_insecure=True).receive(_payload(T7_FRAME))
        # RustDesk answers a bad signature with an empty PublicKey.
        self.assertEqual(outcome.reply, bytes.fromhex("2200"))
        self.assertIsNone(outcome.key)

    def test_wrong_id(self) -> None:
        outcome = _client_handshake(peer_id="987654321").receive(_payload(T7_FRAME))
        self.assertEqual(outcome.refusal, "insecure session refused: SignedId names id '123456789'")

    def test_not_signed_id(self) -> None:
        self.assertIsNotNone(_client_handshake().receive(T4_HASH).refusal)
        outcome = _client_handshake(allow_insecure=True).receive(b"\xff")
        self.assertEqual((outcome.reply, outcome.refusal), (b"", None))

    @given(st.binary(max_size=200))
    def test_any_payload_is_judged(self, data: bytes) -> None:
        outcome = _client_handshake().receive(data)
        self.assertIsNotNone(outcome.refusal)


# -- the Twisted protocol on in-memory transports ---------------------------


class Recorder(Protocol):
    """An inner protocol that records the messages it receives."""

    def __init__(self, on_connect: list[bytes] | None = None) -> None:
        self.received: list[m.Message] = []
        self.decoder = FrameDecoder()
        self.on_connect = on_connect or []
        self.lost: Failure | None = None
        self.garbage = 0

    def connectionMade(self) -> None:
        for payload in self.on_connect:
            self.transport.write(encode_frame(payload))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        for payload in self.decoder.feed(data):
            try:
                self.received.append(_parse(payload))
            except DecodeError:
                # A payload of at most one byte passes unsealed, as in
                # RustDesk (§11.3); one that is not a Message is the inner
                # protocol's to refuse, and is not recorded as a message.
                self.garbage += 1

    def connectionLost(self, reason: Failure = Failure(Exception())) -> None:  # noqa: B008
        self.lost = reason


class RecorderFactory(Factory):
    def __init__(self, on_connect: list[bytes] | None = None) -> None:
        self.on_connect = on_connect
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: IAddress | None) -> Recorder:
        proto = Recorder(self.on_connect)
        self.built.append(proto)
        return proto


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _close_reasons(events: EventLoggingObserver) -> list[str]:
    return [
        str(e["reason"])
        for e in events
        if e["log_level"] == LogLevel.warn and "closed" in e.get("log_format", "")
    ]


class Side:
    """One end of an in-memory connection."""

    def __init__(self, factory: Factory) -> None:
        proto = factory.buildProtocol(None)
        assert isinstance(proto, SecureChannelProtocol)
        self.proto = proto
        self.transport = StringTransport()

    def take(self) -> bytes:
        data: bytes = self.transport.value()
        self.transport.clear()
        return data


def _pump(a: Side, b: Side) -> None:
    for _ in range(20):
        data_a, data_b = a.take(), b.take()
        if not data_a and not data_b:
            return
        if data_a and not b.transport.disconnecting:
            b.proto.dataReceived(data_a)
        if data_b and not a.transport.disconnecting:
            a.proto.dataReceived(data_b)


class ChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = _observe(self)
        self.host_inner = RecorderFactory([T4_HASH])
        self.client_inner = RecorderFactory([bytes.fromhex(T10_LOGIN)])

    def _host(self, allow_insecure: bool = False) -> Side:
        factory = rustdesk_host_factory(
            SigningKey(HOST_SEED),
            PEER_ID,
            self.host_inner,
            self.clock,
            allow_insecure=allow_insecure,
        )
        return Side(factory)

    def _client(self, host_key: VerifyKey | None = None, allow_insecure: bool = False) -> Side:
        key = host_key if host_key is not None else SigningKey(HOST_SEED).verify_key
        factory = rustdesk_client_factory(
            key, PEER_ID, self.client_inner, self.clock, allow_insecure=allow_insecure
        )
        return Side(factory)

    def _connected_pair(self) -> tuple[Side, Side]:
        host, client = self._host(), self._client()
        host.proto.makeConnection(host.transport)
        client.proto.makeConnection(client.transport)
        _pump(host, client)
        return host, client

    def test_session(self) -> None:
        host, client = self._connected_pair()
        self.assertTrue(host.proto.encrypted and client.proto.encrypted)
        (host_inner,) = self.host_inner.built
        (client_inner,) = self.client_inner.built
        self.assertEqual([x.WhichOneof("union") for x in client_inner.received], ["hash"])
        self.assertEqual([x.WhichOneof("union") for x in host_inner.received], ["login_request"])
        self.assertEqual(host_inner.received[0].SerializeToString().hex(), T10_LOGIN)
        self.assertEqual((host.proto.send_seq, host.proto.recv_seq), (1, 1))
        transport = host_inner.transport
        assert isinstance(transport, ChannelTransport)
        self.assertTrue(transport.encrypted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_host_speaks_first(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        self.assertEqual(len(_payload(host.take().hex())), 0x01C5 >> 2)

    def test_wire_is_sealed(self) -> None:
        """What the inner protocol writes leaves as one secretbox frame per message."""
        host, _ = self._connected_pair()
        (host_inner,) = self.host_inner.built
        assert host_inner.transport is not None
        marker = _message(misc=m.Misc(chat_message=m.ChatMessage(text="secret-marker")))
        host_inner.transport.write(encode_frame(marker)[:3])
        self.assertEqual(host.transport.value(), b"")
        host_inner.transport.writeSequence([encode_frame(marker)[3:]])
        wire = host.take()
        self.assertNotIn(b"secret-marker", wire)
        (payload,) = FrameDecoder().feed(wire)
        self.assertEqual(len(payload), len(marker) + 16)

    def test_pipelined_first_frame(self) -> None:
        """The client's PublicKey and first sealed frame in one segment both count."""
        host = self._host()
        host.proto.makeConnection(host.transport)
        outcome = _client_handshake().receive(_payload(host.take().hex()))
        assert outcome.reply is not None and outcome.key is not None
        sealed = SecretChannel(outcome.key).seal(bytes.fromhex(T10_LOGIN))
        host.proto.dataReceived(encode_frame(outcome.reply) + encode_frame(sealed))
        (inner,) = self.host_inner.built
        self.assertEqual([x.WhichOneof("union") for x in inner.received], ["login_request"])

    def test_flipped_byte_closes(self) -> None:
        host, _ = self._connected_pair()
        (host_inner,) = self.host_inner.built
        sealed = bytearray(SecretChannel(SESSION_KEY).seal(T4_HASH))  # any key: MAC fails
        sealed[5] ^= 0x40
        host.proto.dataReceived(encode_frame(bytes(sealed)))
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(
            _close_reasons(self.events),
            ["decryption failed at counter 2: tampered, replayed or reordered frame"],
        )
        host.proto.dataReceived(b"\x00")
        self.assertEqual(len(host_inner.received), 1)

    def test_replayed_frame_closes(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        outcome = _client_handshake().receive(_payload(host.take().hex()))
        assert outcome.reply is not None and outcome.key is not None
        sealed = encode_frame(SecretChannel(outcome.key).seal(T4_HASH))
        host.proto.dataReceived(encode_frame(outcome.reply) + sealed + sealed)
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(len(self.host_inner.built[0].received), 1)
        self.assertIn("counter 2", _close_reasons(self.events)[0])

    def test_reordered_frames_close(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        outcome = _client_handshake().receive(_payload(host.take().hex()))
        assert outcome.reply is not None and outcome.key is not None
        sender = SecretChannel(outcome.key)
        one, two = sender.seal(T4_HASH), sender.seal(T4_HASH)
        host.proto.dataReceived(encode_frame(outcome.reply) + encode_frame(two) + encode_frame(one))
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(self.host_inner.built[0].received, [])

    def test_empty_frame_passes(self) -> None:
        """T15 on the wire: frame 00 reaches the inner protocol, the counter stays."""
        host, _ = self._connected_pair()
        host.proto.dataReceived(b"\x00")
        self.assertEqual(host.proto.recv_seq, 1)
        self.assertEqual(self.host_inner.built[0].received[-1], m.Message())

    def test_oversize_handshake_frame(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        host.proto.dataReceived(encode_header(64 * 1024 + 1))
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(
            _close_reasons(self.events), ["handshake frame of 65537 bytes exceeds 65536"]
        )
        self.assertEqual(self.host_inner.built, [])

    def test_oversize_session_frame(self) -> None:
        host, _ = self._connected_pair()
        host.proto.dataReceived(encode_header(64 * 1024 * 1024 + 1))
        self.assertTrue(host.transport.disconnecting)
        self.assertIn("exceeds the limit", _close_reasons(self.events)[0])

    def test_handshake_deadline(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        # A byte now and then does not move the deadline.
        for _ in range(17):
            self.clock.advance(1)
            host.proto.dataReceived(b"\x59" if _ == 0 else b"\x01")
        self.assertFalse(host.transport.disconnecting)
        self.clock.advance(0.999)
        self.assertFalse(host.transport.disconnecting)
        self.clock.advance(0.002)
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(_close_reasons(self.events), ["handshake not finished within 18 s"])
        # A peer that reads nothing is aborted later.
        self.clock.advance(5)
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(self.host_inner.built, [])

    def test_client_deadline(self) -> None:
        client = self._client()
        client.proto.makeConnection(client.transport)
        self.assertEqual(client.take(), b"")
        self.clock.advance(18)
        self.assertEqual(_close_reasons(self.events), ["handshake not finished within 18 s"])

    def test_lost_cancels_deadline(self) -> None:
        host = self._host()
        host.proto.makeConnection(host.transport)
        host.proto.connectionLost(Failure(Exception("gone")))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_insecure_client_refused(self) -> None:
        """A client without a signed key gets a LoginResponse error it shows."""
        host = self._host()
        client = Side(
            rustdesk_client_factory(
                None, PEER_ID, self.client_inner, self.clock, allow_insecure=True
            )
        )
        host.proto.makeConnection(host.transport)
        client.proto.makeConnection(client.transport)
        self.assertEqual(client.transport.value()[:1], b"\x00")
        _pump(host, client)
        self.assertTrue(host.transport.disconnecting)
        self.assertEqual(self.host_inner.built, [])
        (inner,) = self.client_inner.built
        # Like RustDesk's, a client without a key reads nothing during the
        # handshake: the host's SignedId reaches its session, then the refusal.
        kinds = [x.WhichOneof("union") for x in inner.received]
        self.assertEqual(kinds, ["signed_id", "login_response"])
        self.assertEqual(inner.received[1].login_response.error, INSECURE_REFUSAL)
        self.assertEqual(
            _close_reasons(self.events),
            ["insecure session refused: client sent no PublicKey"],
        )

    def test_insecure_allowed_and_logged(self) -> None:
        host = self._host(allow_insecure=True)
        host.proto.makeConnection(host.transport)
        host.take()
        host.proto.dataReceived(encode_frame(_message(public_key=m.PublicKey())))
        host.proto.dataReceived(encode_frame(bytes.fromhex(T10_LOGIN)))
        (inner,) = self.host_inner.built
        assert isinstance(inner.transport, ChannelTransport)
        self.assertFalse(inner.transport.encrypted)
        self.assertEqual(inner.received[0].login_request.my_name, "Tester")
        self.assertEqual(encode_frame(T4_HASH), host.take())
        insecure = [e for e in self.events if e.get("insecure")]
        self.assertEqual(len(insecure), 1)
        self.assertEqual(insecure[0]["log_level"], LogLevel.warn)

    def test_client_refuses_impostor(self) -> None:
        client = self._client(host_key=SigningKey(bytes([9]) * 32).verify_key)
        client.proto.makeConnection(client.transport)
        client.proto.dataReceived(bytes.fromhex(T7_FRAME))
        self.assertTrue(client.transport.disconnecting)
        self.assertEqual(client.take(), b"")
        self.assertEqual(
            _close_reasons(self.events),
            ["insecure session refused: SignedId not signed by the host's key"],
        )

    def test_inner_lose_connection(self) -> None:
        host, _ = self._connected_pair()
        inner = self.host_inner.built[0]
        assert inner.transport is not None
        self.assertEqual(inner.transport.getPeer(), host.transport.getPeer())
        inner.transport.loseConnection()
        self.assertTrue(host.transport.disconnecting)
        host.proto.connectionLost(Failure(Exception("closed")))
        self.assertIsNotNone(inner.lost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_message_protocol_as_inner(self) -> None:
        """LiteDesk's MessageProtocol runs unchanged inside the channel."""
        clock = self.clock

        class Echo(MessageProtocol):
            def __init__(self) -> None:
                self.clock = clock
                self.got: list[m.Message] = []

            def message_received(self, msg: m.Message) -> None:
                self.got.append(msg)
                self.send_message(m.Message(hash=m.Hash(salt="s", challenge="c")))

        echoes: list[Echo] = []

        def build() -> Echo:
            echoes.append(Echo())
            return echoes[-1]

        self.host_inner = cast(RecorderFactory, Factory.forProtocol(build))
        host, client = self._connected_pair()
        (echo,) = echoes
        self.assertEqual([x.WhichOneof("union") for x in echo.got], ["login_request"])
        (client_inner,) = self.client_inner.built
        self.assertEqual(client_inner.received[-1].SerializeToString(), T4_HASH)
        # Garbage inside a well-sealed frame is the inner protocol's to refuse.
        client.proto.send_payload(b"\xff\xff")
        _pump(host, client)
        self.assertTrue(echo.closing)
        self.assertEqual(_close_reasons(self.events), [])

    @settings(max_examples=60)
    @given(st.binary(max_size=400), st.data())
    def test_garbage_never_raises(self, data: bytes, chunks: st.DataObject) -> None:
        """Any bytes, in any chunks, before or after the handshake: no exception."""
        for handshake_first in (False, True):
            self.host_inner.built.clear()
            if handshake_first:
                host, _ = self._connected_pair()
            else:
                host = self._host()
                host.proto.makeConnection(host.transport)
            pos = 0
            while pos < len(data):
                n = chunks.draw(st.integers(min_value=1, max_value=len(data) - pos))
                host.proto.dataReceived(data[pos : pos + n])
                pos += n
            # Nothing forged reaches the inner protocol of an encrypted session.
            for inner in self.host_inner.built:
                kinds = [x.WhichOneof("union") for x in inner.received]
                self.assertIn(kinds[:1], ([], ["login_request"]))

    @given(st.data())
    def test_handshake_frame_any_chunking(self, data: st.DataObject) -> None:
        """The handshake frame parser: any split of PublicKey + a sealed frame."""
        self.host_inner.built.clear()
        host = self._host()
        host.proto.makeConnection(host.transport)
        outcome = _client_handshake().receive(_payload(host.take().hex()))
        assert outcome.reply is not None and outcome.key is not None
        stream = encode_frame(outcome.reply) + encode_frame(
            SecretChannel(outcome.key).seal(bytes.fromhex(T10_LOGIN))
        )
        cuts = sorted(
            data.draw(st.sets(st.integers(min_value=1, max_value=len(stream) - 1), max_size=6))
        )
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            host.proto.dataReceived(stream[a:b])
        (inner,) = self.host_inner.built
        self.assertEqual([x.WhichOneof("union") for x in inner.received], ["login_request"])


# -- real TCP on loopback ------------------------------------------------------


class TamperingClient(Recorder):
    """Sends LoginRequest when Hash comes, then a sealed frame with one byte flipped."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if self.received and self.received[-1].WhichOneof("union") == "hash":
            assert self.transport is not None
            self.transport.write(encode_frame(bytes.fromhex(T10_LOGIN)))
            # The next sealed frame, with one ciphertext byte flipped, written
            # under the channel straight to TCP.
            channel = cast(ChannelTransport, self.transport).channel
            secret = channel._secret
            assert secret is not None
            sealed = bytearray(secret.seal(T4_HASH))
            sealed[20] ^= 0x01
            channel.outer.write(encode_frame(bytes(sealed)))


class LoopbackTests(TestCase):
    @inlineCallbacks
    def test_hash_login_then_flipped_byte(self) -> Generator[Deferred[Any], Any, None]:
        events = _observe(self)
        clock = cast(IReactorTime, reactor)
        tcp = cast(IReactorTCP, reactor)
        host_inner = RecorderFactory([T4_HASH])
        port = tcp.listenTCP(
            0,
            rustdesk_host_factory(SigningKey(HOST_SEED), PEER_ID, host_inner, clock),
            interface="127.0.0.1",
        )
        self.addCleanup(port.stopListening)

        client_inner = _TamperingFactory()
        client_factory = rustdesk_client_factory(
            SigningKey(HOST_SEED).verify_key, PEER_ID, client_inner, clock
        )
        connector = tcp.connectTCP(
            "127.0.0.1", cast(IPv4Address, port.getHost()).port, client_factory
        )
        self.addCleanup(connector.disconnect)

        yield until(lambda: bool(client_inner.built and client_inner.built[0].lost), timeout=10)
        (host_side,) = host_inner.built
        (client_side,) = client_inner.built
        self.assertEqual([x.WhichOneof("union") for x in client_side.received], ["hash"])
        self.assertEqual(client_side.received[0].hash.challenge, "c")
        self.assertEqual([x.WhichOneof("union") for x in host_side.received], ["login_request"])
        self.assertEqual(host_side.received[0].login_request.username, PEER_ID)
        yield until(lambda: host_side.lost is not None, timeout=10)
        self.assertEqual(
            _close_reasons(events),
            ["decryption failed at counter 2: tampered, replayed or reordered frame"],
        )


class _TamperingFactory(Factory):
    def __init__(self) -> None:
        self.built: list[TamperingClient] = []

    def buildProtocol(self, addr: IAddress | None) -> TamperingClient:
        proto = TamperingClient()
        self.built.append(proto)
        return proto
