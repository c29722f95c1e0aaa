"""Secure TCP on the rendezvous port (docs/protocol.rst §5.10, conformance check 27).

Three layers: the sans-IO state (L{litedesk.rendezvous.secure_tcp}) with the
fixed vectors; the TCP protocol on a StringTransport and a task.Clock
(what a silent client gets and when, byte-identical plaintext answers for
clients that speak first, the hostile cases); and a real C{twistd
litedesk-relay} process reached over loopback by the stock-client emulator
(L{tests.support.rustdesk_rendezvous}), which knows nothing of LiteDesk's
code.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.protocols import (
    NatTestProtocol,
    RendezvousStreamFactory,
    RendezvousStreamProtocol,
)
from litedesk.rendezvous.registry import Registry
from litedesk.rendezvous.relaylist import RelayList
from litedesk.rendezvous.secure_tcp import (
    KEY_EXCHANGE_WAIT,
    KeyExchangeCounters,
    Phase,
    SecureTcpError,
    SecureTcpServer,
    key_exchange_offer,
    open_key_exchange_answer,
)
from litedesk.rendezvous.server import RendezvousServer
from litedesk.wire import addrmangle
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from litedesk.wire.keys import ServerKey, public_b64

from .support import rustdesk_rendezvous as emu
from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import RelayProcess, udp_exchange
from .support.rustdesk_client import SecretChannel as ClientChannel

# docs/protocol.rst §9 check 27: server seed 00..1f, server X25519 secret 32 x 03,
# client X25519 secret 32 x 09, session key 32 x 42.
SERVER_KEY = SigningKey(bytes(range(32)))
SERVER_X = PrivateKey(bytes([3]) * 32)
CLIENT_X = PrivateKey(bytes([9]) * 32)
SESSION = bytes([0x42]) * 32
OFFER_HEX = (
    "ca01620a606edfda6f74ac0b31f62b65b2e95885bd095d25716cfbf70649cf85f1c84941096a50823d9d346530"
    "b1341e4e65e906ec1687e17baa2d70a1061fc631bd8969065dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d48"
    "8bdaf9df1c6e0124b3ef22"
)
ANSWER_HEX = (
    "ca01540a2057db4b359f23ae5e146e4e2512056704722506348c150c14753d0c933d04d4210a30437bd4898675"
    "87c7af79abc2d6ed2fb82b4940492cdf9cf6df00a956a87dea5b2f2ada3b30da8ea092e6085ff37ec513"
)
# PunchHoleRequest{id: "123456789", licence_key: the server key} sealed with counter 1.
SEALED_REQUEST_HEX = (
    "12b6f451832277585f075ff7f778fc8729c0b0492058be70510468237c8c8b4f4fafbc7aa06089ea839472586d"
    "d3333a42f55f46cc8927fcabedebd06fc66041ffe28e338e8b6bbac203f8"
)
LICENCE = public_b64(SERVER_KEY)
HOST_ID = "123456789"
UUID = b"0123456789abcdef0123456789abcdef"
HOST_PK = bytes([7]) * 32
HOST_ADDR = ("203.0.113.5", 21200)


def punch_request(peer_id: str = HOST_ID, licence: str = LICENCE) -> rz.RendezvousMessage:
    return rz.RendezvousMessage(
        punch_hole_request=rz.PunchHoleRequest(id=peer_id, licence_key=licence)
    )


def client_answer(
    offer: bytes, client: PrivateKey = CLIENT_X, key: bytes = SESSION
) -> tuple[bytes, ClientChannel]:
    """What a RustDesk client answers to the offer payload (common.rs secure_tcp_impl)."""
    msg = rz.RendezvousMessage()
    msg.ParseFromString(offer)
    server_x = VerifyKey(bytes(SERVER_KEY.verify_key)).verify(msg.key_exchange.keys[0])
    sealed = Box(client, PublicKey(server_x)).encrypt(key, bytes(24)).ciphertext
    answer = rz.KeyExchange(keys=[bytes(client.public_key), sealed])
    return rz.RendezvousMessage(key_exchange=answer).SerializeToString(), ClientChannel(key)


# --- the sans-IO state ------------------------------------------------------------------


class VectorTests(SynchronousTestCase):
    def test_offer_vector(self) -> None:
        """The server's KeyExchange for the fixed keys is the vector's bytes."""
        self.assertEqual(key_exchange_offer(SERVER_KEY, SERVER_X.public_key).hex(), OFFER_HEX)
        state = SecureTcpServer(SERVER_KEY, ephemeral=SERVER_X)
        self.assertEqual(state.offer(), bytes.fromhex(OFFER_HEX))

    def test_client_answer_vector(self) -> None:
        """The vector's client answer opens to the session key 32 x 42."""
        answer, _ = client_answer(bytes.fromhex(OFFER_HEX))
        self.assertEqual(answer.hex(), ANSWER_HEX)
        self.assertEqual(open_key_exchange_answer(answer, SERVER_X), SESSION)

    def test_first_sealed_request_vector(self) -> None:
        """After the exchange the vector's sealed frame opens to the PunchHoleRequest."""
        state = SecureTcpServer(SERVER_KEY, ephemeral=SERVER_X)
        state.offer()
        self.assertIsNone(state.receive(bytes.fromhex(ANSWER_HEX)))
        self.assertIs(state.phase, Phase.SECURE)
        opened = state.receive(bytes.fromhex(SEALED_REQUEST_HEX))
        self.assertEqual(opened, punch_request().SerializeToString())
        _, channel = client_answer(bytes.fromhex(OFFER_HEX))
        self.assertEqual(
            channel.seal(punch_request().SerializeToString()).hex(), SEALED_REQUEST_HEX
        )

    def test_emulator_client_reproduces_vector(self) -> None:
        """The stock-client emulator's secure_tcp sends the vector's answer for the same keys."""
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        a.sendall(encode_frame(bytes.fromhex(OFFER_HEX)))
        stream = emu.RendezvousStream(b)
        sealed = emu.secure_tcp(
            stream, LICENCE, wait=5.0, client_sk=bytes([9]) * 32, session_key=SESSION
        )
        self.assertTrue(sealed)
        a.settimeout(5)
        got = FrameDecoder().feed(a.recv(1000))
        self.assertEqual([f.hex() for f in got], [ANSWER_HEX])
        stream.send(punch_request())
        self.assertEqual(FrameDecoder().feed(a.recv(1000))[0].hex(), SEALED_REQUEST_HEX)


