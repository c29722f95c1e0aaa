"""How many bytes a Twisted transport still holds: the drop policy's input.

Twisted's public API tells a registered producer only "pause" and "resume"
(at 64 KiB of buffer, C{FileDescriptor.bufferSize}).  That is enough to stop
sending, but the adaptive controller wants the level, and the session's
transport may already have its one producer slot taken by the session
protocol.  L{transport_buffered} therefore reads the buffers themselves,
walking down a stack of wrappers:

  - C{BufferingTLSTransport} (Twisted's TLS with small-write coalescing):
    the aggregator's pending list;
  - C{TLSMemoryBIOProtocol}: cleartext queued before the handshake ends;
  - C{FileDescriptor} (TCP, Unix): C{dataBuffer} from C{offset}, plus the
    not-yet-joined C{_tempDataBuffer}.

These are private attributes (checked against Twisted 26.10), read in
L{litedesk.twisted_internals.queued_in_layer}; if a future Twisted renames
them the function returns 0, so streaming goes on without drops instead of
stopping, and the real-socket test in C{tests/test_screen_pipeline.py} fails
to say so.

L{PauseTracker} is the public-API alternative for a session that can give
the video its own producer registration.

The kernel hides most of a backlog from both: Linux autotunes a TCP send
buffer up to 4 MiB, so on a slow link seconds of video can sit in the kernel
while Twisted's buffer is empty and every frame looks welcome.
L{limit_kernel_buffering} sets C{TCP_NOTSENT_LOWAT} so the kernel keeps only
a small amount of unsent data and the rest stays where L{transport_buffered}
sees it (measured on loopback with a stalled reader, 10 MB written in 100 kB
frames: 7.0 MB visible to Twisted without it, 9.8 MB with a 64 KiB mark).
Bytes already sent but unacknowledged (up to a bandwidth-delay product) stay
invisible either way; C{TestDelay} round trips catch those.

L{send_without_delay} turns Nagle's algorithm off under a session's
transport, so that the tail of a frame is not held back behind the
acknowledgement of the frame before.
"""

from __future__ import annotations

import socket

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from litedesk.twisted_internals import inner_transport, queued_in_layer

__all__ = [
    "PauseTracker",
    "limit_kernel_buffering",
    "send_without_delay",
    "tcp_socket",
    "transport_buffered",
]

_log = Logger()

# Linux value; Python's socket module exports it only on some builds.
TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


def limit_kernel_buffering(transport: object, unsent: int = 64 * 1024) -> bool:
    """Keep at most about C{unsent} not-yet-sent bytes in the kernel.

    Finds the TCP socket under any wrappers (TLS) and sets
    C{TCP_NOTSENT_LOWAT}.  Returns whether it could; on failure (no TCP
    socket, not Linux) the stream still works, it just sees backlogs later.
    """
    sock = tcp_socket(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, unsent)
    except OSError as e:
        _log.info("TCP_NOTSENT_LOWAT not available: {error}", error=e)
        return False
    return True


def send_without_delay(transport: object) -> bool:
    """Turn Nagle's algorithm off on the TCP socket under C{transport}.

    A video frame rarely ends on a segment boundary, and with Nagle the
    kernel holds that last partial segment (often the whole of a small
    frame: a typed character, a click's effect) until everything sent
    before it is acknowledged, which a peer's delayed ACK can put off by
    40 ms.  Measured with bench/session.py C{--nodelay} through the relay:
    the click-to-pixel outliers of 58-69 ms while scrolling (median 15 ms)
    were gone, and the moving window's median went from 65 to 46 ms.
    Frames are written whole (Twisted's TLS coalesces a frame's records),
    so no tinygrams follow.  Returns whether there was a TCP socket.
    """
    sock = tcp_socket(transport)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as e:
        _log.info("TCP_NODELAY not available: {error}", error=e)
        return False
    return True


def tcp_socket(transport: object) -> socket.socket | None:
    """The TCP socket under any wrappers (TLS), or C{None} (QUIC, tests)."""
    t: object | None = transport
    for _ in range(8):
        if t is None:
            break
        get_handle = getattr(t, "getHandle", None)
        if callable(get_handle):
            sock = get_handle()
            if isinstance(sock, socket.socket) and sock.type == socket.SOCK_STREAM:
                return sock
        t = getattr(t, "transport", None)
    return None


def transport_buffered(transport: object, max_depth: int = 8) -> int:
    """Bytes written to C{transport} that the kernel has not accepted yet."""
    total = 0
    t: object | None = transport
    for _ in range(max_depth):
        if t is None:
            break
        queued, bottom = queued_in_layer(t)
        total += queued
        if bottom:
            break
        t = inner_transport(t)
    return total


@implementer(IPushProducer)
class PauseTracker:
    """A push producer that only remembers whether the consumer is backed up.

    Register it (streaming) on the transport and pass L{buffered} to the
    streamer: it reports C{paused_level} bytes while the transport has asked
    producers to pause, 0 otherwise.
    """

    def __init__(self, paused_level: int = 1 << 30) -> None:
        self.paused = False
        self.stopped = False
        self.paused_level = paused_level

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.stopped = True
        self.paused = True

    def buffered(self) -> int:
        return self.paused_level if self.paused else 0
