# -*- test-case-name: tests.test_websocket_relay -*-
"""A BytesCodec byte stream cut into messages, without holding their payloads.

Whatever a protocol writes on its way to a WebSocket peer is a stream of
BytesCodec frames (docs/protocol.rst §2.1); each frame becomes one binary
message.  A relay partner's frame may be megabytes long and arrive in many
pieces, so L{FrameSplitter} never waits for a whole frame: it reports a
frame that is complete within one chunk as a whole, and otherwise the frame's
start (with its length, which a WebSocket frame header needs first), each
piece as it comes, and the end.  It holds at most a partial header (3 bytes).

Sans-IO: the caller passes a L{FrameSink} with every chunk.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Chunk", "FrameSink", "FrameSplitter", "chunks_after"]

#: What the splitter cuts: the bridge passes views, so payloads are not copied.
Chunk = bytes | bytearray | memoryview


class FrameSink(Protocol):
    """Where L{FrameSplitter.feed} reports frames (the WebSocket side's writer)."""

    def whole(self, payload: Chunk) -> None:
        """A frame complete within the chunk (possibly empty)."""

    def begin(self, length: int) -> None:
        """A frame of C{length} (> 0) bytes starts; its pieces follow."""

    def part(self, data: Chunk) -> None:
        """The next piece of the frame begun last."""

    def end(self) -> None:
        """The frame begun last is complete."""


class FrameSplitter:
    """Incremental BytesCodec frame boundaries over a byte stream.

    Any byte stream is accepted: a header announcing up to 2**30 - 1 bytes is
    followed through as it arrives, so garbage costs no memory either.

    @ivar remaining: payload bytes of the current frame still to come (0:
        between frames).
    """

    __slots__ = ("_header", "remaining")

    def __init__(self) -> None:
        self._header = bytearray()
        self.remaining = 0

    @property
    def between_frames(self) -> bool:
        """No frame is partly written: a message may start (or the stream end) here."""
        return self.remaining == 0 and not self._header

    def feed(self, data: Chunk, sink: FrameSink) -> None:
        """Cut C{data}, the next bytes of the stream, reporting to C{sink}."""
        pos = 0
        n = len(data)
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                sink.part(data[pos : pos + take] if take < n else data)
                self.remaining -= take
                pos += take
                if not self.remaining:
                    sink.end()
                continue
            length, pos = self._read_header(data, pos)
            if length is None:
                return
            if n - pos >= length:
                sink.whole(data[pos : pos + length])
                pos += length
            else:
                sink.begin(length)
                if pos < n:
                    sink.part(data[pos:])
                self.remaining = length - (n - pos)
                pos = n

    def _read_header(self, data: Chunk, pos: int) -> tuple[int | None, int]:
        """(payload length, position after the header), or (None, end) if incomplete."""
        header = self._header
        if header:
            need = (header[0] & 3) + 1 - len(header)
            header += data[pos : pos + need]
            pos += need
            if len(header) < (header[0] & 3) + 1:
                return None, len(data)
            length = int.from_bytes(header, "little") >> 2
            header.clear()
            return length, pos
        size = (data[pos] & 3) + 1
        if len(data) - pos < size:
            header += data[pos:]
            return None, len(data)
        return int.from_bytes(data[pos : pos + size], "little") >> 2, pos + size


def chunks_after(parts: list[Chunk], n: int) -> list[Chunk]:
    """C{parts} without their first C{n} bytes."""
    rest: list[Chunk] = []
    for p in parts:
        size = len(p)
        if n >= size:
            n -= size
            continue
        rest.append(p[n:] if n else p)
        n = 0
    return rest