class StateTests(SynchronousTestCase):
    def secured(self) -> tuple[SecureTcpServer, ClientChannel, KeyExchangeCounters]:
        counters = KeyExchangeCounters()
        state = SecureTcpServer(SERVER_KEY, counters)
        offer = state.offer()
        assert offer is not None
        answer, channel = client_answer(offer, PrivateKey.generate(), os.urandom(32))
        self.assertIsNone(state.receive(answer))
        return state, channel, counters

    def test_client_speaking_first_is_plaintext_for_good(self) -> None:
        """Bytes before the offer: no offer, every payload passes unchanged both ways."""
        counters = KeyExchangeCounters()
        state = SecureTcpServer(SERVER_KEY, counters)
        state.peer_spoke()
        self.assertIsNone(state.offer())
        self.assertIs(state.phase, Phase.PLAIN)
        for payload in (b"", b"\x01", punch_request().SerializeToString()):
            self.assertEqual(state.receive(payload), payload)
            self.assertEqual(state.send(payload), payload)
        self.assertEqual(counters, KeyExchangeCounters())

    def test_frame_before_offer_is_plaintext(self) -> None:
        """A frame reported without bytes first still counts as the client speaking first."""
        state = SecureTcpServer(SERVER_KEY)
        self.assertEqual(state.receive(b"abc"), b"abc")
        self.assertIsNone(state.offer())

    def test_offer_is_signed_fresh_key(self) -> None:
        """The offer holds one entry: the server key's signature over a new X25519 key."""
        keys = set()
        for _ in range(3):
            offer = SecureTcpServer(SERVER_KEY).offer()
            assert offer is not None
            msg = rz.RendezvousMessage()
            msg.ParseFromString(offer)
            (signed,) = msg.key_exchange.keys
            self.assertEqual(len(signed), 96)
            keys.add(SERVER_KEY.verify_key.verify(signed))
        self.assertEqual(len(keys), 3)

    def test_offer_only_once(self) -> None:
        """A second offer() sends nothing."""
        state = SecureTcpServer(SERVER_KEY)
        self.assertIsNotNone(state.offer())
        self.assertIsNone(state.offer())

    def test_sealed_both_ways_with_counters(self) -> None:
        """After the answer, frames open with the client's counter and leave sealed with ours."""
        state, channel, counters = self.secured()
        self.assertTrue(state.secured)
        self.assertEqual(counters, KeyExchangeCounters(offered=1, secured=1))
        for i in range(3):
            request = punch_request(f"id{i}").SerializeToString()
            self.assertEqual(state.receive(channel.seal(request)), request)
            reply = rz.RendezvousMessage(
                punch_hole_response=rz.PunchHoleResponse(other_failure=f"r{i}")
            ).SerializeToString()
            self.assertEqual(channel.open(state.send(reply)), reply)
        self.assertEqual(channel.recv_seq, 3)

    def test_keep_alives_stay_empty_frames(self) -> None:
        """Empty payloads are neither sealed nor counted, as RustDesk peers send them."""
        state, channel, _ = self.secured()
        self.assertEqual(state.send(b""), b"")
        self.assertEqual(state.receive(b""), b"")
        request = punch_request().SerializeToString()
        self.assertEqual(state.receive(channel.seal(request)), request)

    def test_other_answer_declines(self) -> None:
        """A client that answers the offer with its request is served in plaintext."""
        counters = KeyExchangeCounters()
        state = SecureTcpServer(SERVER_KEY, counters)
        state.offer()
        request = punch_request().SerializeToString()
        self.assertEqual(state.receive(request), request)
        self.assertIs(state.phase, Phase.PLAIN)
        self.assertEqual(state.send(b"xyz"), b"xyz")
        self.assertEqual(counters, KeyExchangeCounters(offered=1, declined=1))

    def test_broken_answers(self) -> None:
        """Each malformed KeyExchange answer is refused with its reason and counted."""
        offer_state = SecureTcpServer(SERVER_KEY, ephemeral=SERVER_X)
        good_pk = bytes(CLIENT_X.public_key)
        sealed = Box(CLIENT_X, SERVER_X.public_key).encrypt(SESSION, bytes(24)).ciphertext
        short = Box(CLIENT_X, SERVER_X.public_key).encrypt(SESSION[:31], bytes(24)).ciphertext
        other = Box(CLIENT_X, PrivateKey.generate().public_key).encrypt(SESSION, bytes(24))

        def kx(*keys: bytes) -> bytes:
            return rz.RendezvousMessage(
                key_exchange=rz.KeyExchange(keys=list(keys))
            ).SerializeToString()

        cases = {
            b"\xff\xff\xff": "not a RendezvousMessage",
            kx(): "0 keys",
            kx(good_pk): "1 keys",
            kx(good_pk, sealed, b"x"): "3 keys",
            kx(good_pk[:31], sealed): "31-byte public key",
            kx(good_pk, short): "47-byte sealed key",
            kx(good_pk, bytes(other.ciphertext)): "does not open",
            kx(good_pk, sealed[:-1] + bytes([sealed[-1] ^ 1])): "does not open",
        }
        self.assertIsNotNone(offer_state.offer())
        for payload, why in cases.items():
            counters = KeyExchangeCounters()
            state = SecureTcpServer(SERVER_KEY, counters, ephemeral=SERVER_X)
            state.offer()
            with self.assertRaises(SecureTcpError) as caught:
                state.receive(payload)
            self.assertIn(why, str(caught.exception))
            self.assertEqual(counters.failed, 1)

    def test_tampered_replayed_reordered_frames_fail(self) -> None:
        """A flipped bit, a replayed frame or frames out of order fail their MAC."""
        one = punch_request("a").SerializeToString()
        two = punch_request("b").SerializeToString()

        state, channel, counters = self.secured()
        frame = bytearray(channel.seal(one))
        frame[20] ^= 1
        with self.assertRaises(SecureTcpError):
            state.receive(bytes(frame))
        self.assertEqual(counters.failed, 1)

        state, channel, _ = self.secured()
        first = channel.seal(one)
        self.assertEqual(state.receive(first), one)
        with self.assertRaises(SecureTcpError):
            state.receive(first)

        state, channel, _ = self.secured()
        channel.seal(one)  # sealed, then lost or held back
        with self.assertRaises(SecureTcpError):
            state.receive(channel.seal(two))

    def test_recorded_exchange_replayed_on_new_connection_fails(self) -> None:
        """Replaying a whole recorded exchange (answer, then the sealed request carrying the
        client's token) on another connection fails: the new offer has a new key."""
        victim = SecureTcpServer(SERVER_KEY)
        offer = victim.offer()
        assert offer is not None
        answer, channel = client_answer(offer, PrivateKey.generate(), os.urandom(32))
        sealed_request = channel.seal(punch_request().SerializeToString())
        victim.receive(answer)
        self.assertIsNotNone(victim.receive(sealed_request))

        replayed = SecureTcpServer(SERVER_KEY)
        replayed.offer()
        with self.assertRaises(SecureTcpError) as caught:
            replayed.receive(answer)
        self.assertIn("does not open", str(caught.exception))

    def test_x25519_secret_dropped_after_answer(self) -> None:
        """Once answered, the state keeps no X25519 secret that could open a recording."""
        state, _, _ = self.secured()
        self.assertIsNone(state._ephemeral)


