"""What an unauthenticated peer can make a HostSession hold (issue 9), with a
Clock and string transports: deadlines, frame and reply limits, admission;
and what a login prepares for streaming (Nagle off on the TCP socket, the
input path's display opened before the first click)."""

from __future__ import annotations

import socket
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.session.admission import Admission
from litedesk.session.framing import MAX_FRAME_LENGTH, MessageProtocol, parse_message
from litedesk.session.host_context import HostContext
from litedesk.session.host_session import HANDSHAKE_TIMEOUT, PRELOGIN_MAX_FRAME, HostSession
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.wire.bytescodec import FrameDecoder, encode_frame, encode_header

from .strategies import chunked
from .support.fakes import FakeStreamer

PASSWORD = "limits-test-pw"


class TLSLikeTransport(StringTransport):
    """A string transport that looks like Twisted's TLS layer (its handle is
    an C{SSL.Connection}) and, like a socket whose peer never reads, keeps
    everything written in C{dataBuffer} where transport_buffered sees it."""

    def __init__(self, host: str = "192.0.2.10") -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 40000))
        self._handle = SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)
        self.offset = 0

    aborted = False

    def getHandle(self) -> SSL.Connection:
        return self._handle

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    @property
    def dataBuffer(self) -> bytes:
        return bytes(self.value())


def _context(clock: Clock, admission: Admission | None = None) -> HostContext:
    return HostContext(
        peer_id="123456789",
        verifier=LoginVerifier(clock, StoredPassword.create(PASSWORD), one_time=False),
        clock=clock,
        make_streamer=lambda deliver, buffered, codec: FakeStreamer(),
        displays=[],
        admission=admission,
    )


def _session(
    clock: Clock, ctx: HostContext | None = None, host: str = "192.0.2.10"
) -> tuple[HostSession, TLSLikeTransport]:
    session = HostSession(ctx or _context(clock))
    transport = TLSLikeTransport(host)
    session.makeConnection(transport)
    return session, transport


def _replies(transport: StringTransport) -> list[pb.Message]:
    decoder = FrameDecoder(MAX_FRAME_LENGTH)
    out = []
    for payload in decoder.feed(transport.value()):
        msg = parse_message(payload)
        assert msg is not None
        out.append(msg)
    return out


def _observe(case: SynchronousTestCase) -> EventLoggingObserver:
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    case.addCleanup(globalLogPublisher.removeObserver, observer)
    return observer


def _warn_reasons(events: EventLoggingObserver) -> list[Any]:
    return [e.get("reason") for e in events if e["log_level"] == LogLevel.warn]


def _login(session: HostSession, transport: TLSLikeTransport) -> None:
    hash_msg = _replies(transport)[0].hash
    answer = login_password(PASSWORD, hash_msg.salt, hash_msg.challenge)
    request = pb.LoginRequest(username="123456789", password=answer, my_id="v")
    session.dataReceived(encode_frame(pb.Message(login_request=request).SerializeToString()))


class HandshakeTests(SynchronousTestCase):
    def test_idle_timeout_before_handshake_aborts_sending_nothing(self) -> None:
        """A session that times out before TLS completes is aborted with
        nothing queued (the old code queued a Misc that TLS then held, so the
        socket was never closed)."""
        clock = Clock()
        session = HostSession(_context(clock))
        # Only the idle timeout here; the handshake deadline is tested below.
        session.handshake_timeout = None
        transport = TLSLikeTransport()
        session.makeConnection(transport)
        clock.advance(session.idle_timeout or 0)
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(session.state, "handshake")

    def test_handshake_deadline_is_absolute(self) -> None:
        """Without a completed handshake the session is aborted at the
        deadline, and the refusal is logged with its reason."""
        events = _observe(self)
        clock = Clock()
        _, transport = _session(clock)
        clock.advance(HANDSHAKE_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.1)
        self.assertTrue(transport.aborted)
        self.assertEqual(transport.value(), b"")
        self.assertIn("TLS handshake not completed", _warn_reasons(events))

    def test_completed_handshake_cancels_the_deadline(self) -> None:
        """A handshake completed in time is not aborted at the deadline; the
        host sends its Hash and waits for the login."""
        clock = Clock()
        session, transport = _session(clock)
        clock.advance(HANDSHAKE_TIMEOUT / 2)
        session.handshakeCompleted()
        clock.advance(HANDSHAKE_TIMEOUT)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(session.state, "login")
        self.assertEqual(_replies(transport)[0].WhichOneof("union"), "hash")

    def test_close_after_handshake_is_graceful_then_hard(self) -> None:
        """After the handshake a close tells the peer (Misc Timeout, TLS close)
        and, if the connection is still open abort_timeout seconds later
        because the peer does not read, aborts it."""
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        clock.advance(session.idle_timeout or 0)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.assertEqual(_replies(transport)[-1].misc.close_reason, "Timeout")
        clock.advance(session.abort_timeout)
        self.assertTrue(transport.aborted)

    def test_connection_lost_cancels_the_hard_abort(self) -> None:
        """A close that completes leaves no timer behind."""
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        session.close("test")
        session.connectionLost()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(transport.aborted)


