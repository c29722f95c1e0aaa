"""One host, both protocols: litedesk.rustdesk.detect and C{--rustdesk-clients}.

Unit tests drive L{ProtocolDetector} on a C{task.Clock} with string
transports: a ClientHello goes to TLS, silence to RustDesk's secure channel,
garbage is closed, trickling peers are bounded, and the host's admission
counts the connection in every phase.  The end-to-end test runs a real
C{twistd -n litedesk-host --listen ... --rustdesk-clients} on a private Xvfb
with the stock-client emulator (tests/support/rustdesk_client.py) and the
LiteDesk headless viewer against the same port.
"""

from __future__ import annotations

import base64
import re
import socket
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from litedesk.host.agent import _Sessions
from litedesk.host.identity import HostIdentity
from litedesk.host.options import HostOptions
from litedesk.proto import message_pb2 as pb
from litedesk.rustdesk.channel import ChannelTransport, SecureChannelProtocol
from litedesk.rustdesk.detect import (
    DETECT_TIMEOUT,
    RUSTDESK_HANDSHAKE_TIMEOUT,
    DetectingFactory,
    ProtocolDetector,
    RustDeskSessionStarter,
    rustdesk_host_protocol,
)
from litedesk.screen.backpressure import transport_buffered
from litedesk.session.admission import Admission
from litedesk.session.host_certificate import host_context_factory
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from tests.support import rustdesk_client as rc

from .support.listening_host import ListeningHost
from .support.polling import wait_until
from .support.skips import requires

HOST_ID = "123456789"
PEER = IPv4Address("TCP", "10.0.0.7", 40000)
# The start of a TLS 1.3 ClientHello: handshake record, version 3.1.
CLIENT_HELLO_START = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


class Recorder(Protocol):
    """An inner protocol that records what reaches it."""

    def __init__(self) -> None:
        self.received = b""
        self.made = False
        self.lost = False
        self.handshakes = 0

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True

    def handshakeCompleted(self) -> None:
        self.handshakes += 1


class AbortableTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__(peerAddress=PEER)
        self.aborted = False

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def _capture_logs(case: SynchronousTestCase) -> list[LogEvent]:
    events: list[LogEvent] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class Rig:
    """A detector on a Clock whose two paths record what they are given."""

    def __init__(
        self,
        admission: Admission | None = None,
        rustdesk: bool = False,
        allow_insecure: bool = False,
    ) -> None:
        self.clock = Clock()
        self.key = SigningKey.generate()
        self.tls = Recorder()
        self.sessions: list[Recorder] = []
        self.rustdesk_protos: list[IProtocol] = []
        self.releases: list[Callable[[], None]] = []

        def make_rustdesk(release: Callable[[], None]) -> IProtocol:
            self.releases.append(release)
            proto: IProtocol
            if rustdesk:
                proto = rustdesk_host_protocol(
                    self.key,
                    HOST_ID,
                    self._session,
                    self.clock,
                    release,
                    allow_insecure=allow_insecure,
                )
            else:
                proto = Recorder()
            self.rustdesk_protos.append(proto)
            return proto

        self.detector = ProtocolDetector(
            lambda: self.tls, make_rustdesk, self.clock, admission=admission
        )
        self.transport = AbortableTransport()
        self.detector.makeConnection(self.transport)

    def _session(self) -> Recorder:
        s = Recorder()
        self.sessions.append(s)
        return s