class ParserFuzzTests(SynchronousTestCase):
    @settings(max_examples=400)
    @given(st.binary(max_size=400))
    def test_any_answer_bytes(self, payload: bytes) -> None:
        """Any bytes as the answer: plaintext or SecureTcpError, never another exception."""
        try:
            key = open_key_exchange_answer(payload, SERVER_X)
        except SecureTcpError:
            return
        self.assertTrue(key is None or len(key) == 32)

    @settings(max_examples=300)
    @given(st.lists(st.binary(max_size=80), max_size=4))
    def test_any_key_exchange(self, keys: list[bytes]) -> None:
        """A KeyExchange with any keys secures only if it carries a box that opens."""
        payload = rz.RendezvousMessage(key_exchange=rz.KeyExchange(keys=keys)).SerializeToString()
        state = SecureTcpServer(SERVER_KEY, ephemeral=SERVER_X)
        state.offer()
        try:
            self.assertIsNone(state.receive(payload))
        except SecureTcpError:
            self.assertIs(state.phase, Phase.OFFERED)
            return
        self.assertIs(state.phase, Phase.SECURE)

    @settings(max_examples=200)
    @given(st.lists(st.binary(max_size=300), max_size=12))
    def test_sealed_stream_round_trip(self, payloads: list[bytes]) -> None:
        """Any sequence of payloads sealed by the client opens in order on the server."""
        state = SecureTcpServer(SERVER_KEY, ephemeral=SERVER_X)
        offer = state.offer()
        assert offer is not None
        answer, channel = client_answer(offer)
        state.receive(answer)
        for p in payloads:
            self.assertEqual(state.receive(channel.seal(p) if len(p) else p), p)


