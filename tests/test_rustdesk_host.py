"""One host, both protocols: litedesk.rustdesk.detect and the host's session streams.

Unit tests drive L{ProtocolDetector} on a C{task.Clock} with string
transports: the host speaks first with a marked C{SignedId}, a ClientHello
answer goes to TLS, any other answer to RustDesk's secure channel (or to the
refusal of C{--no-rustdesk-clients}), a silent or trickling peer is bounded,
and the host's admission counts the connection in every phase.  The
end-to-end test runs a real C{twistd -n litedesk-host --listen ...} on a
private Xvfb with the stock-client emulator (tests/support/rustdesk_client.py)
and the LiteDesk headless viewer against the same port.
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
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from litedesk.host.agent import _Sessions
from litedesk.host.identity import HostIdentity
from litedesk.host.options import HostOptions
from litedesk.proto import message_pb2 as pb
from litedesk.rustdesk.channel import ChannelTransport, SecureChannelProtocol
from litedesk.rustdesk.detect import (
    RUSTDESK_CLIENTS_OFF,
    RUSTDESK_HANDSHAKE_TIMEOUT,
    DetectingFactory,
    ProtocolDetector,
    RustDeskRefusal,
    RustDeskSessionStarter,
    rustdesk_host_protocol,
)
from litedesk.rustdesk.secure import Handshake, HostHandshake
from litedesk.screen.backpressure import transport_buffered
from litedesk.session.admission import Admission
from litedesk.session.host_certificate import host_context_factory
from litedesk.session.host_session import HostSession
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
    """A detector on a Clock whose two paths record what they are given.

    With C{rustdesk} the RustDesk path is the real channel around recording
    sessions (or, with C{refuse}, around L{RustDeskRefusal}); without, a
    recorder stands in for the whole channel.
    """

    def __init__(
        self,
        admission: Admission | None = None,
        rustdesk: bool = False,
        allow_insecure: bool = False,
        refuse: bool = False,
    ) -> None:
        self.clock = Clock()
        self.key = SigningKey.generate()
        self.tls = Recorder()
        self.sessions: list[IProtocol] = []
        self.rustdesk_protos: list[IProtocol] = []
        self.refuse = refuse

        def make_rustdesk(begun: Handshake, release: Callable[[], None]) -> Any:
            proto: Any
            if rustdesk:
                proto = rustdesk_host_protocol(begun, self._session, self.clock, release)
            else:
                proto = Recorder()
            self.rustdesk_protos.append(proto)
            return proto

        handshake = HostHandshake(self.key, HOST_ID, allow_insecure=allow_insecure, offer_tls=True)
        self.detector = ProtocolDetector(
            handshake, lambda: self.tls, make_rustdesk, self.clock, admission=admission
        )
        self.transport = AbortableTransport()
        self.detector.makeConnection(self.transport)

    def _session(self) -> IProtocol:
        s: IProtocol = RustDeskRefusal() if self.refuse else Recorder()
        self.sessions.append(s)
        return s

    def recorded(self) -> list[Recorder]:
        return [s for s in self.sessions if isinstance(s, Recorder)]

    def signed_id(self) -> pb.Message:
        """The host's first frame, which must be its only one so far."""
        frames = FrameDecoder().feed(self.transport.value())
        assert len(frames) == 1, frames
        msg = pb.Message()
        msg.ParseFromString(frames[0])
        return msg