class PreLoginLimitTests(SynchronousTestCase):
    def test_large_frame_before_login_closes(self) -> None:
        """A frame header announcing more than 64 KiB before login closes the
        session at once, without buffering the announced bytes."""
        events = _observe(self)
        clock = Clock()
        session, _transport = _session(clock)
        session.handshakeCompleted()
        session.dataReceived(encode_header(16 * 1024 * 1024) + b"\0" * 1000)
        self.assertTrue(session.closing)
        self.assertIn("frame too large", _warn_reasons(events))
        assert session._decoder is not None
        self.assertEqual(session._decoder.buffered, 0)

    def test_large_frames_allowed_after_login(self) -> None:
        """Once logged in the 16 MiB limit applies again (a 1 MiB clipboard
        frame is accepted)."""
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        _login(session, transport)
        self.assertEqual(session.state, "active")
        clip = pb.Message(clipboard=pb.Clipboard(content=b"x" * ((1 << 20) - 64)))
        frame = encode_frame(clip.SerializeToString())
        self.assertGreater(len(frame), PRELOGIN_MAX_FRAME)
        session.dataReceived(frame)
        self.assertFalse(session.closing)

    def test_test_delay_echo_has_only_known_fields(self) -> None:
        """Before login a TestDelay is answered with a fresh message: unknown
        fields the peer added are not sent back."""
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        transport.clear()
        td = pb.TestDelay(time=1234, from_client=True, last_delay=7)
        # Field 99, length-delimited: unknown to LiteDesk.
        unknown = b"\x9a\x06" + bytes([100]) + b"u" * 100
        payload = pb.Message(test_delay=td).SerializeToString()
        payload = payload[:1] + bytes([payload[1] + len(unknown)]) + payload[2:] + unknown
        self.assertEqual(parse_message(payload).test_delay.time, 1234)  # type: ignore[union-attr]
        session.dataReceived(encode_frame(payload))
        (echo,) = _replies(transport)
        self.assertEqual((echo.test_delay.time, echo.test_delay.last_delay), (1234, 7))
        self.assertNotIn(b"uuuu", transport.value())

    def test_peer_that_never_reads_cannot_make_the_host_queue(self) -> None:
        """Before login, with more than 16 KiB queued for a peer that does not
        read, its TestDelays get no answer; with more than 64 KiB queued it
        is closed."""
        events = _observe(self)
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        ping = encode_frame(
            pb.Message(test_delay=pb.TestDelay(time=1, from_client=True)).SerializeToString()
        )
        session.dataReceived(ping)
        answered = len(transport.value())
        transport.write(b"\0" * (17 * 1024 - answered))  # e.g. replies it did not read
        queued = len(transport.value())
        for _ in range(10):
            session.dataReceived(ping)
        self.assertEqual(len(transport.value()), queued)
        self.assertFalse(session.closing)
        transport.write(b"\0" * 48 * 1024)
        session.dataReceived(ping)
        self.assertTrue(session.closing)
        self.assertIn("peer does not read before login", _warn_reasons(events))

    def test_message_flood_before_login_closes(self) -> None:
        """A peer that sends more messages than any viewer does before login
        (here 65 TestDelays) is closed; 64 are answered."""
        events = _observe(self)
        clock = Clock()
        session, transport = _session(clock)
        session.handshakeCompleted()
        transport.clear()
        ping = encode_frame(
            pb.Message(test_delay=pb.TestDelay(time=1, from_client=True)).SerializeToString()
        )
        session.dataReceived(ping * 64)
        self.assertFalse(session.closing)
        self.assertEqual(len(_replies(transport)), 64)
        session.dataReceived(ping)
        self.assertTrue(session.closing)
        self.assertIn("too many messages before login", _warn_reasons(events))

    @given(
        st.lists(st.integers(0, 2 * PRELOGIN_MAX_FRAME), min_size=1, max_size=6),
        st.data(),
    )
    def test_prelogin_cap_over_any_chunking(self, sizes: list[int], data: st.DataObject) -> None:
        """However the stream is split, frames up to 64 KiB before login are
        delivered in order, and the first larger one closes the session with
        nothing after it delivered (frames completed in the same chunk as
        the oversized header may be dropped too: the session ends anyway)."""
        received: list[int] = []

        class Probe(MessageProtocol):
            max_frame_length = PRELOGIN_MAX_FRAME

            def message_received(self, msg: pb.Message) -> None:
                received.append(len(msg.clipboard.content))

        probe = Probe()
        probe.clock = Clock()
        probe.makeConnection(StringTransport())
        payloads = [
            pb.Message(clipboard=pb.Clipboard(content=b"c" * n)).SerializeToString() for n in sizes
        ]
        stream = b"".join(encode_frame(p) for p in payloads)
        for chunk in data.draw(chunked(stream)):
            probe.dataReceived(chunk)
        fits = [len(p) <= PRELOGIN_MAX_FRAME for p in payloads]
        first_big = fits.index(False) if False in fits else len(fits)
        self.assertEqual(probe.closing, first_big < len(fits))
        if probe.closing:
            self.assertEqual(received, sizes[: len(received)])
            self.assertLessEqual(len(received), first_big)
        else:
            self.assertEqual(received, sizes)