# --- the protocol on a StringTransport ----------------------------------------------------


class Datagrams:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def send_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


@dataclass
class Rig:
    """One server on a test clock, and helpers to open connections to it."""

    clock: Clock = field(default_factory=Clock)
    wait: float | None = KEY_EXCHANGE_WAIT
    signing: bool = True
    udp: Datagrams = field(default_factory=Datagrams)

    def __post_init__(self) -> None:
        key = ServerKey(LICENCE, SERVER_KEY) if self.signing else ServerKey("plain", None)
        self.server = RendezvousServer(
            clock=self.clock, registry=Registry(), key=key, relays=RelayList([])
        )
        self.server.udp = self.udp
        self.server.registry.register_pk(HOST_ID, UUID, HOST_PK, HOST_ADDR, 0)
        self.factory = RendezvousStreamFactory(
            self.server, RendezvousStreamProtocol, clock=self.clock, key_exchange_wait=self.wait
        )
        self.nat_factory = RendezvousStreamFactory(
            self.server, NatTestProtocol, clock=self.clock, key_exchange_wait=self.wait
        )

    def connect(
        self, ip: str = "198.51.100.1", port: int = 54321, nat: bool = False
    ) -> tuple[Any, StringTransport]:
        factory = self.nat_factory if nat else self.factory
        proto = factory.buildProtocol(None)
        assert proto is not None
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, port))
        proto.makeConnection(transport)
        return proto, transport


def payloads(transport: StringTransport) -> list[bytes]:
    return FrameDecoder().feed(transport.value())


def closed(transport: StringTransport) -> bool:
    return bool(transport.disconnecting or transport.disconnected)


@implementer(ILogObserver)
class Logged:
    """Formatted log lines emitted while the test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: list[str] = []
        globalLogPublisher.addObserver(self)
        case.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event: LogEvent) -> None:
        self.lines.append(formatEvent(event))

    def has(self, *parts: str) -> bool:
        return any(all(p in line for p in parts) for line in self.lines)


def secure_client(rig: Rig, proto: Any, transport: StringTransport) -> ClientChannel:
    """Wait for the offer on the clock, answer it as a RustDesk client; the channel."""
    rig.clock.advance(KEY_EXCHANGE_WAIT)
    (offer,) = payloads(transport)
    answer, channel = client_answer(offer, PrivateKey.generate(), os.urandom(32))
    transport.clear()
    proto.dataReceived(encode_frame(answer))
    return channel


def sealed_messages(transport: StringTransport, channel: ClientChannel) -> list[Any]:
    out = []
    for p in payloads(transport):
        msg = rz.RendezvousMessage()
        msg.ParseFromString(channel.open(p))
        out.append(msg)
    return out


# Requests as RustDesk 1.2/1.3 clients and hosts send them, each at once after connecting.
PLAIN_SCENARIOS: dict[str, list[bytes]] = {
    "test_nat": [bytes.fromhex("14a201020803")],
    "register_pk": [
        encode_frame(
            rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id="abcdef", uuid=UUID, pk=HOST_PK)
            ).SerializeToString()
        )
    ],
    "wrong_key": [encode_frame(punch_request(licence="wrong").SerializeToString())],
    "unknown_id": [encode_frame(punch_request("nobody").SerializeToString())],
    "online_punch": [encode_frame(punch_request().SerializeToString())],
    "keepalive_then_relay": [
        b"\x00",
        encode_frame(
            rz.RendezvousMessage(
                request_relay=rz.RequestRelay(id=HOST_ID, uuid="u-1", relay_server="")
            ).SerializeToString()
        ),
    ],
    "byte_by_byte": [bytes([b]) for b in bytes.fromhex("14a201020803")],
}


def run_plain(wait: float | None, chunks: list[bytes]) -> tuple[bytes, bool, list[Any], str]:
    """Feed a client's bytes (0.1 s apart, the first at once), let 2 s pass, and answer
    any push as the host does; everything the client and the host's UDP socket got."""
    rig = Rig(wait=wait)
    proto, transport = rig.connect()
    for chunk in chunks:
        proto.dataReceived(chunk)
        rig.clock.advance(0.1)
    rig.clock.advance(2.0)
    for data, _addr in list(rig.udp.sent):
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        if push.WhichOneof("union") == "punch_hole":
            host, _ = rig.connect(HOST_ADDR[0], 40001)
            sent = rz.PunchHoleSent(
                socket_addr=push.punch_hole.socket_addr, id=HOST_ID, version="1.3.9"
            )
            host.dataReceived(
                encode_frame(rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString())
            )
    rig.clock.advance(2.0)
    phase = proto._secure.phase.value if proto._secure is not None else "-"
    return transport.value(), closed(transport), rig.udp.sent, phase


