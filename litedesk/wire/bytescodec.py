"""RustDesk's BytesCodec frame format (hbb_common ``bytes_codec.rs``).

A frame is a 1-4 byte little-endian header H followed by ``H >> 2`` payload
bytes; the low two bits of the first header byte give the header length minus
one.  The encoder always picks the shortest header; the decoder also accepts
longer-than-needed ("non-canonical") headers, as RustDesk's does.

The decoder enforces a configurable maximum payload length *before* buffering
anything, so a header that announces 1 GiB costs nothing.
"""

from __future__ import annotations

MAX_ENCODABLE = 0x3FFFFFFF


class FrameError(ValueError):
    """The byte stream cannot be decoded as BytesCodec frames."""


class FrameTooLarge(FrameError):
    """A header announced a payload larger than the decoder accepts."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def encode_header(length: int) -> bytes:
    """Return the shortest BytesCodec header for a payload of C{length} bytes."""
    if length < 0:
        raise ValueError("negative length")
    if length <= 0x3F:
        return bytes((length << 2,))
    if length <= 0x3FFF:
        return ((length << 2) | 1).to_bytes(2, "little")
    if length <= 0x3FFFFF:
        return ((length << 2) | 2).to_bytes(3, "little")
    if length <= MAX_ENCODABLE:
        return ((length << 2) | 3).to_bytes(4, "little")
    raise FrameError(f"payload of {length} bytes is too large for BytesCodec (Overflow)")


def encode_frame(payload: bytes) -> bytes:
    """Frame one payload."""
    return encode_header(len(payload)) + payload


class FrameDecoder:
    """Incremental decoder: feed it arbitrary chunks, get whole payloads back.

    After L{FrameTooLarge} the decoder is poisoned (the stream has no
    recoverable frame boundary) and every later C{feed} raises again.
    """

    __slots__ = ("_buffer", "_error", "max_length")

    def __init__(self, max_length: int = MAX_ENCODABLE) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._error: FrameTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a frame."""
        return len(self._buffer)

    def feed(self, data: bytes, limit: int | None = None) -> list[bytes]:
        """Add C{data}; return every payload completed by it, in order.

        @param limit: return at most this many payloads and leave the rest
            buffered (for a stream that may stop being framed after any
            frame, as a port forward's does after its login).
        """
        if self._error is not None:
            # A fresh exception each time: re-raising the stored one would keep
            # growing its traceback, and with it every chunk fed since.
            raise FrameTooLarge(self._error.length, self._error.limit)
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end and (limit is None or len(frames) < limit):
            header_len = (buf[pos] & 0x03) + 1
            if end - pos < header_len:
                break
            length = int.from_bytes(buf[pos : pos + header_len], "little") >> 2
            if length > self.max_length:
                self._error = FrameTooLarge(length, self.max_length)
                del buf[:]
                raise self._error
            start = pos + header_len
            if end - start < length:
                break
            frames.append(bytes(buf[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames

    def take_remainder(self) -> bytes:
        """Return and forget whatever is buffered (bytes after the last frame)."""
        rest = bytes(self._buffer)
        del self._buffer[:]
        return rest
