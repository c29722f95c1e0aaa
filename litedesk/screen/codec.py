"""What the host's encoder and the viewer's decoder agree on.

The wire format is RustDesk's C{EncodedVideoFrame}: C{data} is what the
encoder produced for one input frame, C{key} says whether a decoder can start
there, C{pts} is a timestamp in milliseconds (L{TIME_BASE}).  This module
holds the codec names, the L{EncodedFrame}, key-frame detection from the
bitstream alone and the even-size padding; it is separate so that the
viewer's decoder (L{litedesk.screen.decode}) does not carry the encoder's
rate control.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Final

from .change import Pixels

__all__ = ["TIME_BASE", "Codec", "EncodedFrame", "is_key_frame", "pad_to_even"]

#: Timestamps are milliseconds.
TIME_BASE: Final = Fraction(1, 1000)


class Codec(StrEnum):
    """Codec names as used in L{EncodedFrame.codec}; they match the C{VideoFrame}
    union member minus the trailing C{s} (C{h264s}, C{vp9s})."""

    H264 = "h264"
    VP9 = "vp9"


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded video frame, ready to be put in an C{EncodedVideoFrame}.

    @ivar data: the bitstream (Annex-B access unit for H.264, a VP9 frame or
        superframe).
    @ivar key: a decoder can start decoding here.
    @ivar pts: milliseconds, increasing.
    @ivar width: the captured size; the coded size may be one pixel larger
        in either direction (see L{pad_to_even}).
    """

    data: bytes
    key: bool
    pts: int
    codec: str
    width: int
    height: int


def pad_to_even(data: Pixels, width: int, height: int, bpp: int = 4) -> tuple[Pixels, int, int]:
    """Pad a packed image to even dimensions by repeating its last column/row.

    Repeating edge pixels (rather than adding black) keeps the padding cheap
    to code and invisible at the edge once the decoder crops it away.
    """
    if width % 2 == 0 and height % 2 == 0:
        return data, width, height
    stride = width * bpp
    rows = [data[y * stride : (y + 1) * stride] for y in range(height)]
    if width % 2:
        # join, not +: a memoryview's rows (capture.Capturer.grab_whole) have no +.
        rows = [b"".join((r, r[-bpp:])) for r in rows]
        width += 1
    if height % 2:
        rows.append(rows[-1])
        height += 1
    return b"".join(rows), width, height


def is_key_frame(codec: str, data: bytes) -> bool:
    """Whether C{data} starts a decodable sequence, from the bitstream alone.

    H.264: an Annex-B stream containing an IDR slice (NAL type 5).  VP9: the
    uncompressed header says C{frame_type == KEY_FRAME} and carries the sync
    code.  Garbage is not a key frame.
    """
    if codec == Codec.H264:
        i = data.find(b"\x00\x00\x01")
        while i >= 0 and i + 3 < len(data):
            if data[i + 3] & 0x1F == 5:
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
        return False
    if codec == Codec.VP9:
        if len(data) < 4:
            return False
        b = data[0]
        if b >> 6 != 0b10:  # frame_marker
            return False
        profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
        bit = 4 if profile < 3 else 5  # profile 3 has a reserved zero bit
        show_existing = (b >> (7 - bit)) & 1
        if show_existing:
            return False
        bit += 1
        frame_type = (b >> (7 - bit)) & 1 if bit < 8 else data[1] >> 7
        if frame_type != 0:
            return False
        # The key-frame header continues with show_frame, error_resilient and
        # the 24-bit sync code 0x49 0x83 0x42, bit-aligned after them.
        pos = bit + 3
        bits = int.from_bytes(data[:5].ljust(5, b"\x00"), "big")
        sync = (bits >> (40 - pos - 24)) & 0xFFFFFF
        return sync == 0x498342
    return False