class PlaintextConformanceTests(SynchronousTestCase):
    def test_byte_identical_with_and_without_secure_tcp(self) -> None:
        """1.2/1.3-style clients that speak first get exactly the bytes, the closes and the
        pushes they get from a server that never offers secure TCP."""
        for name, chunks in PLAIN_SCENARIOS.items():
            with_offer = run_plain(KEY_EXCHANGE_WAIT, chunks)
            without = run_plain(None, chunks)
            self.assertEqual(with_offer[:3], without[:3], name)
            self.assertEqual(with_offer[3], "plain", name)
            self.assertNotIn(b"\xca\x01", with_offer[0], name)

    def test_known_answers(self) -> None:
        """The plaintext answers are the conformance vectors (§9 checks 10, 12 and 14)."""
        nat = run_plain(KEY_EXCHANGE_WAIT, PLAIN_SCENARIOS["test_nat"])
        self.assertEqual(nat[0].hex(), "1caa010408b1a803")
        self.assertTrue(nat[1])
        # (RegisterPk over TCP registers a stream host, section 5.11: compared only
        # with and without the offer, above.)
        answers = {"wrong_key": "5a021803", "unknown_id": "5a00"}
        for name, reply in answers.items():
            got = run_plain(KEY_EXCHANGE_WAIT, PLAIN_SCENARIOS[name])[0]
            self.assertEqual(FrameDecoder().feed(got)[0].hex(), reply, name)
        punch = run_plain(KEY_EXCHANGE_WAIT, PLAIN_SCENARIOS["online_punch"])
        (frame,) = FrameDecoder().feed(punch[0])
        msg = rz.RendezvousMessage()
        msg.ParseFromString(frame)
        resp = msg.punch_hole_response
        self.assertEqual(addrmangle.decode(resp.socket_addr), (HOST_ADDR[0], 40001))
        self.assertGreater(len(resp.pk), 64)

    def test_offer_exactly_after_the_wait(self) -> None:
        """A silent connection gets nothing before the wait and one KeyExchange at it."""
        rig = Rig()
        _, transport = rig.connect()
        rig.clock.advance(KEY_EXCHANGE_WAIT * 0.99)
        self.assertEqual(transport.value(), b"")
        rig.clock.advance(KEY_EXCHANGE_WAIT * 0.01)
        (offer,) = payloads(transport)
        self.assertEqual(offer[:2], b"\xca\x01")
        rig.clock.advance(10)
        self.assertEqual(len(payloads(transport)), 1)
        self.assertEqual(rig.factory.key_exchanges.offered, 1)

    def test_slow_plaintext_client_skips_the_offer(self) -> None:
        """A client that sends after the wait gets the KeyExchange first (which every client
        since 1.2.0 skips), then its answer in plaintext."""
        rig = Rig()
        proto, transport = rig.connect()
        rig.clock.advance(1.0)
        proto.dataReceived(encode_frame(punch_request(licence="wrong").SerializeToString()))
        offer, reply = payloads(transport)
        self.assertEqual(offer[:2], b"\xca\x01")
        self.assertEqual(reply.hex(), "5a021803")
        self.assertEqual(rig.factory.key_exchanges.declined, 1)

    def test_no_offer_without_signing_key_on_nat_port_or_when_off(self) -> None:
        """A server key that cannot sign, the NAT-test port and wait=None never offer."""
        for rig, nat in ((Rig(signing=False), False), (Rig(), True), (Rig(wait=None), False)):
            proto, transport = rig.connect(nat=nat)
            rig.clock.advance(5)
            self.assertEqual(transport.value(), b"")
            self.assertIsNone(proto._secure)
            self.assertEqual(rig.clock.getDelayedCalls()[0].getTime(), 30.0)