class DetectionTests(SynchronousTestCase):
    def test_client_hello_goes_to_tls_with_its_bytes(self) -> None:
        rig = Rig()
        rig.detector.dataReceived(CLIENT_HELLO_START)
        self.assertEqual(rig.detector.chosen, "tls")
        self.assertIs(rig.detector.switched_to, rig.tls)
        self.assertTrue(rig.tls.made)
        self.assertEqual(rig.tls.received, CLIENT_HELLO_START)
        rig.detector.dataReceived(b"more")
        self.assertEqual(rig.tls.received, CLIENT_HELLO_START + b"more")
        # The decision is final: the silence timer no longer fires.
        rig.clock.advance(DETECT_TIMEOUT * 10)
        self.assertEqual(rig.rustdesk_protos, [])
        self.assertEqual(rig.transport.value(), b"")

    def test_one_byte_is_enough(self) -> None:
        rig = Rig()
        rig.clock.advance(DETECT_TIMEOUT * 0.9)
        rig.detector.dataReceived(b"\x16")
        self.assertEqual(rig.tls.received, b"\x16")

    def test_silence_goes_to_rustdesk(self) -> None:
        rig = Rig()
        rig.clock.advance(DETECT_TIMEOUT * 0.99)
        self.assertIsNone(rig.detector.chosen)
        self.assertEqual(rig.rustdesk_protos, [])
        rig.clock.advance(DETECT_TIMEOUT * 0.02)
        self.assertEqual(rig.detector.chosen, "rustdesk")
        [proto] = rig.rustdesk_protos
        self.assertIs(rig.detector.switched_to, proto)
        rig.detector.dataReceived(b"after")
        assert isinstance(proto, Recorder)
        self.assertEqual(proto.received, b"after")

    def test_silence_sends_signed_id_first(self) -> None:
        rig = Rig(rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        frames = FrameDecoder().feed(rig.transport.value())
        self.assertEqual(len(frames), 1)
        msg = pb.Message()
        msg.ParseFromString(frames[0])
        self.assertEqual(msg.WhichOneof("union"), "signed_id")
        # Signed by the host's identity key, for its id.
        rc.open_id_pk(msg.signed_id.id, bytes(rig.key.verify_key), HOST_ID)

    def test_garbage_is_closed_with_a_reason(self) -> None:
        events = _capture_logs(self)
        rig = Rig()
        rig.detector.dataReceived(b"GET / HTTP/1.1\r\n")
        self.assertEqual(rig.detector.chosen, "refused")
        self.assertTrue(rig.transport.aborted)
        self.assertIn("0x47", rig.detector.close_reason or "")
        self.assertFalse(rig.tls.made)
        rig.clock.advance(DETECT_TIMEOUT * 10)
        self.assertEqual(rig.rustdesk_protos, [])
        reasons = [e.get("reason") for e in events if "reason" in e]
        self.assertIn(rig.detector.close_reason, reasons)

    def test_bytes_after_a_refusal_are_ignored(self) -> None:
        rig = Rig()
        rig.detector.dataReceived(b"\x00")
        rig.detector.dataReceived(b"\x16\x03\x01")
        self.assertFalse(rig.tls.made)

    def test_empty_data_decides_nothing(self) -> None:
        rig = Rig()
        rig.detector.dataReceived(b"")
        self.assertIsNone(rig.detector.chosen)

    def test_loss_before_a_decision(self) -> None:
        rig = Rig()
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        rig.clock.advance(DETECT_TIMEOUT * 10)
        self.assertIsNone(rig.detector.chosen)
        self.assertEqual(rig.clock.getDelayedCalls(), [])

    def test_byte_a_second_rustdesk_peer_is_bounded(self) -> None:
        """A peer trickling its PublicKey cannot stretch the key exchange."""
        events = _capture_logs(self)
        rig = Rig(rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        signed = pb.Message()
        signed.ParseFromString(FrameDecoder().feed(rig.transport.value())[0])
        host_x = rc.open_id_pk(signed.signed_id.id, bytes(rig.key.verify_key), HOST_ID)
        reply, _ = rc.build_public_key(host_x)
        frame = rc.encode_frame(reply.SerializeToString())
        for i in range(len(frame) - 1):
            if rig.transport.disconnecting:
                break
            rig.detector.dataReceived(frame[i : i + 1])
            rig.clock.advance(1.0)
        self.assertTrue(rig.transport.disconnecting)
        self.assertEqual(rig.sessions, [])
        self.assertLessEqual(rig.clock.seconds(), DETECT_TIMEOUT + RUSTDESK_HANDSHAKE_TIMEOUT + 1)
        [proto] = rig.rustdesk_protos
        assert isinstance(proto, SecureChannelProtocol)
        self.assertIn("handshake not finished", proto.close_reason or "")
        self.assertTrue(any("handshake not finished" in str(e.get("reason")) for e in events))

    def test_byte_a_second_tls_peer_is_handed_to_tls_at_once(self) -> None:
        # The TLS session's own absolute deadline (HostSession.handshake_timeout)
        # then bounds it: detection adds no waiting of its own.
        rig = Rig()
        rig.detector.dataReceived(b"\x16")
        self.assertEqual(rig.clock.getDelayedCalls(), [])
        for b in CLIENT_HELLO_START[1:]:
            rig.clock.advance(1.0)
            rig.detector.dataReceived(bytes([b]))
        self.assertEqual(rig.tls.received, CLIENT_HELLO_START)

    def test_a_flood_of_garbage_is_read_once(self) -> None:
        rig = Rig()
        rig.detector.dataReceived(b"\xff" * (1 << 20))
        self.assertTrue(rig.transport.aborted)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.binary(max_size=64), max_size=6))
    def test_any_first_bytes(self, chunks: list[bytes]) -> None:
        """Whatever arrives, dataReceived never raises and the first byte decides."""
        rig = Rig(rustdesk=True)
        for chunk in chunks:
            rig.detector.dataReceived(chunk)
        data = b"".join(chunks)
        if not data:
            self.assertIsNone(rig.detector.chosen)
        elif data[0] == 0x16:
            self.assertEqual(rig.detector.chosen, "tls")
            self.assertEqual(rig.tls.received, data)
        elif data[0] == 0x00:
            self.assertEqual(rig.detector.chosen, "rustdesk")
            self.assertFalse(rig.tls.made)
        else:
            self.assertEqual(rig.detector.chosen, "refused")
            self.assertTrue(rig.transport.aborted)
            self.assertFalse(rig.tls.made)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=200), max_size=6))
    def test_any_bytes_after_silence(self, chunks: list[bytes]) -> None:
        """After silence the RustDesk channel reads anything without raising."""
        rig = Rig(rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        for chunk in chunks:
            rig.detector.dataReceived(chunk)
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT)
        [proto] = rig.rustdesk_protos
        assert isinstance(proto, SecureChannelProtocol)
        # Random bytes never complete a valid PublicKey: closed, with a reason.
        self.assertIsNotNone(proto.close_reason)
        self.assertEqual(rig.sessions, [])


