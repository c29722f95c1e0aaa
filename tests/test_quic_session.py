"""LiteDesk sessions over QUIC (litedesk.quic): handshake, pinning, a full
session, migration.

Everything runs on real UDP sockets on loopback with real TLS 1.3 inside
QUIC (aioquic) and the global reactor:

- the viewer accepts the host whose certificate carries the pinned Ed25519
  identity key, and refuses another key during the handshake with the same
  L{HostKeyMismatch} (class, message, log line) as the TCP path, before any
  application byte moves either way; trust on first use records the key;
- a real L{HostSession} and a real L{ViewerSession}, unchanged, log in over
  QUIC, the viewer decodes the host's H.264 frames and the host injects the
  viewer's mouse and key events (the same steps as the TCP/TLS session of
  tests/test_files_session.py, for the desktop);
- a producer on the stream (a file download) is paused while the viewer
  has not acknowledged enough, and the host's frame-drop policy sees the
  stream's backlog;
- while everything the host sends is lost, the viewer's input still reaches
  the host at once (one stream, but its two directions are independent);
- a handshake that never finishes ends after ten seconds on either side;
- host and viewer take over UDP ports bound before (by the hole punch);
- the viewer's UDP socket is replaced by one on another port mid-session and
  the session goes on: the host follows the new address, nobody reconnects.
"""

from __future__ import annotations

import os
from typing import Any

from aioquic.quic.connection import QuicConnection
from nacl.signing import SigningKey
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from litedesk.input.keys import KeyInput
from litedesk.input.mouse import MouseInput
from litedesk.proto import message_pb2 as pb
from litedesk.quic.aioquic_internals import peer_certificate
from litedesk.quic.host import QuicHost
from litedesk.quic.link import QuicLink
from litedesk.quic.tls_config import ALPN, host_configuration, viewer_configuration
from litedesk.quic.viewer import QuicViewer
from litedesk.session.host_context import HostContext
from litedesk.session.host_key import HostKeyMismatch, certificate_key
from litedesk.session.host_session import HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword
from litedesk.session.pinning import viewer_context_factory
from litedesk.session.viewer_session import SessionError, ViewerSession

from .support.polling import until
from .support.quic_pair import (
    HOST_ADDR,
    HOST_ID,
    HOST_MARKER,
    VIEWER_ADDR,
    FrameStreamer,
    MemoryPair,
    QuicPair,
    Recorder,
    RecordingInput,
    Wire,
    reactor,
)

PASSWORD = "quic-session-pw"
VIEWER_MARKER = b"VIEWER-ANSWERS-OVER-QUIC"