class SecureSessionTests(SynchronousTestCase):
    def test_secure_nat_test_same_answer_sealed(self) -> None:
        """A secured client's TestNatRequest gets the plaintext client's answer, sealed."""
        rig = Rig()
        proto, transport = rig.connect()
        channel = secure_client(rig, proto, transport)
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(encode_frame(channel.seal(bytes.fromhex("a201020803"))))
        (msg,) = sealed_messages(transport, channel)
        self.assertEqual(msg.SerializeToString().hex(), "aa010408b1a803")
        self.assertTrue(closed(transport))
        self.assertEqual(rig.factory.key_exchanges.secured, 1)

    def test_secure_punch_through_plain_host(self) -> None:
        """A logged-in viewer's sealed request reaches the host by UDP; the host's plaintext
        PunchHoleSent comes back to the viewer sealed, with the signed key."""
        rig = Rig()
        viewer, transport = rig.connect()
        channel = secure_client(rig, viewer, transport)
        viewer.dataReceived(encode_frame(channel.seal(punch_request().SerializeToString())))
        viewer.dataReceived(b"\x00")  # a keep-alive stays an empty frame
        ((data, addr),) = rig.udp.sent
        self.assertEqual(addr, HOST_ADDR)
        push = rz.RendezvousMessage()
        push.ParseFromString(data)
        host, host_transport = rig.connect(HOST_ADDR[0], 40001)
        sent = rz.PunchHoleSent(socket_addr=push.punch_hole.socket_addr, id=HOST_ID, version="1")
        host.dataReceived(
            encode_frame(rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString())
        )
        self.assertEqual(host_transport.value(), b"")
        (msg,) = sealed_messages(transport, channel)
        resp = msg.punch_hole_response
        self.assertEqual(addrmangle.decode(resp.socket_addr), (HOST_ADDR[0], 40001))
        self.assertEqual(SERVER_KEY.verify_key.verify(resp.pk)[-32:], HOST_PK)
        self.assertFalse(closed(transport))

    def test_answer_and_request_in_one_segment(self) -> None:
        """The answer and the first sealed request arriving together are both handled."""
        rig = Rig()
        proto, transport = rig.connect()
        rig.clock.advance(KEY_EXCHANGE_WAIT)
        (offer,) = payloads(transport)
        transport.clear()
        answer, channel = client_answer(offer)
        sealed = channel.seal(punch_request("nobody").SerializeToString())
        proto.dataReceived(encode_frame(answer) + encode_frame(sealed))
        (msg,) = sealed_messages(transport, channel)
        self.assertEqual(msg.SerializeToString().hex(), "5a00")


class HostileTests(SynchronousTestCase):
    def hostile(self, send: Callable[[Rig, Any, StringTransport], None], *log: str) -> Rig:
        """Run C{send} on one connection; it must be closed with C{log} in the log, and a
        second connection must still be served."""
        logged = Logged(self)
        rig = Rig()
        proto, transport = rig.connect()
        send(rig, proto, transport)
        self.assertTrue(closed(transport))
        self.assertTrue(logged.has("198.51.100.1", *log), logged.lines)
        proto.connectionLost(None)
        self.assertEqual(rig.factory.open_connections, 0)
        self.assertEqual(rig.clock.getDelayedCalls(), [])
        good, good_transport = rig.connect("198.51.100.2")
        good.dataReceived(bytes.fromhex("14a201020803"))
        self.assertEqual(good_transport.value().hex(), "1caa010408b1a803")
        return rig

    def test_garbage_answer(self) -> None:
        """Bytes that are no message, as the answer to the offer: closed, reason logged."""

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            rig.clock.advance(KEY_EXCHANGE_WAIT)
            proto.dataReceived(encode_frame(b"\xff\xff\xff\xff"))

        rig = self.hostile(send, "secure TCP", "not a RendezvousMessage")
        self.assertEqual(rig.factory.key_exchanges.failed, 1)

    def test_box_that_does_not_open(self) -> None:
        """An answer sealed to another key: closed, reason logged."""

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            rig.clock.advance(KEY_EXCHANGE_WAIT)
            other = key_exchange_offer(SERVER_KEY, PrivateKey.generate().public_key)
            answer, _ = client_answer(other)
            proto.dataReceived(encode_frame(answer))

        self.hostile(send, "sealed session key does not open")

    def test_mac_failure(self) -> None:
        """A sealed frame with one flipped bit: closed, reason logged, nothing handled."""

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            channel = secure_client(rig, proto, transport)
            frame = bytearray(channel.seal(punch_request().SerializeToString()))
            frame[-1] ^= 0x80
            proto.dataReceived(encode_frame(bytes(frame)))
            self.assertEqual(rig.udp.sent, [])
            self.assertEqual(rig.server.parked_count(), 0)

        self.hostile(send, "decryption failed at counter 1")

    def test_replayed_frame(self) -> None:
        """The same sealed request sent twice: the copy fails its MAC and closes."""

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            channel = secure_client(rig, proto, transport)
            # A stock client may repeat its PunchHoleRequest: the copy must be sealed anew.
            frame = encode_frame(channel.seal(punch_request("nobody").SerializeToString()))
            proto.dataReceived(frame + frame)

        self.hostile(send, "decryption failed at counter 2")

    def test_replayed_exchange_on_new_connection(self) -> None:
        """A recorded answer and sealed request replayed on a new connection: closed."""
        rig = Rig()
        victim, victim_transport = rig.connect()
        rig.clock.advance(KEY_EXCHANGE_WAIT)
        (offer,) = payloads(victim_transport)
        answer, channel = client_answer(offer, PrivateKey.generate(), os.urandom(32))
        recording = encode_frame(answer) + encode_frame(
            channel.seal(punch_request().SerializeToString())
        )
        victim.dataReceived(recording)
        self.assertEqual(len(rig.udp.sent), 1)

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            rig.clock.advance(KEY_EXCHANGE_WAIT)
            proto.dataReceived(recording)
            self.assertEqual(rig.udp.sent, [])

        self.hostile(send, "sealed session key does not open")

    def test_stall_after_offer(self) -> None:
        """A client that never answers the offer is closed at the 30 s read deadline."""

        def send(rig: Rig, proto: Any, transport: StringTransport) -> None:
            rig.clock.advance(KEY_EXCHANGE_WAIT)
            proto.dataReceived(b"\x05")  # half a frame header, then nothing
            rig.clock.advance(29.0)
            self.assertFalse(closed(transport))
            rig.clock.advance(1.0)

        self.hostile(send, "30 s without a message", "KeyExchange unanswered")

    def test_unsolicited_key_exchange_first(self) -> None:
        """A KeyExchange sent before any offer is a plaintext message the port refuses."""

        rig = Rig()
        proto, transport = rig.connect()
        answer, _ = client_answer(bytes.fromhex(OFFER_HEX))
        proto.dataReceived(encode_frame(answer))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(closed(transport))
        self.assertEqual(rig.factory.key_exchanges, KeyExchangeCounters())

    def test_many_silent_connections_bounded(self) -> None:
        """Each silent connection gets one offer and holds one small state; closing them
        leaves no timer and no counts behind."""
        rig = Rig()
        conns = [rig.connect(f"198.51.100.{i % 200 + 1}", 1000 + i) for i in range(500)]
        rig.clock.advance(KEY_EXCHANGE_WAIT)
        for _proto, transport in conns:
            self.assertEqual(len(payloads(transport)), 1)
        self.assertEqual(rig.factory.key_exchanges.offered, 500)
        rig.clock.advance(30)
        for proto, transport in conns:
            self.assertTrue(closed(transport))
            proto.connectionLost(None)
        self.assertEqual(rig.factory.open_connections, 0)
        self.assertEqual(rig.clock.getDelayedCalls(), [])

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=8), st.booleans())
    def test_garbage_after_offer_never_raises(self, chunks: list[bytes], secure: bool) -> None:
        """Any bytes after the offer (or after securing) never raise; state stays consistent."""
        rig = Rig()
        proto, transport = rig.connect()
        if secure:
            secure_client(rig, proto, transport)
        else:
            rig.clock.advance(KEY_EXCHANGE_WAIT)
        for chunk in chunks:
            proto.dataReceived(chunk)
        proto.connectionLost(None)
        self.assertEqual(rig.server.parked_count(), 0)
        self.assertEqual(rig.factory.open_connections, 0)
        self.assertEqual(rig.clock.getDelayedCalls(), [])


