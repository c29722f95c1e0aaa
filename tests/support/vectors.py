"""Test vectors shared by the tests of independent implementations.

The same wire facts are checked against LiteDesk's own code and against the
stock RustDesk emulators, which must not share code with it; they share the
expected values instead.
"""

from __future__ import annotations

__all__ = ["FRAME_HEADERS"]

#: BytesCodec header of a payload of each length (the reference's vector T1):
#: the length shifted left by two, the low two bits the header's size - 1,
#: little-endian, shortest form.
FRAME_HEADERS: dict[int, str] = {
    0: "00",
    1: "04",
    63: "fc",
    64: "0101",
    300: "b104",
    16383: "fdff",
    16384: "020001",
    0x3FFFFF: "feffff",
    0x400000: "03000001",
    0x3FFFFFFF: "ffffffff",
}