def _observe(case: TestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


class HandshakeTests(TestCase):
    def _pair(self, key: SigningKey | None = None) -> tuple[QuicPair, list[Recorder]]:
        hosts: list[Recorder] = []

        def build(addr: object) -> Recorder:
            hosts.append(Recorder(greeting=HOST_MARKER))
            return hosts[-1]

        return QuicPair(self, build, key), hosts

    @defer.inlineCallbacks
    def test_pinned_key_accepted(self) -> Any:
        """
        A viewer pinning the host's identity key completes the handshake
        (ALPN litedesk/1, the certificate's key is that key) and both
        sessions exchange bytes on the session stream; the host sees the
        viewer's UDP address, the viewer the host's.
        """
        pair, hosts = self._pair()
        viewer = Recorder(answer=VIEWER_MARKER)
        quic = pair.connect(viewer, viewer_context_factory(pair.host_pk))
        yield until(lambda: viewer.received == HOST_MARKER, message="the host's bytes")
        yield until(lambda: hosts and hosts[0].received == VIEWER_MARKER, message="the answer")
        self.assertTrue(viewer.handshake_done and hosts[0].handshake_done)
        link = quic.link
        assert link is not None
        self.assertEqual(certificate_key(peer_certificate(link.connection)), pair.host_pk)
        self.assertEqual(link.connection.tls.alpn_negotiated, ALPN)
        self.assertEqual(viewer.transport.getPeer().port, pair.port)
        self.assertEqual(viewer.transport.getPeer().type, "UDP")
        self.assertEqual(hosts[0].transport.getPeer().port, pair.viewer_port(quic))
        # A close from the viewer reaches the host's session as a clean end.
        viewer.transport.loseConnection()
        yield defer.gatherResults([viewer.lost, hosts[0].lost])
        self.assertIsNone(viewer.reason.check(HostKeyMismatch) if viewer.reason else None)

    @defer.inlineCallbacks
    def test_wrong_key_refused(self) -> Any:
        """
        A host whose certificate carries another key than the pinned one is
        refused in the handshake: the viewer's protocol gets the same
        L{HostKeyMismatch} as over TCP ("host key mismatch: expected ...,
        the host presented ..."), no session is built on the host, no byte
        reaches either side, and the refusal is logged as on TCP.
        """
        events = _observe(self)
        impostor = SigningKey.generate()
        expected = bytes(SigningKey.generate().verify_key)
        pair, hosts = self._pair(impostor)
        viewer = Recorder(answer=VIEWER_MARKER)
        pair.connect(viewer, viewer_context_factory(expected, detail="see known_hosts"))
        yield viewer.lost
        assert viewer.reason is not None
        error = viewer.reason.value
        assert isinstance(error, HostKeyMismatch)
        tcp_error = HostKeyMismatch(expected, bytes(impostor.verify_key), "see known_hosts")
        self.assertEqual(str(error), str(tcp_error))
        self.assertFalse(viewer.handshake_done)
        self.assertEqual(viewer.received, b"")
        self.assertEqual(hosts, [])
        self.assertTrue(
            any(
                e.get("log_namespace") == "litedesk.session.tls"
                and "host key mismatch" in e.get("error", "")
                for e in events
            ),
            "the refusal was not logged",
        )
        # The host forgets the refused connection (no session, no state).
        yield until(lambda: not pair.host.links, message="the host dropping the connection")

    @defer.inlineCallbacks
    def test_viewer_session_reports_mismatch(self) -> Any:
        """
        The viewer's real session class turns the refusal into the same
        user-facing error as over TCP: C{SessionError("host key mismatch")}.
        """
        pair, _ = self._pair(SigningKey.generate())
        session = ViewerSession(reactor, HOST_ID, PASSWORD)
        pair.connect(session, viewer_context_factory(bytes(SigningKey.generate().verify_key)))
        error = yield self.assertFailure(session.logged_in, SessionError)
        self.assertEqual(error.reason, "host key mismatch")

    @defer.inlineCallbacks
    def test_trust_on_first_use(self) -> Any:
        """
        Without a pinned key (a direct connection, known hosts), the proven
        key is handed to the on-first-use callback, as over TCP.
        """
        pair, _ = self._pair()
        seen: list[bytes] = []
        viewer = Recorder()
        pair.connect(viewer, viewer_context_factory(None, seen.append))
        yield until(lambda: viewer.received == HOST_MARKER, message="the host's bytes")
        self.assertEqual(seen, [pair.host_pk])


@implementer(IPushProducer)
class Producer:
    """A push producer that records being paused and resumed."""

    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0
        self.resumes = 0

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self.resumes += 1

    def stopProducing(self) -> None:
        self.paused = True


class BackpressureTests(TestCase):
    @defer.inlineCallbacks
    def test_producer_paused_until_the_viewer_acknowledges(self) -> Any:
        """
        A producer on the session stream (a file download) is paused while
        more than 256 KiB wait for the viewer's acknowledgement and resumed
        once the viewer has them, so the host never holds a whole file.
        """
        hosts: list[Recorder] = []

        def build(addr: object) -> Recorder:
            hosts.append(Recorder(greeting=HOST_MARKER))
            return hosts[-1]

        pair = QuicPair(self, build)
        viewer = Recorder()
        pair.connect(viewer, viewer_context_factory(pair.host_pk))
        yield until(lambda: viewer.received == HOST_MARKER, message="the session")
        producer = Producer()
        transport = hosts[0].transport
        transport.registerProducer(producer, True)
        blob = os.urandom(1 << 20)
        transport.write(blob)
        self.assertTrue(producer.paused)
        yield until(lambda: not producer.paused, message="the producer resumed")
        yield until(lambda: len(viewer.received) == len(HOST_MARKER) + len(blob), message="all")
        self.assertEqual(viewer.received[len(HOST_MARKER) :], blob)
        self.assertEqual((producer.pauses, producer.resumes), (1, 1))
        transport.unregisterProducer()


class LossTests(SynchronousTestCase):
    """On an in-memory wire that loses datagrams, with a C{Clock}."""

    def setUp(self) -> None:
        pair = MemoryPair()
        self.clock, self.wire, self.hosts = pair.clock, pair.wire, pair.hosts
        self.host, self.quic, self.viewer = pair.host, pair.quic, pair.viewer
        self.addCleanup(self.quic.close)
        self.addCleanup(self.host.close_all)

    def test_input_does_not_wait_for_lost_video(self) -> None:
        """
        While everything the host sends (video) is lost, the viewer's input
        still reaches the host at once, without waiting for any
        retransmission; the video arrives complete once the path recovers.
        """
        self.assertEqual(self.viewer.received, HOST_MARKER)
        video = os.urandom(100_000)
        self.wire.lose = VIEWER_ADDR
        self.hosts[0].transport.write(video)
        self.wire.pump()
        started = self.clock.seconds()
        self.viewer.transport.write(b"click at 10,20")
        self.wire.pump()
        self.assertEqual(self.hosts[0].received, b"click at 10,20")
        self.assertEqual(self.viewer.received, HOST_MARKER)
        self.assertLess(self.clock.seconds() - started, 0.1)
        self.wire.lose = None
        for _ in range(200):
            if len(self.viewer.received) == len(HOST_MARKER) + len(video):
                break
            self.clock.advance(0.1)
            self.wire.pump()
        self.assertEqual(self.viewer.received, HOST_MARKER + video)


class DeadlineTests(SynchronousTestCase):
    """Handshakes that never finish, on an in-memory wire with a C{Clock}."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.wire = Wire(self.clock)
        self.built: list[object] = []
        self.host = QuicHost(
            host_configuration(SigningKey.generate(), HOST_ID), self.built.append, self.clock
        )
        self.wire.bind(self.host, HOST_ADDR)
        self.addCleanup(self.host.close_all)

    def test_host_forgets_a_silent_viewer(self) -> None:
        """
        A viewer that sends its Initial and then nothing holds a handshake
        slot for ten seconds at most, and no session is ever built for it.
        """
        client = QuicConnection(configuration=viewer_configuration())
        client.connect(HOST_ADDR, now=0.0)
        for datagram, _addr in client.datagrams_to_send(now=0.0):
            self.host.datagramReceived(datagram, ("10.0.0.9", 1234))
        self.wire.pump()
        self.assertEqual((len(self.host.handshaking), len(self.host.links)), (1, 1))
        self.clock.advance(9.9)
        self.assertEqual(len(self.host.handshaking), 1)
        self.clock.advance(0.2)
        self.assertEqual((len(self.host.handshaking), len(self.host.links)), (0, 0))
        self.assertEqual(self.built, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_viewer_gives_up_on_a_silent_host(self) -> None:
        """
        A host that never answers: after ten seconds the viewer's session
        ends with "connection lost before login", as over TCP.
        """
        quic = QuicViewer(self.clock)
        self.wire.bind(quic, VIEWER_ADDR)
        session = ViewerSession(self.clock, HOST_ID, PASSWORD)
        failures: list[Failure] = []
        session.logged_in.addErrback(failures.append)
        quic.connect(("10.0.0.99", 4433), session, viewer_context_factory(b"k" * 32))
        self.wire.pump()
        self.clock.advance(10.1)
        self.assertEqual(len(failures), 1)
        error = failures[0].value
        assert isinstance(error, SessionError)
        self.assertEqual(error.reason, "connection lost before login")
        self.assertIn("QUIC handshake not completed within 10 s", str(error))
        self.assertTrue(quic.ended.called)


class AttachTests(TestCase):
    @defer.inlineCallbacks
    def test_session_on_ports_opened_before(self) -> Any:
        """
        Host and viewer take over UDP ports that were bound and used by
        another protocol before (the hole punch): the session runs from the
        very addresses those ports had.
        """
        hosts: list[Recorder] = []

        def build(addr: object) -> Recorder:
            hosts.append(Recorder(greeting=HOST_MARKER))
            return hosts[-1]

        key = SigningKey.generate()
        ports = [reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1") for _ in "hv"]
        for port in ports:
            self.addCleanup(port.stopListening)
        host_port, viewer_port = (p.getHost().port for p in ports)
        host = QuicHost(host_configuration(key, HOST_ID), build, reactor)
        host.attach(ports[0])
        self.addCleanup(host.close_all)
        quic = QuicViewer(reactor)
        quic.attach(ports[1])
        self.addCleanup(quic.close)
        viewer = Recorder()
        quic.connect(
            ("127.0.0.1", host_port), viewer, viewer_context_factory(bytes(key.verify_key))
        )
        yield until(lambda: viewer.received == HOST_MARKER, message="the session")
        self.assertEqual(hosts[0].transport.getPeer().port, viewer_port)
        self.assertEqual(viewer.transport.getPeer().port, host_port)


class FullSessionTests(TestCase):
    """A real HostSession and ViewerSession over QUIC."""

    def setUp(self) -> None:
        self.input = RecordingInput()
        self.streamers: list[FrameStreamer] = []
        self.sessions: list[HostSession] = []

        def make_streamer(deliver: Any, buffered: Any, codec: str) -> FrameStreamer:
            self.streamers.append(FrameStreamer(deliver))
            self.buffered = buffered
            return self.streamers[-1]

        self.ctx = HostContext(
            peer_id=HOST_ID,
            verifier=LoginVerifier(reactor, StoredPassword.create(PASSWORD), one_time=False),
            clock=reactor,
            make_streamer=make_streamer,
            displays=[],
            input=self.input,
        )

        def build(addr: object) -> HostSession:
            self.sessions.append(HostSession(self.ctx))
            return self.sessions[-1]

        self.pair = QuicPair(self, build)
        self.viewer = ViewerSession(reactor, HOST_ID, PASSWORD, codec="h264")
        self.quic = self.pair.connect(self.viewer, viewer_context_factory(self.pair.host_pk))

    @defer.inlineCallbacks
    def _frame(self, bgra: bytes) -> Any:
        """The host sends a frame of colour C{bgra}; the viewer decodes it."""
        waiting = self.viewer.next_frame()
        self.streamers[0].send(bgra)
        frame = yield waiting
        return frame

    @defer.inlineCallbacks
    def _input_reaches_host(self, x: int, y: int) -> Any:
        before = len(self.input.events)
        self.viewer.send_mouse(0, x, y)
        yield until(lambda: len(self.input.events) > before, message="the mouse event")
        event = self.input.events[-1]
        assert isinstance(event, MouseInput)
        return event

    def _link(self) -> QuicLink:
        assert self.quic.link is not None
        return self.quic.link

    @defer.inlineCallbacks
    def test_login_frames_and_input(self) -> Any:
        """
        The viewer logs in with the password over QUIC, decodes the host's
        H.264 frames, and its mouse and key events are injected on the host;
        the host's backlog reading works on the QUIC stream.
        """
        info = yield self.viewer.logged_in
        self.assertEqual(info.username, self.ctx.username)
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(self.sessions[0].state, "active")
        # The frame-drop policy sees the frame queued on the stream until
        # the viewer acknowledges it, as it sees a TCP socket's buffer.
        waiting = self.viewer.next_frame()
        self.streamers[0].send(b"\xff\x00\x00\xff")
        self.assertGreater(self.buffered(), 0)
        frame = yield waiting
        self.assertEqual((frame.width, frame.height), (64, 64))
        self.assertEqual(self.viewer.stats.codec, "h264")
        event = yield self._input_reaches_host(12, 34)
        self.assertEqual((event.x, event.y), (12, 34))
        self.viewer.send_key(pb.KeyEvent(down=True, press=True, chr=ord("a")))
        yield until(lambda: isinstance(self.input.events[-1], KeyInput), message="the key")
        # Nothing is left unacknowledged once the viewer has read everything.
        yield until(lambda: self.buffered() == 0, message="an empty backlog")
        self.viewer.disconnect()
        yield until(lambda: self.sessions[0].state == "closed", message="the host's close")
        self.assertEqual(self.input.released, 1)

    @defer.inlineCallbacks
    def test_viewer_moves_to_another_port(self) -> Any:
        """
        The viewer's UDP socket is closed and a new one bound on another port
        mid-session: the host validates the new path and follows it, frames
        and input go on in the same session (one HostSession, one login).
        """
        yield self.viewer.logged_in
        yield self._frame(b"\xff\x00\x00\xff")
        old_port = self.pair.viewer_port(self.quic)
        new_port = yield self.pair.rebind(self.quic)
        self.assertNotEqual(new_port, old_port)
        self.quic.migrate()
        event = yield self._input_reaches_host(5, 6)
        self.assertEqual((event.x, event.y), (5, 6))
        host = self.sessions[0]
        yield until(lambda: host.transport.getPeer().port == new_port, message="the host following")
        frame = yield self._frame(b"\x00\xff\x00\xff")
        self.assertEqual((frame.width, frame.height), (64, 64))
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(host.state, "active")
        self.assertTrue(self._link().established)
        self.assertIsNone(self.viewer.error)