# --- a real twistd litedesk-relay, reached by the stock-client emulator -------------------


class FakeHost:
    """A RustDesk host on 127.0.0.2: registered by UDP; answers one PunchHole with a
    PunchHoleSent on a new plaintext TCP connection, as rendezvous_mediator.rs does."""

    def __init__(self, port: int) -> None:
        self.port = port
        reg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=HOST_ID, uuid=UUID, pk=HOST_PK))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 0))
        self.sock.settimeout(10)
        self.sock.sendto(reg.SerializeToString(), ("127.0.0.1", port))
        if self.sock.recv(100).hex() != "820100":
            raise RuntimeError("host registration refused")
        self.tcp_port = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._answer, daemon=True)
        self.thread.start()

    def _answer(self) -> None:
        try:
            push = rz.RendezvousMessage()
            push.ParseFromString(self.sock.recv(2000))
            sent = rz.PunchHoleSent(
                socket_addr=push.punch_hole.socket_addr, id=HOST_ID, version="1.4.9"
            )
            with socket.create_connection(
                ("127.0.0.1", self.port), timeout=10, source_address=("127.0.0.2", 0)
            ) as conn:
                self.tcp_port = conn.getsockname()[1]
                conn.sendall(
                    encode_frame(rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString())
                )
                conn.recv(100)  # until the server closes: it sends nothing to a host
        except BaseException as e:  # reported by the test
            self.error = e

    def close(self) -> None:
        self.thread.join(15)
        self.sock.close()


class RealServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.port = free_port_pair()
        self.log = Path(self.mktemp())
        data = Path(self.mktemp())
        self.relay = RelayProcess(data, self.port, self.log, "--key", "-")
        self.addCleanup(self.relay.stop)
        self.key = (data / "id_ed25519.pub").read_text().strip()
        self.server = f"127.0.0.1:{self.port}"

    def test_logged_in_client_punch(self) -> None:
        """A 1.4.1+ client with a login secures the stream, and its punch request reaches a
        host and comes back sealed with the host's server-signed key."""
        host = FakeHost(self.port)
        answer, sealed = emu.logged_in_punch_hole_request(
            self.server, self.key, HOST_ID, token="api-token", secure_wait=5.0
        )
        host.close()
        self.assertIsNone(host.error)
        self.assertTrue(sealed)
        self.assertEqual(answer.kind, "punch")
        self.assertEqual(answer.peer_addr, ("127.0.0.2", host.tcp_port))
        self.assertEqual(answer.host_pk, HOST_PK)

    def test_logged_in_client_refusals_sealed(self) -> None:
        """Refusals reach a secured client as RustDesk's texts."""
        with self.assertRaises(emu.RendezvousFailure) as caught:
            emu.logged_in_punch_hole_request(self.server, self.key, "nobody1", token="t")
        self.assertEqual(str(caught.exception), "ID does not exist")

    def test_wrong_server_key_fails_to_secure(self) -> None:
        """A client configured with another key fails as RustDesk shows it."""
        other = public_b64(SigningKey.generate())
        with self.assertRaises(emu.SecureTcpFailure) as caught:
            emu.logged_in_punch_hole_request(self.server, other, HOST_ID, token="t")
        self.assertEqual(
            str(caught.exception), "Failed to secure tcp: Signature mismatch in key exchange"
        )

    def test_plain_client_gets_exact_bytes_and_no_offer(self) -> None:
        """A client speaking at once gets exactly the plaintext vectors, and nothing else
        even when it stays connected past the wait."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(encode_frame(punch_request(licence="wrong").SerializeToString()))
            got = b""
            s.settimeout(KEY_EXCHANGE_WAIT * 4)
            try:
                while True:
                    data = s.recv(1000)
                    if not data:
                        break
                    got += data
            except TimeoutError:
                pass
        self.assertEqual(got.hex(), "105a021803")
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(bytes.fromhex("14a201020803"))
            port = s.getsockname()[1]
            got = b""
            while data := s.recv(1000):
                got += data
        expected = rz.RendezvousMessage(test_nat_response=rz.TestNatResponse(port=port))
        self.assertEqual(got, encode_frame(expected.SerializeToString()))

    def test_relay_and_nat_port_never_offer(self) -> None:
        """Silent clients of the relay (P+1) and the NAT-test port (P-1) get nothing."""
        for port in (self.port + 1, self.port - 1):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                readable, _, _ = select.select([s], [], [], KEY_EXCHANGE_WAIT * 3)
                self.assertEqual(readable, [], port)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            readable, _, _ = select.select([s], [], [], KEY_EXCHANGE_WAIT * 3)
            self.assertEqual(readable, [s])

    def test_hostile_answers_closed_logged_listener_fine(self) -> None:
        """A garbage answer, a tampered sealed frame and a replayed recording each close
        their connection with a logged reason; a stock client is served afterwards."""

        def offered() -> socket.socket:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            payload = emu.RendezvousStream(s).next_payload(5.0)
            assert payload is not None and payload[:2] == b"\xca\x01"
            return s

        def closed_by_server(s: socket.socket) -> bool:
            s.settimeout(5)
            try:
                return s.recv(100) == b""
            except ConnectionResetError:
                return True

        with offered() as s:
            s.sendall(encode_frame(b"\xff\xff\xff\xff"))
            self.assertTrue(closed_by_server(s))

        # A real exchange, recorded on its way out; then a tampered frame on it.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            recorder = _Recorder(s)
            stream = emu.RendezvousStream(recorder)  # type: ignore[arg-type]
            self.assertTrue(emu.secure_tcp(stream, self.key, wait=5.0))
            stream.send(punch_request("nobody2", self.key))
            reply = stream.next_message(5.0)
            assert reply is not None
            self.assertEqual(reply.SerializeToString().hex(), "5a00")
            assert stream.channel is not None
            bad = bytearray(stream.channel.seal(punch_request("x", self.key).SerializeToString()))
            bad[-1] ^= 1
            s.sendall(encode_frame(bytes(bad)))
            self.assertTrue(closed_by_server(s))

        with offered() as s:
            s.sendall(recorder.sent)
            self.assertTrue(closed_by_server(s))

        reasons = (
            "not a RendezvousMessage",
            "decryption failed at counter 2",
            "sealed session key does not open",
        )
        wait_until(lambda: all(r in self.log.read_text() for r in reasons), timeout=10)
        with self.assertRaises(emu.RendezvousFailure) as caught:
            emu.punch_hole_request(self.server, self.key, "nobody3")
        self.assertEqual(str(caught.exception), "ID does not exist")


class _Recorder:
    """A socket that remembers what was sent through it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PlainServerTests(SynchronousTestCase):
    def test_server_that_cannot_sign_leaves_logged_in_clients_waiting(self) -> None:
        """With a literal licence (no key pair) nothing is offered: a logged-in client fails
        as it does against OSS hbbs, "Failed to secure tcp: deadline has elapsed"."""
        port = free_port_pair()
        relay = RelayProcess(Path(self.mktemp()), port, Path(self.mktemp()), "--key", "plain")
        self.addCleanup(relay.stop)
        key = public_b64(SERVER_KEY)
        with self.assertRaises(emu.SecureTcpFailure) as caught:
            emu.logged_in_punch_hole_request(
                f"127.0.0.1:{port}", key, HOST_ID, token="t", secure_wait=KEY_EXCHANGE_WAIT * 3
            )
        self.assertEqual(str(caught.exception), "Failed to secure tcp: deadline has elapsed")
        reply = udp_exchange(
            rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="x")).SerializeToString(),
            port,
            "127.0.0.1",
        )
        self.assertEqual(reply.hex(), "3a021001")