class DetectionTests(SynchronousTestCase):
    def test_signed_id_first_with_the_mark(self) -> None:
        """The host speaks first; a stock client accepts what it says."""
        rig = Rig()
        msg = rig.signed_id()
        self.assertEqual(msg.WhichOneof("union"), "signed_id")
        # The stock-client emulator (from RustDesk's source) opens it: the
        # mark is an unknown field to RustDesk, inside the signature.
        rc.open_id_pk(msg.signed_id.id, bytes(rig.key.verify_key), HOST_ID)
        idpk = pb.IdPk()
        idpk.ParseFromString(rig.key.verify_key.verify(msg.signed_id.id))
        self.assertTrue(idpk.litedesk_tls)
        self.assertIsNone(rig.detector.chosen)

    def test_a_fresh_key_per_connection(self) -> None:
        a, b = Rig(), Rig()
        self.assertNotEqual(a.signed_id().signed_id.id[64:], b.signed_id().signed_id.id[64:])

    def test_client_hello_goes_to_tls_with_its_bytes(self) -> None:
        rig = Rig()
        rig.transport.clear()
        rig.detector.dataReceived(CLIENT_HELLO_START)
        self.assertEqual(rig.detector.chosen, "tls")
        self.assertIs(rig.detector.switched_to, rig.tls)
        self.assertTrue(rig.tls.made)
        self.assertEqual(rig.tls.received, CLIENT_HELLO_START)
        rig.detector.dataReceived(b"more")
        self.assertEqual(rig.tls.received, CLIENT_HELLO_START + b"more")
        # The decision is final: the deadline no longer fires.
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT * 10)
        self.assertEqual(rig.rustdesk_protos, [])
        self.assertEqual(rig.transport.value(), b"")
        self.assertFalse(rig.transport.aborted)

    def test_one_byte_is_enough(self) -> None:
        rig = Rig()
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT * 0.9)
        rig.detector.dataReceived(b"\x16")
        self.assertEqual(rig.tls.received, b"\x16")

    def test_a_frame_goes_to_the_rustdesk_channel(self) -> None:
        rig = Rig()
        frame = rc.encode_frame(b"\x0a\x00")
        rig.detector.dataReceived(frame)
        self.assertEqual(rig.detector.chosen, "rustdesk")
        [proto] = rig.rustdesk_protos
        self.assertIs(rig.detector.switched_to, proto)
        rig.detector.dataReceived(b"after")
        assert isinstance(proto, Recorder)
        self.assertEqual(proto.received, frame + b"after")
        self.assertFalse(rig.tls.made)

    def test_silence_is_bounded(self) -> None:
        events = _capture_logs(self)
        rig = Rig()
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT * 0.99)
        self.assertIsNone(rig.detector.chosen)
        self.assertFalse(rig.transport.aborted)
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT * 0.02)
        self.assertEqual(rig.detector.chosen, "refused")
        self.assertTrue(rig.transport.aborted)
        self.assertIn("no answer to SignedId", rig.detector.close_reason or "")
        reasons = [e.get("reason") for e in events if "reason" in e]
        self.assertIn(rig.detector.close_reason, reasons)
        rig.detector.dataReceived(b"\x16\x03\x01")
        self.assertFalse(rig.tls.made)

    def test_empty_data_decides_nothing(self) -> None:
        rig = Rig()
        rig.detector.dataReceived(b"")
        self.assertIsNone(rig.detector.chosen)

    def test_loss_before_a_decision(self) -> None:
        rig = Rig()
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT * 10)
        self.assertIsNone(rig.detector.chosen)
        self.assertEqual(rig.clock.getDelayedCalls(), [])

    def test_byte_a_second_rustdesk_peer_is_bounded(self) -> None:
        """A peer trickling its PublicKey cannot stretch the key exchange."""
        events = _capture_logs(self)
        rig = Rig(rustdesk=True)
        host_x = rc.open_id_pk(rig.signed_id().signed_id.id, bytes(rig.key.verify_key), HOST_ID)
        reply, _ = rc.build_public_key(host_x)
        frame = rc.encode_frame(reply.SerializeToString())
        for i in range(len(frame) - 1):
            if rig.transport.disconnecting:
                break
            rig.detector.dataReceived(frame[i : i + 1])
            rig.clock.advance(1.0)
        self.assertTrue(rig.transport.disconnecting)
        self.assertEqual(rig.sessions, [])
        # Counted from the connection, not from the first byte.
        self.assertLessEqual(rig.clock.seconds(), RUSTDESK_HANDSHAKE_TIMEOUT + 1)
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
        rig = Rig(rustdesk=True)
        rig.detector.dataReceived(b"\xff" * (1 << 20))
        self.assertTrue(rig.transport.disconnecting)
        [proto] = rig.rustdesk_protos
        assert isinstance(proto, SecureChannelProtocol)
        self.assertIn("exceeds", proto.close_reason or "")

    def test_http_is_closed_with_a_reason(self) -> None:
        rig = Rig(rustdesk=True)
        rig.detector.dataReceived(b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(rig.transport.disconnecting)
        [proto] = rig.rustdesk_protos
        assert isinstance(proto, SecureChannelProtocol)
        self.assertIsNotNone(proto.close_reason)
        self.assertEqual(rig.sessions, [])

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
        else:
            self.assertEqual(rig.detector.chosen, "rustdesk")
            self.assertFalse(rig.tls.made)
        # Nothing random completes a key exchange: no session ever starts.
        rig.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT)
        self.assertEqual(rig.sessions, [])
        if rig.detector.chosen != "tls":
            self.assertTrue(rig.transport.disconnecting or rig.transport.aborted)


