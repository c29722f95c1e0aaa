"""The viewer reads the host's first frame: litedesk.rustdesk.viewer_detect.

L{HostDetector} runs on a C{task.Clock} with string transports; the host's
side is played by the stock-host emulator's building blocks where a RustDesk
host is meant (tests/support/rustdesk_client.py holds the framing and the
key handling, written from RustDesk's source) and by LiteDesk's own
L{HostHandshake} where a LiteDesk host is meant.  The whole viewer against a
real LiteDesk host runs in tests/test_e2e_session.py; against an emulated
RustDesk host in tests/test_viewer_rustdesk_host.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.rustdesk.channel import ChannelTransport, SecureChannelProtocol
from litedesk.rustdesk.secure import HostHandshake
from litedesk.rustdesk.viewer_detect import (
    LEGACY_HOST_WAIT,
    PROTOCOL_LITEDESK,
    PROTOCOL_RUSTDESK,
    HostDetector,
)
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer.connection import session_protocol
from tests.support import rustdesk_client as rc

HOST_ID = "123456789"
PEER = IPv4Address("TCP", "10.0.0.8", 21118)


class Recorder(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class AbortableTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def stock_signed_id(key: SigningKey, peer_id: str = HOST_ID) -> tuple[bytes, PrivateKey]:
    """A stock RustDesk host's SignedId frame: IdPk{id, X25519 pk}, no mark."""
    x = PrivateKey.generate()
    idpk = pb.IdPk(id=peer_id, pk=bytes(x.public_key)).SerializeToString()
    msg = pb.Message()
    msg.signed_id.id = bytes(key.sign(idpk))
    return rc.encode_frame(msg.SerializeToString()), x


def litedesk_signed_id(key: SigningKey) -> bytes:
    """A LiteDesk host's SignedId frame, as its detector sends it."""
    return rc.encode_frame(HostHandshake(key, HOST_ID, offer_tls=True).begin())


class Rig:
    def __init__(self, host_key: SigningKey | None, known: bool = True) -> None:
        self.clock = Clock()
        self.session = ViewerSession(self.clock, HOST_ID, "pw")
        self.tls = Recorder()
        verify = host_key.verify_key if (host_key is not None and known) else None
        self.detector = HostDetector(self.session, lambda: self.tls, verify, HOST_ID, self.clock)
        self.transport = AbortableTransport()
        self.detector.makeConnection(self.transport)
        self.errors: list[Any] = []
        self.session.logged_in.addErrback(lambda f: self.errors.append(f.value))


class HostDetectorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.key = SigningKey.generate()

    def test_litedesk_host_gets_tls(self) -> None:
        rig = Rig(self.key)
        rig.detector.dataReceived(litedesk_signed_id(self.key))
        self.assertEqual(rig.detector.protocol, PROTOCOL_LITEDESK)
        self.assertIs(rig.detector.switched_to, rig.tls)
        self.assertTrue(rig.tls.made)
        # The viewer itself wrote nothing: the TLS protocol sends its hello.
        self.assertEqual(rig.transport.value(), b"")
        rig.detector.dataReceived(b"\x16\x03\x03")
        self.assertEqual(rig.tls.received, b"\x16\x03\x03")
        rig.clock.advance(LEGACY_HOST_WAIT * 2)  # the timer is gone
        self.assertIs(rig.detector.switched_to, rig.tls)

    def test_a_frame_in_pieces(self) -> None:
        rig = Rig(self.key)
        frame = litedesk_signed_id(self.key)
        for i in range(len(frame)):
            self.assertFalse(rig.tls.made)
            rig.detector.dataReceived(frame[i : i + 1])
        self.assertTrue(rig.tls.made)

    def test_direct_connection_reads_the_mark_unverified_and_uses_tls(self) -> None:
        # No server vouches for an address; TLS pinning (known_hosts) does.
        rig = Rig(self.key, known=False)
        rig.detector.dataReceived(litedesk_signed_id(self.key))
        self.assertEqual(rig.detector.protocol, PROTOCOL_LITEDESK)

    def test_rustdesk_host_gets_the_secure_channel(self) -> None:
        rig = Rig(self.key)
        frame, host_x = stock_signed_id(self.key)
        rig.detector.dataReceived(frame)
        self.assertEqual(rig.detector.protocol, PROTOCOL_RUSTDESK)
        channel = rig.detector.switched_to
        self.assertIsInstance(channel, SecureChannelProtocol)
        self.assertFalse(rig.tls.made)
        # The viewer answered with PublicKey, whose box opens to the session key.
        reader = rc.FrameReader()
        reader.feed(rig.transport.value())
        answer = pb.Message()
        answer.ParseFromString(reader.next() or b"")
        self.assertEqual(answer.WhichOneof("union"), "public_key")
        key = Box(host_x, PublicKey(answer.public_key.asymmetric_value)).decrypt(
            answer.public_key.symmetric_value, bytes(24)
        )
        # The session runs inside, over the sealed stream, and says so.
        self.assertIsInstance(rig.session.transport, ChannelTransport)
        self.assertEqual(session_protocol(rig.session), PROTOCOL_RUSTDESK)
        secret = rc.SecretChannel(bytes(key))
        rig.transport.clear()
        hash_msg = pb.Message(hash=pb.Hash(salt="salt", challenge="chal"))
        rig.detector.dataReceived(rc.encode_frame(secret.seal(hash_msg.SerializeToString())))
        reader = rc.FrameReader()
        reader.feed(rig.transport.value())
        login = pb.Message()
        login.ParseFromString(secret.open(reader.next() or b""))
        self.assertEqual(login.login_request.username, HOST_ID)
        self.assertEqual(login.login_request.password, rc.password_proof("pw", "salt", "chal"))
        # Told it meets a RustDesk host, the session asks for VP9 as a stock client does.
        self.assertTrue(rig.session.rustdesk)
        self.assertEqual(
            login.login_request.option.supported_decoding.prefer, pb.SupportedDecoding.VP9
        )

    def test_signature_by_another_key_is_refused(self) -> None:
        rig = Rig(self.key)
        frame, _ = stock_signed_id(SigningKey.generate())
        rig.detector.dataReceived(frame)
        self.assertIsNone(rig.detector.protocol)
        self.assertTrue(rig.transport.aborted)
        self.assertEqual(rig.transport.value(), b"")  # nothing sent, not even plaintext
        rig.detector.connectionLost(connectionDone)
        [error] = rig.errors
        self.assertIsInstance(error, SessionError)
        self.assertEqual(error.reason, "host key mismatch")

    def test_marked_signed_id_by_another_key_is_refused_too(self) -> None:
        rig = Rig(self.key)
        rig.detector.dataReceived(litedesk_signed_id(SigningKey.generate()))
        self.assertTrue(rig.transport.aborted)
        self.assertFalse(rig.tls.made)

    def test_rustdesk_host_without_a_vouched_key_is_refused(self) -> None:
        rig = Rig(self.key, known=False)
        frame, _ = stock_signed_id(self.key)
        rig.detector.dataReceived(frame)
        self.assertTrue(rig.transport.aborted)
        self.assertEqual(rig.transport.value(), b"")
        rig.detector.connectionLost(connectionDone)
        [error] = rig.errors
        self.assertEqual(error.reason, "cannot verify a RustDesk host")

    def test_another_id_is_refused_by_the_channel(self) -> None:
        rig = Rig(self.key)
        frame, _ = stock_signed_id(self.key, peer_id="987654321")
        rig.detector.dataReceived(frame)
        channel = rig.detector.switched_to
        assert isinstance(channel, SecureChannelProtocol)
        self.assertIn("names id", channel.close_reason or "")
        self.assertFalse(channel.encrypted)

    def test_not_a_signed_id_is_refused(self) -> None:
        rig = Rig(self.key)
        rig.detector.dataReceived(rc.encode_frame(b""))
        self.assertTrue(rig.transport.aborted)
        self.assertIn("not SignedId", rig.detector.close_reason or "")

    def test_oversized_first_frame_is_refused_at_once(self) -> None:
        rig = Rig(self.key)
        rig.detector.dataReceived(b"\xff\xff\xff\xff")
        self.assertTrue(rig.transport.aborted)
        rig.detector.dataReceived(b"x" * 100000)  # ignored
        self.assertFalse(rig.tls.made)

    def test_silent_host_is_an_older_litedesk_host(self) -> None:
        rig = Rig(self.key)
        rig.clock.advance(LEGACY_HOST_WAIT * 0.99)
        self.assertFalse(rig.tls.made)
        rig.clock.advance(LEGACY_HOST_WAIT * 0.02)
        self.assertEqual(rig.detector.protocol, PROTOCOL_LITEDESK)
        self.assertTrue(rig.tls.made)

    def test_partial_frame_does_not_fall_back_to_tls(self) -> None:
        # A host that has begun to speak is not an older LiteDesk host.
        rig = Rig(self.key)
        rig.detector.dataReceived(litedesk_signed_id(self.key)[:5])
        rig.clock.advance(LEGACY_HOST_WAIT * 2)
        self.assertFalse(rig.tls.made)

    def test_loss_before_a_decision_reaches_the_session(self) -> None:
        rig = Rig(self.key)
        rig.detector.connectionLost(connectionDone)
        self.assertEqual(len(rig.errors), 1)
        self.assertEqual(rig.clock.getDelayedCalls(), [])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=80), max_size=5))
    def test_any_bytes(self, chunks: list[bytes]) -> None:
        """Nothing random chooses a protocol: never raises, never a RustDesk session."""
        rig = Rig(self.key)
        for chunk in chunks:
            rig.detector.dataReceived(chunk)
        self.assertNotEqual(rig.detector.protocol, PROTOCOL_RUSTDESK)
        self.assertFalse(rig.tls.made and bool(b"".join(chunks)))