class AdmissionTests(SynchronousTestCase):
    def test_sessions_register_and_leave(self) -> None:
        """A session counts from its connection until it logs in; one from a
        source at its limit is aborted at once; a closed one no longer counts."""
        clock = Clock()
        adm = Admission(clock, per_source=2, total=10)
        ctx = _context(clock, adm)
        first, t1 = _session(clock, ctx, "198.51.100.1")
        second, _t2 = _session(clock, ctx, "198.51.100.1")
        _third, t3 = _session(clock, ctx, "198.51.100.1")
        self.assertTrue(t3.aborted)
        self.assertEqual(t3.value(), b"")
        self.assertEqual(adm.count("198.51.100.1"), 2)
        first.handshakeCompleted()
        _login(first, t1)
        self.assertEqual(first.state, "active")
        self.assertNotIn(first, adm)
        second.connectionLost()
        self.assertEqual(len(adm), 0)
        other, t4 = _session(clock, ctx, "203.0.113.9")
        self.assertIn(other, adm)
        self.assertFalse(t4.disconnecting)

    def test_eviction_aborts_the_oldest(self) -> None:
        """At the total limit a viewer from a new address evicts the oldest
        session of the biggest source, which is aborted."""
        clock = Clock()
        adm = Admission(clock, per_source=3, total=3)
        ctx = _context(clock, adm)
        old = [_session(clock, ctx, "198.51.100.1") for _ in range(3)]
        viewer, tv = _session(clock, ctx, "192.0.2.1")
        self.assertTrue(old[0][1].aborted)
        self.assertEqual([t.aborted for _, t in old[1:]], [False, False])
        self.assertIn(viewer, adm)
        self.assertFalse(tv.disconnecting)

    def test_relayed_sessions_share_the_relays_source(self) -> None:
        """Relay legs are counted as a shared source: at its limit the oldest
        leg is evicted instead of the newcomer being refused."""
        clock = Clock()
        adm = Admission(clock, per_source=1, total=10)
        ctx = _context(clock, adm)
        first = HostSession(ctx, relayed=True)
        t1 = TLSLikeTransport("198.51.100.7")
        first.makeConnection(t1)
        second = HostSession(ctx, relayed=True)
        t2 = TLSLikeTransport("198.51.100.7")
        second.makeConnection(t2)
        self.assertTrue(t1.aborted)
        self.assertFalse(t2.disconnecting)
        self.assertTrue(second.relayed)


class _SocketLayer:
    """What Twisted's TCP transport offers the layers above: its socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def getHandle(self) -> socket.socket:
        return self._sock


class StreamingSocketTests(SynchronousTestCase):
    def test_streaming_turns_nagle_off(self) -> None:
        """Once the viewer is logged in and the screen streams, the session's
        TCP socket (under the TLS layer) sends small frames at once: Nagle's
        algorithm would hold a typed character's frame back until the frame
        before it is acknowledged (up to a delayed ACK, 40 ms)."""
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        session = HostSession(_context(Clock()))
        transport = TLSLikeTransport()
        transport.transport = _SocketLayer(accepted)  # type: ignore[attr-defined]
        session.makeConnection(transport)
        session.handshakeCompleted()
        nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.assertEqual(accepted.getsockopt(*nodelay), 0)
        _login(session, transport)
        self.assertEqual(session.state, "active")
        self.assertNotEqual(accepted.getsockopt(*nodelay), 0)

    def test_streaming_opens_the_input_display_before_the_first_click(self) -> None:
        """Once logged in, the host opens its input path's display connection
        at once (InputWorker.prepare), so that the viewer's first click does
        not wait 30-125 ms for it; not before the login."""

        class Input:
            prepared = 0

            def prepare(self) -> None:
                self.prepared += 1

            def submit(self, ev: object) -> None:
                pass

            def release_all(self) -> None:
                pass

        recorder = Input()
        ctx = _context(Clock())
        ctx.input = recorder
        session = HostSession(ctx)
        transport = TLSLikeTransport()
        session.makeConnection(transport)
        session.handshakeCompleted()
        self.assertEqual(recorder.prepared, 0)
        _login(session, transport)
        self.assertEqual(session.state, "active")
        self.assertEqual(recorder.prepared, 1)


class ViewerSocketTests(SynchronousTestCase):
    def test_viewer_turns_nagle_off(self) -> None:
        """The viewer's input is small writes (a click, a key): once its TLS
        handshake is complete its TCP socket sends them at once, not after the
        previous one is acknowledged."""
        from twisted.internet.task import Clock as ReactorClock

        from litedesk.session.viewer_session import ViewerSession

        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        session = ViewerSession(ReactorClock(), "123456789", "pw")
        transport = TLSLikeTransport()
        transport.transport = _SocketLayer(client)  # type: ignore[attr-defined]
        session.makeConnection(transport)
        nodelay = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.assertEqual(client.getsockopt(*nodelay), 0)
        session.handshakeCompleted()
        self.assertNotEqual(client.getsockopt(*nodelay), 0)