def _handshake(rig: Rig) -> rc.SecretChannel:
    """Act as a stock client on the rig's transport: answer SignedId with PublicKey."""
    signed = rig.signed_id()
    rig.transport.clear()
    host_x = rc.open_id_pk(signed.signed_id.id, bytes(rig.key.verify_key), HOST_ID)
    reply, key = rc.build_public_key(host_x)
    rig.detector.dataReceived(rc.encode_frame(reply.SerializeToString()))
    return rc.SecretChannel(key)


class RustDeskSessionTests(SynchronousTestCase):
    def test_session_starts_after_the_key_exchange_and_hears_of_it(self) -> None:
        rig = Rig(rustdesk=True)
        secret = _handshake(rig)
        [session] = rig.recorded()
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
        [session] = rig.recorded()
        rig.transport.producerState = "producing"
        # StringTransport keeps everything written in io: stand in a
        # FileDescriptor's dataBuffer to see that the walk reaches it.
        rig.transport.dataBuffer = b"x" * 1000  # type: ignore[attr-defined]
        self.assertEqual(transport_buffered(session.transport), 1000)

    def test_flipped_byte_closes_and_the_session_is_lost(self) -> None:
        rig = Rig(rustdesk=True)
        secret = _handshake(rig)
        [session] = rig.recorded()
        sealed = bytearray(secret.seal(pb.Message(hash=pb.Hash()).SerializeToString()))
        sealed[-1] ^= 1
        rig.detector.dataReceived(rc.encode_frame(bytes(sealed)))
        self.assertEqual(session.received, b"")
        self.assertTrue(rig.transport.disconnecting)
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        self.assertTrue(session.lost)

    def test_insecure_client_refused(self) -> None:
        """A stock client with no verified key answers with an empty Message."""
        rig = Rig(rustdesk=True)
        rig.transport.clear()
        rig.detector.dataReceived(rc.encode_frame(b""))
        self.assertEqual(rig.detector.chosen, "rustdesk")
        self.assertTrue(rig.transport.disconnecting)
        self.assertEqual(rig.sessions, [])
        [refusal] = FrameDecoder().feed(rig.transport.value())
        msg = pb.Message()
        msg.ParseFromString(refusal)
        self.assertTrue(msg.login_response.error)

    def test_client_without_host_key_allowed_when_insecure(self) -> None:
        rig = Rig(rustdesk=True, allow_insecure=True)
        rig.detector.dataReceived(rc.encode_frame(b""))
        [session] = rig.recorded()
        self.assertEqual(session.handshakes, 1)
        assert isinstance(session.transport, ChannelTransport)
        self.assertFalse(session.transport.encrypted)

    def test_rustdesk_clients_off_are_told_so_sealed(self) -> None:
        rig = Rig(rustdesk=True, refuse=True)
        secret = _handshake(rig)
        self.assertTrue(rig.transport.disconnecting)
        [sealed] = FrameDecoder().feed(rig.transport.value())
        msg = pb.Message()
        msg.ParseFromString(secret.open(sealed))
        self.assertEqual(msg.login_response.error, RUSTDESK_CLIENTS_OFF)

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
        self.assertIn(rig.detector, admission)
        _handshake(rig)
        self.assertNotIn(rig.detector, admission)
        self.assertEqual(len(rig.sessions), 1)

    def test_released_on_loss_and_on_refusal(self) -> None:
        admission = Admission(Clock())
        rig = Rig(admission, rustdesk=True)
        rig.detector.connectionLost(None)  # type: ignore[arg-type]
        self.assertEqual(len(admission), 0)
        rig2 = Rig(admission)
        rig2.clock.advance(RUSTDESK_HANDSHAKE_TIMEOUT)
        self.assertEqual(len(admission), 0)

    def test_refused_when_full_and_evictable(self) -> None:
        admission = Admission(Clock(), per_source=1)
        first = Rig(admission)
        second = Rig(admission)
        self.assertEqual(second.detector.chosen, "refused")
        self.assertTrue(second.transport.aborted)
        self.assertEqual(second.transport.value(), b"")  # refused before speaking
        self.assertEqual(second.clock.getDelayedCalls(), [])
        first.detector.evict("test")
        self.assertTrue(first.transport.aborted)
        self.assertEqual(first.clock.getDelayedCalls(), [])


