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

These are private attributes (checked against Twisted 26.10); if a future
Twisted renames them the function returns 0, so streaming goes on without
drops instead of stopping, and the real-socket test in
C{tests/test_screen_pipeline.py} fails to say so.

L{PauseTracker} is the public-API alternative for a session that can give
the video its own producer registration.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["PauseTracker", "transport_buffered"]


def transport_buffered(transport: object, max_depth: int = 8) -> int:
    """Bytes written to C{transport} that the kernel has not accepted yet."""
    total = 0
    t: object | None = transport
    for _ in range(max_depth):
        if t is None:
            break
        aggregator = getattr(t, "_aggregator", None)
        pending = getattr(aggregator, "_buffer", None)
        if isinstance(pending, list):
            total += sum(len(b) for b in pending)
        app = getattr(t, "_appSendBuffer", None)
        if isinstance(app, list):
            total += sum(len(b) for b in app)
        data = getattr(t, "dataBuffer", None)
        if isinstance(data, bytes | bytearray):
            offset = getattr(t, "offset", 0)
            temp = getattr(t, "_tempDataLen", 0)
            total += len(data) - (offset if isinstance(offset, int) else 0)
            total += temp if isinstance(temp, int) else 0
            break
        t = getattr(t, "transport", None)
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
