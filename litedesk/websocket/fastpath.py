# -*- test-case-name: tests.test_websocket_relay -*-
"""A paired relay leg's binary frames, read without autobahn (docs/websocket.rst §5).

Once a WebSocket relay leg is paired, almost every frame its peer sends is
of one kind: a whole binary message in one frame, masked (as every client
frame is), with a payload inside the size limit.  autobahn parses each frame
in Python, copies the rest of its input buffer at every frame boundary and
unmasks through three copies; that made reading WebSocket cost a WebSocket
relay most of its CPU.  L{BinaryFrameReader} takes these frames, and only
these: at the first byte of any other frame (text, continuation, control,
RSV bits, unmasked, empty, oversize, a length not in its shortest form) or
of a header that has not fully arrived, it stops, and the caller hands the
rest of the bytes to autobahn, which handles that frame, and every error, as
before.  It holds nothing but the current frame's mask and byte count.

L{Unmasker} XORs a frame's payload with its mask, in place, with autobahn's
native (NVX) masker when autobahn has one built, else through autobahn's
public masker (correct but slower: it copies).

Sans-IO: the caller passes a L{PayloadSink} with every chunk.
"""

from __future__ import annotations

from typing import Any, Protocol

from autobahn.websocket import xormasker

try:
    # autobahn's NVX XOR masker (a cffi module built with autobahn): it
    # unmasks a buffer in place, where autobahn's own wrapper copies it
    # three times.  Absent when autobahn was built without NVX.
    import _nvx_xormasker  # type: ignore[import-not-found,unused-ignore]

    _nvx_ffi: Any = _nvx_xormasker.ffi
    _nvx_lib: Any = _nvx_xormasker.lib
except ImportError:  # pragma: no cover - depends on how autobahn was built
    _nvx_ffi = _nvx_lib = None

__all__ = [
    "HAS_NATIVE_UNMASK",
    "MAX_BATCH",
    "MAX_PREFIX",
    "BinaryFrameReader",
    "PayloadSink",
    "Unmasker",
    "frame_header",
    "parse_header",
    "scratch_of",
]

#: Whether L{Unmasker} unmasks in place with autobahn's native code.
HAS_NATIVE_UNMASK = _nvx_lib is not None

# FIN set, no RSV bits, opcode 2 (binary): the only first byte taken here.
_FIN_BINARY = 0x82
_MASKED = 0x80
_MAX_LENGTH = (1 << 63) - 1


class PayloadSink(Protocol):
    """Where L{BinaryFrameReader.feed} reports what it reads."""

    def accepts_frame(self) -> bool:
        """Whether the next frame may be read here (False: leave it to autobahn)."""

    def binary_begin(self, length: int) -> bytes:
        """A binary message of C{length} (> 0) bytes starts; its payload follows.

        @return: bytes to pass on before the payload, in the same buffer as
            its first piece (the inner protocol's frame header): at most
            L{MAX_PREFIX}.
        """

    def binary_data(self, data: memoryview) -> None:
        """What frames carried: for each, what C{binary_begin} returned, then its
        payload unmasked (the last frame's may go on in the next call).  Never
        empty; valid during the call only (see L{BinaryFrameReader.feed})."""


def parse_header(data: bytes | memoryview, pos: int, limit: int) -> tuple[int, int] | None:
    """(header length, payload length) of the frame at C{data[pos:]}, if it is one
    L{BinaryFrameReader} takes and its header is complete; None otherwise.

    @param limit: largest payload taken (0: any); a longer frame is autobahn's,
        which refuses it.
    """
    end = len(data)
    if end - pos < 6 or data[pos] != _FIN_BINARY:
        return None
    b1 = data[pos + 1]
    if not b1 & _MASKED:
        return None
    length = b1 & 0x7F
    if length < 126:
        header = 6
    elif length == 126:
        header = 8
        if end - pos < header:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 126:
            return None
    else:
        header = 14
        if end - pos < header:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        if length < 0x10000 or length > _MAX_LENGTH:
            return None
    if not length or (limit and length > limit):
        return None
    return header, length


def frame_header(length: int) -> bytes:
    """The header of a server's binary frame with FIN set (unmasked, RFC 6455 §5.2)."""
    if length < 126:
        return bytes((_FIN_BINARY, length))
    if length < 0x10000:
        return b"\x82\x7e" + length.to_bytes(2, "big")
    return b"\x82\x7f" + length.to_bytes(8, "big")


#: Most input bytes read into one batch: the scratch buffer's size bound.
MAX_BATCH = 256 * 1024
#: Longest prefix a sink may ask for (the least a masked frame's header
#: takes, so a batch never outgrows its input by more than one prefix).
MAX_PREFIX = 6


class _Scratch:
    """The one buffer every connection unmasks into (the reactor runs one at a time)."""

    __slots__ = ("buf", "ptr", "view")

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.ptr: Any = _nvx_ffi.from_buffer(self.buf) if _nvx_ffi is not None else None