class FactoryAndOptionTests(SynchronousTestCase):
    def test_factory_builds_detectors(self) -> None:
        clock = Clock()
        key = SigningKey.generate()
        factory = DetectingFactory(
            lambda: ProtocolDetector(
                HostHandshake(key, HOST_ID), Recorder, lambda h, r: cast(Any, Recorder()), clock
            )
        )
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

    def test_every_path_detects(self) -> None:
        for on in (True, False):
            sessions = self._sessions(on)
            self.assertIsInstance(sessions.factory(direct=True), DetectingFactory)
            for relayed in (False, True):
                proto = sessions.make_session(relayed=relayed)
                self.assertIsInstance(proto, ProtocolDetector)
                tls = sessions.tls_session(relayed=relayed)
                self.assertIsInstance(tls, TLSMemoryBIOProtocol)
                self.assertEqual(tls.wrappedProtocol.relayed, relayed)

    def test_rustdesk_session_or_refusal(self) -> None:
        inside = self._sessions(True).rustdesk_session(direct=False, relayed=True)
        assert isinstance(inside, HostSession)
        self.assertTrue(inside.rustdesk)
        self.assertTrue(inside.relayed)
        self.assertIsInstance(
            self._sessions(False).rustdesk_session(direct=False, relayed=False), RustDeskRefusal
        )

    def test_flags(self) -> None:
        o = HostOptions()
        o.parseOptions(["--listen", "tcp:0", "--config-dir", "/nonexistent"])
        self.assertFalse(o["no-rustdesk-clients"])
        self.assertFalse(o["allow-insecure-rustdesk"])
        o = HostOptions()
        o.parseOptions(["--listen", "tcp:0", "--no-rustdesk-clients"])
        self.assertTrue(o["no-rustdesk-clients"])
        # The old opt-in flag is still accepted.
        o = HostOptions()
        o.parseOptions(["--listen", "tcp:0", "--rustdesk-clients", "--allow-insecure-rustdesk"])
        self.assertTrue(o["allow-insecure-rustdesk"])

    def test_contradictions_refused(self) -> None:
        for argv in (
            ["--no-rustdesk-clients", "--allow-insecure-rustdesk"],
            ["--no-rustdesk-clients", "--rustdesk-clients"],
        ):
            with self.assertRaises(usage.UsageError):
                HostOptions().parseOptions(["--listen", "tcp:0", *argv])


# --- end to end ------------------------------------------------------------------------------

PASSWORD = "rustdesk-host-password"


@requires("Xvfb")
class RustDeskHostEndToEndTests(SynchronousTestCase):
    """A real host with default options; both kinds of client on its one port."""

    def setUp(self) -> None:
        self.host = ListeningHost(PASSWORD, prefix="litedesk-rdhost-")
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

        # Garbage as the answer to SignedId: closed, with the reason in the log.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            answer = b""
            try:
                while chunk := s.recv(4096):
                    answer += chunk
            except ConnectionResetError:
                pass  # aborted after the host's SignedId
            reader = rc.FrameReader()
            reader.feed(answer)
            signed = pb.Message()
            signed.ParseFromString(reader.next() or b"")
            self.assertEqual(signed.WhichOneof("union"), "signed_id")
        wait_until(lambda: "exceeds" in self._log_text(), 10, message="the refusal")

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
