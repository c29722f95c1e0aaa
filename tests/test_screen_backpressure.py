"""The screen stream against a real, backed-up TCP connection on loopback.

No X needed: frames come from a scripted source; the transport is real, so
this checks that L{transport_buffered} still reads Twisted's buffers and that
the streamer skips frames, instead of queueing them, while they are full; and
the socket options set under a transport (TCP_NOTSENT_LOWAT, TCP_NODELAY).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import ITCPTransport
from twisted.trial import unittest

from litedesk.screen.backpressure import (
    PauseTracker,
    limit_kernel_buffering,
    send_without_delay,
    transport_buffered,
)
from litedesk.screen.codec import EncodedFrame
from litedesk.screen.decode import VideoDecoder
from litedesk.screen.streamer import ScreenStreamer
from tests.test_screen_pipeline import ScriptedSource


class Sink(protocol.Protocol):
    """Receives bytes; starts with reading paused, like a stalled viewer."""

    received = 0

    def __init__(self, connected: defer.Deferred[Sink]) -> None:
        self.on_connect = connected

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.pauseProducing()
        self.on_connect.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)


class BackpressureTests(unittest.TestCase):
    @defer.inlineCallbacks
    def connect(self) -> Any:
        """Listen on loopback and connect to it; the server side does not read."""
        connected: defer.Deferred[Sink] = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: Sink(connected))
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(self.port.stopListening)
        addr = self.port.getHost()
        self.client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", addr.port).connect(
            protocol.Factory.forProtocol(protocol.Protocol)
        )
        self.sink = yield connected
        self.addCleanup(self._close)

    @defer.inlineCallbacks
    def _close(self) -> Any:
        self.sink.transport.resumeProducing()
        self.client.transport.abortConnection()
        self.sink.transport.abortConnection()
        yield task.deferLater(reactor, 0.05, lambda: None)

    @defer.inlineCallbacks
    def test_backed_up_transport_skips_frames_then_resumes(self) -> Any:
        """While the viewer's connection is backed up no frames are produced (nothing
        queues); when it drains, streaming resumes and every sent frame decodes."""
        yield self.connect()
        transport = self.client.transport
        self.assertTrue(ITCPTransport.providedBy(transport))
        self.assertEqual(transport_buffered(transport), 0)
        # More than loopback's kernel buffers take: the rest stays in Twisted's.
        transport.write(b"\x00" * (32 * 1024 * 1024))
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertGreater(transport_buffered(transport), 1024 * 1024)

        source = ScriptedSource()
        sent: list[EncodedFrame] = []

        def deliver(frame: EncodedFrame) -> None:
            sent.append(frame)
            transport.write(frame.data)

        streamer = ScreenStreamer(
            reactor, deliver, lambda: transport_buffered(transport), source=source, custom_fps=20
        )
        streamer.start()
        self.addCleanup(streamer.stop)
        counter = iter(range(10**6))

        def move() -> None:  # the screen keeps changing throughout
            source.screen = source.frames[next(counter) % len(source.frames)]

        changes = task.LoopingCall(move)
        changes.start(0.05)
        self.addCleanup(changes.stop)
        yield task.deferLater(reactor, 0.6, lambda: None)
        self.assertEqual(sent, [])
        self.assertEqual(source.grabs, 0)
        self.assertGreaterEqual(streamer.stats.dropped, 5)

        self.sink.transport.resumeProducing()
        for _ in range(100):
            yield task.deferLater(reactor, 0.05, lambda: None)
            if len(sent) >= 3:
                break
        self.assertGreaterEqual(len(sent), 3)
        self.assertTrue(sent[0].key)
        dec = VideoDecoder()
        self.assertTrue(all(dec.decode_frame(f) is not None for f in sent))
        self.assertEqual(dec.errors, 0)

    @defer.inlineCallbacks
    def test_pause_tracker_reports_paused_consumer(self) -> Any:
        """The public-API alternative reports a full buffer exactly while paused."""
        yield self.connect()
        tracker = PauseTracker(paused_level=10**6)
        transport = self.client.transport
        transport.registerProducer(tracker, True)
        self.addCleanup(transport.unregisterProducer)
        self.assertEqual(tracker.buffered(), 0)
        transport.write(b"\x00" * (32 * 1024 * 1024))
        self.assertTrue(tracker.paused)
        self.assertEqual(tracker.buffered(), 10**6)

    @defer.inlineCallbacks
    def test_backlog_stays_visible_with_small_kernel_buffer(self) -> Any:
        """With TCP_NOTSENT_LOWAT set, a stalled viewer's backlog stays in Twisted's
        buffer, where the drop policy sees it, instead of hiding in the kernel."""
        yield self.connect()
        transport = self.client.transport
        self.assertTrue(limit_kernel_buffering(transport))
        for _ in range(100):  # 10 MB in frame-sized writes
            transport.write(b"\x00" * 100_000)
            yield task.deferLater(reactor, 0.002, lambda: None)
        self.assertGreater(transport_buffered(transport), 8_000_000)

    def test_limit_kernel_buffering_without_socket(self) -> None:
        """Transports without a TCP socket are left alone (and say so)."""
        from twisted.internet.testing import StringTransport

        self.assertFalse(limit_kernel_buffering(StringTransport()))
        self.assertFalse(limit_kernel_buffering(object()))
        self.assertFalse(send_without_delay(StringTransport()))

    @defer.inlineCallbacks
    def test_send_without_delay_on_a_real_connection(self) -> Any:
        """Nagle's algorithm is turned off on the real TCP socket under the
        transport, so a small frame is not held back behind the last one's ACK."""
        yield self.connect()
        transport = self.client.transport
        sock = transport.getHandle()
        self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)
        self.assertTrue(send_without_delay(transport))
        self.assertNotEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)