_scratch: _Scratch | None = None


def scratch_of(size: int) -> _Scratch:
    """The process-wide scratch buffer, at least C{size} bytes."""
    global _scratch
    s = _scratch
    if s is None or len(s.buf) < size:
        # A new buffer, never a resize: a view still held would refuse it.
        s = _scratch = _Scratch(max(size, 64 * 1024 + MAX_PREFIX))
    return s


class Unmasker:
    """XOR with a frame's 4-byte mask, continuing where the last piece ended (RFC 6455 §5.3)."""

    __slots__ = ("_masker", "_native")

    def __init__(self, mask: bytes, length: int, native: bool = HAS_NATIVE_UNMASK) -> None:
        self._native = native and _nvx_lib is not None
        if self._native:
            lib = _nvx_lib
            self._masker: Any = _nvx_ffi.gc(lib.nvx_xormask_new(mask), lib.nvx_xormask_free)
        else:
            # autobahn's choice (NVX, or pure Python), through its public name.
            self._masker = xormasker.create_xor_masker(mask, length)  # type: ignore[attr-defined,no-untyped-call]

    def apply(self, data: memoryview, out: _Scratch, at: int) -> int:
        """Write the next C{len(data)} bytes of the payload, unmasked, to C{out}
        from offset C{at}; return the offset after them."""
        end = at + len(data)
        if self._native:
            out.view[at:end] = data
            _nvx_lib.nvx_xormask_process(self._masker, out.ptr + at, end - at)
        else:
            out.view[at:end] = self._masker.process(data)
        return end


class BinaryFrameReader:
    """Masked single-frame binary messages from a byte stream (see the module).

    @ivar limit: largest payload taken (0: any).
    @ivar remaining: payload bytes of the current frame still to come (0:
        between frames).
    @ivar frames: frames taken so far.
    """

    __slots__ = ("_native", "_prefix", "_unmasker", "frames", "limit", "remaining")

    def __init__(self, limit: int, native: bool = HAS_NATIVE_UNMASK) -> None:
        self.limit = limit
        self.remaining = 0
        self.frames = 0
        self._native = native
        self._unmasker: Unmasker | None = None
        self._prefix = b""

    def feed(self, data: bytes | memoryview, sink: PayloadSink) -> int:
        """Read frames from the start of C{data}, reporting them to C{sink}.

        What the frames carry goes to C{sink.binary_data} in batches (one per
        L{MAX_BATCH} bytes of C{data}), each a view of the process-wide
        scratch buffer: each frame's prefix (C{sink.binary_begin}) then its
        payload, unmasked, frame after frame.  A view is valid during the
        call only: a receiver that keeps the bytes must copy them (a relay
        leg sends them at once, or copies what must wait, as Twisted's own
        buffer does).

        @return: the offset of the first byte not read (C{len(data)} if all
            were): the start of a frame this reader does not take, or of a
            header still incomplete, or of a frame C{sink} did not accept.
            Whatever follows is autobahn's to parse; everything before it was
            passed on first.
        """
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            stop = min(end, pos + MAX_BATCH)
            out = scratch_of(stop - pos + MAX_PREFIX)
            pos, at, more = self._batch(data, view, pos, stop, sink, out)
            if at:
                sink.binary_data(out.view[:at])
            if not more:
                break
        return pos

    def _batch(
        self,
        data: bytes | memoryview,
        view: memoryview,
        pos: int,
        stop: int,
        sink: PayloadSink,
        out: _Scratch,
    ) -> tuple[int, int, bool]:
        """Read C{data[pos:stop]} into C{out}: (where reading stopped, bytes written
        to C{out}, whether the next frame may be taken)."""
        at = 0
        while pos < stop:
            remaining = self.remaining
            if remaining:
                take = min(remaining, stop - pos)
                unmasker = self._unmasker
                assert unmasker is not None
                prefix = self._prefix
                if prefix:
                    self._prefix = b""
                    n = len(prefix)
                    out.view[at : at + n] = prefix
                    at += n
                at = unmasker.apply(view[pos : pos + take], out, at)
                pos += take
                self.remaining = remaining = remaining - take
                if not remaining:
                    self._unmasker = None
                continue
            if not sink.accepts_frame():
                return pos, at, False
            found = parse_header(data, pos, self.limit)
            if found is None:
                return pos, at, False
            header, length = found
            pos += header
            self._unmasker = Unmasker(bytes(view[pos - 4 : pos]), length, self._native)
            self.remaining = length
            self.frames += 1
            # Goes out with the first piece of payload, in the same buffer.
            prefix = sink.binary_begin(length)
            if len(prefix) > MAX_PREFIX:
                raise ValueError(f"prefix of {len(prefix)} bytes, more than {MAX_PREFIX}")
            self._prefix = prefix
        return pos, at, True