def _handshake(rig: Rig) -> rc.SecretChannel:
    """Act as a stock client on the rig's transport: answer SignedId with PublicKey."""
    rig.clock.advance(DETECT_TIMEOUT)
    signed = pb.Message()
    signed.ParseFromString(FrameDecoder().feed(rig.transport.value())[0])
    rig.transport.clear()
    host_x = rc.open_id_pk(signed.signed_id.id, bytes(rig.key.verify_key), HOST_ID)
    reply, key = rc.build_public_key(host_x)
    rig.detector.dataReceived(rc.encode_frame(reply.SerializeToString()))
    return rc.SecretChannel(key)


class RustDeskSessionTests(SynchronousTestCase):
    def test_session_starts_after_the_key_exchange_and_hears_of_it(self) -> None:
        rig = Rig(rustdesk=True)
        secret = _handshake(rig)
        [session] = rig.sessions
        self.assertTrue(session.made)
        self.assertEqual(session.handshakes, 1)
        # Frames reach the session decrypted, and its frames leave sealed.
        login = pb.Message(login_request=pb.LoginRequest(username=HOST_ID))
        rig.detector.dataReceived(rc.encode_frame(secret.seal(login.SerializeToString())))
        self.assertEqual(session.received, encode_frame(login.SerializeToString()))
        assert session.transport is not None
        hash_msg = pb.Message(hash=pb.Hash(salt="s", challenge="c"))
        session.transport.write(encode_frame(hash_msg.SerializeToString()))
        [sealed] = FrameDecoder().feed(rig.transport.value())
        self.assertEqual(secret.open(sealed), hash_msg.SerializeToString())

    def test_session_sees_the_tcp_backlog(self) -> None:
        rig = Rig(rustdesk=True)
        _handshake(rig)
        [session] = rig.sessions
        rig.transport.producerState = "producing"
        # StringTransport keeps everything written in io: stand in a
        # FileDescriptor's dataBuffer to see that the walk reaches it.
        rig.transport.dataBuffer = b"x" * 1000  # type: ignore[attr-defined]
        self.assertEqual(transport_buffered(session.transport), 1000)

    def test_flipped_byte_closes_and_the_session_is_lost(self) -> None:
        rig = Rig(rustdesk=True)
        secret = _handshake(rig)
        [session] = rig.sessions
        sealed = bytearray(secret.seal(pb.Message(hash=pb.Hash()).SerializeToString()))
        sealed[-1] ^= 1
        rig.detector.dataReceived(rc.encode_frame(bytes(sealed)))
        self.assertEqual(session.received, b"")
        self.assertTrue(rig.transport.disconnecting)
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(session.lost)

    def test_insecure_client_refused(self) -> None:
        rig = Rig(rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        rig.transport.clear()
        rig.detector.dataReceived(rc.encode_frame(b""))
        self.assertTrue(rig.transport.disconnecting)
        self.assertEqual(rig.sessions, [])
        [refusal] = FrameDecoder().feed(rig.transport.value())
        msg = pb.Message()
        msg.ParseFromString(refusal)
        self.assertTrue(msg.login_response.error)

    def test_client_without_host_key_is_refused_at_once(self) -> None:
        """A stock client with no verified key sends an empty Message first."""
        rig = Rig(rustdesk=True)
        rig.detector.dataReceived(rc.encode_frame(b""))
        self.assertEqual(rig.detector.chosen, "rustdesk")
        self.assertTrue(rig.transport.disconnecting)
        self.assertEqual(rig.sessions, [])
        frames = FrameDecoder().feed(rig.transport.value())
        first, last = pb.Message(), pb.Message()
        first.ParseFromString(frames[0])
        last.ParseFromString(frames[-1])
        self.assertEqual(first.WhichOneof("union"), "signed_id")
        self.assertTrue(last.login_response.error)

    def test_client_without_host_key_allowed_when_insecure(self) -> None:
        rig = Rig(rustdesk=True, allow_insecure=True)
        rig.detector.dataReceived(rc.encode_frame(b""))
        [session] = rig.sessions
        self.assertEqual(session.handshakes, 1)
        assert isinstance(session.transport, ChannelTransport)
        self.assertFalse(session.transport.encrypted)

    def test_starter_without_a_handshake_listener(self) -> None:
        inner = Protocol()
        released: list[bool] = []
        starter = RustDeskSessionStarter(inner, lambda: released.append(True))
        t = StringTransport()
        starter.makeConnection(t)
        self.assertIs(inner.transport, t)
        self.assertEqual(released, [True])


class AdmissionTests(SynchronousTestCase):
    def test_counted_until_tls_takes_over(self) -> None:
        admission = Admission(Clock())
        rig = Rig(admission)
        self.assertIn(rig.detector, admission)
        rig.detector.dataReceived(b"\x16")
        self.assertNotIn(rig.detector, admission)

    def test_counted_through_the_rustdesk_handshake(self) -> None:
        admission = Admission(Clock())
        rig = Rig(admission, rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        self.assertIn(rig.detector, admission)
        _handshake_after_silence(rig)
        self.assertNotIn(rig.detector, admission)
        self.assertEqual(len(rig.sessions), 1)

    def test_released_on_loss_and_on_refusal(self) -> None:
        admission = Admission(Clock())
        rig = Rig(admission, rustdesk=True)
        rig.clock.advance(DETECT_TIMEOUT)
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(len(admission), 0)
        rig2 = Rig(admission)
        rig2.detector.dataReceived(b"x")
        self.assertEqual(len(admission), 0)

    def test_refused_when_full_and_evictable(self) -> None:
        admission = Admission(Clock(), per_source=1)
        first = Rig(admission)
        second = Rig(admission)
        self.assertEqual(second.detector.chosen, "refused")
        self.assertTrue(second.transport.aborted)
        self.assertEqual(second.clock.getDelayedCalls(), [])
        first.detector.evict("test")
        self.assertTrue(first.transport.aborted)
        self.assertEqual(first.clock.getDelayedCalls(), [])


def _handshake_after_silence(rig: Rig) -> None:
    signed = pb.Message()
    signed.ParseFromString(FrameDecoder().feed(rig.transport.value())[0])
    host_x = rc.open_id_pk(signed.signed_id.id, bytes(rig.key.verify_key), HOST_ID)
    reply, _ = rc.build_public_key(host_x)
    rig.detector.dataReceived(rc.encode_frame(reply.SerializeToString()))


class FactoryAndOptionTests(SynchronousTestCase):
    def test_factory_builds_detectors(self) -> None:
        clock = Clock()
        factory = DetectingFactory(lambda: ProtocolDetector(Recorder, lambda r: Recorder(), clock))
        proto = factory.buildProtocol(PEER)
        self.assertIsInstance(proto, ProtocolDetector)
        self.assertIs(proto.factory, factory)

    def _sessions(self, rustdesk_clients: bool) -> _Sessions:
        key = SigningKey.generate()
        ctx: Any = SimpleNamespace(clock=Clock(), admission=None)
        return _Sessions(
            ctx,
            "h264",
            host_context_factory(key, HOST_ID),
            HostIdentity(HOST_ID, b"uuid", key),
            Clock(),
            rustdesk_clients=rustdesk_clients,
            allow_insecure=False,
        )

    def test_off_builds_tls_sessions_only(self) -> None:
        sessions = self._sessions(False)
        self.assertIsInstance(sessions.factory(direct=True), TLSMemoryBIOFactory)
        for relayed in (False, True):
            proto = sessions.make_session(relayed=relayed)
            self.assertIsInstance(proto, TLSMemoryBIOProtocol)
            self.assertEqual(proto.wrappedProtocol.relayed, relayed)
            self.assertFalse(proto.wrappedProtocol.rustdesk)

    def test_on_detects_except_on_relay_legs(self) -> None:
        sessions = self._sessions(True)
        self.assertIsInstance(sessions.factory(direct=True), DetectingFactory)
        self.assertIsInstance(sessions.make_session(), ProtocolDetector)
        relay_leg = sessions.make_session(relayed=True)
        self.assertIsInstance(relay_leg, TLSMemoryBIOProtocol)
        self.assertTrue(sessions.rustdesk_session(direct=True).rustdesk)

    def test_flags(self) -> None:
        o = HostOptions()
        o.parseOptions(["--listen", "tcp:0", "--config-dir", "/nonexistent"])
        self.assertFalse(o["rustdesk-clients"])
        self.assertFalse(o["allow-insecure-rustdesk"])
        o = HostOptions()
        o.parseOptions(["--listen", "tcp:0", "--rustdesk-clients", "--allow-insecure-rustdesk"])
        self.assertTrue(o["rustdesk-clients"])
        self.assertTrue(o["allow-insecure-rustdesk"])
        self.assertIn("default", str(HostOptions().optFlags))

    def test_insecure_needs_the_flag(self) -> None:
        with self.assertRaises(usage.UsageError):
            HostOptions().parseOptions(["--listen", "tcp:0", "--allow-insecure-rustdesk"])


# --- end to end ------------------------------------------------------------------------------

PASSWORD = "rustdesk-host-password"


@requires("Xvfb")
class RustDeskHostEndToEndTests(SynchronousTestCase):
    """A real host with C{--rustdesk-clients}; both kinds of client on its one port."""

    def setUp(self) -> None:
        self.host = ListeningHost(PASSWORD, "--rustdesk-clients", prefix="litedesk-rdhost-")
        self.addCleanup(self.host.stop)
        self.dir, self.port, self.pwfile = self.host.dir, self.host.port, self.host.pwfile
        self.log, self.proc = self.host.log, self.host.proc
        m = re.search(r"LiteDesk host id (\S+), key (\S+),", self._log_text())
        assert m is not None
        self.peer_id = m.group(1)
        self.host_pk = base64.b64decode(m.group(2))
        # The same id and key the config dir holds (what the server would sign).
        cfg = self.dir / "cfg"
        self.assertEqual((cfg / "id").read_text().strip(), self.peer_id)
        self.assertEqual(base64.b64decode((cfg / "id_ed25519.pub").read_text()), self.host_pk)

    def _log_text(self) -> str:
        return self.host.log_text()

    def _client(self) -> rc.RustDeskClient:
        client = rc.RustDeskClient.connect("127.0.0.1", self.port, self.peer_id, self.host_pk)
        self.addCleanup(client.close)
        self.assertTrue(client.handshake())
        return client

    def test_rustdesk_and_litedesk_clients(self) -> None:
        # A wrong password: RustDesk's own error text.
        wrong = self._client()
        result = wrong.login("not-the-password")
        self.assertEqual(result.response.error, "Wrong Password")
        wrong.close()

        # The right one: PeerInfo with displays, then video.
        client = self._client()
        result = client.login(PASSWORD)
        self.assertEqual(result.response.error, "")
        self.assertEqual(result.response.WhichOneof("union"), "peer_info")
        self.assertGreater(len(result.response.peer_info.displays), 0)
        video = client.recv_until("video_frame")
        self.assertTrue(video.HasField("video_frame"))

        # One flipped bit in a sealed frame ends the session.
        client.send_tampered(pb.Message(test_delay=pb.TestDelay(time=1, from_client=True)))
        self.assertTrue(client.closed_by_peer())
        wait_until(
            lambda: "tampered, replayed or reordered" in self._log_text(),
            10,
            message=lambda: f"the refusal in the host log: {self._log_text()[-2000:]}",
        )

        # A key that is not the host's: the emulator refuses the SignedId.
        other = rc.RustDeskClient.connect(
            "127.0.0.1", self.port, self.peer_id, bytes(SigningKey.generate().verify_key)
        )
        self.addCleanup(other.close)
        with self.assertRaises(rc.HandshakeError):
            other.handshake()

        # Garbage first: closed, with the reason in the log.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                answer = s.recv(100)
            except ConnectionResetError:
                answer = b""  # aborted: the host sends nothing
            self.assertEqual(answer, b"")
        wait_until(
            lambda: "is neither a TLS handshake" in self._log_text(), 10, message="the refusal"
        )

        # A stock client holding no verified key for the host declines
        # encryption at once: refused with the error a RustDesk client shows.
        keyless = rc.RustDeskClient.connect("127.0.0.1", self.port, self.peer_id, None)
        self.addCleanup(keyless.close)
        self.assertFalse(keyless.handshake())
        refusal = keyless.recv_until("login_response").login_response
        self.assertTrue(refusal.error)
        self.assertTrue(keyless.closed_by_peer())

        # The LiteDesk viewer on the same port: the TLS path, as before.
        shot = self.dir / "shot.png"
        viewer, _seconds = self.host.screenshot(shot)
        self.assertEqual(viewer.returncode, 0, viewer.stderr[-2000:])
        self.assertTrue(shot.exists())
        self.assertEqual(shot.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
