"""Tests for L{litedesk.wire.bytescodec}: RustDesk's BytesCodec TCP framing.

Vectors for docs/protocol.rst §2.1 and §9 item 1, computed from RustDesk's code.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.wire.bytescodec import (
    MAX_ENCODABLE,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    encode_frame,
    encode_header,
)
from tests import strategies

# (payload length, canonical header) at each header-length boundary of §2.1, plus
# the last and first length of every header size.
HEADER_VECTORS = [
    (0, "00"),
    (1, "04"),
    (63, "fc"),
    (64, "0101"),
    (16383, "fdff"),
    (16384, "020001"),
    (4194303, "feffff"),
    (4194304, "03000001"),
    (MAX_ENCODABLE, "ffffffff"),
]

# Upstream bytes_codec.rs round-trip lengths.
UPSTREAM_LENGTHS = [0x3F, 0, 0x40, 0x3E, 0x3FFF, 0x3FFFFF, 0x400000]

MIB = 1024 * 1024


def feed_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


class EncodeHeaderTests(SynchronousTestCase):
    def test_spec_vectors(self) -> None:
        """
        Every header vector of §2.1 is produced exactly: the encoder always
        picks the shortest header RustDesk would pick.
        """
        for length, header in HEADER_VECTORS:
            with self.subTest(length=length):
                self.assertEqual(encode_header(length).hex(), header)

    def test_size_boundaries(self) -> None:
        """
        The header grows from 1 to 4 bytes exactly at 64, 16384 and 4194304
        bytes of payload.
        """
        for length, size in [
            (0x3F, 1),
            (0x40, 2),
            (0x3FFF, 2),
            (0x4000, 3),
            (0x3FFFFF, 3),
            (0x400000, 4),
            (MAX_ENCODABLE, 4),
        ]:
            with self.subTest(length=length):
                self.assertEqual(len(encode_header(length)), size)

    def test_overflow(self) -> None:
        """
        A payload longer than 0x3FFFFFFF bytes cannot be framed: the encoder
        raises L{FrameError} (upstream's "Overflow") instead of emitting a
        header that would wrap.
        """
        for length in (MAX_ENCODABLE + 1, 1 << 32, 1 << 40):
            with self.subTest(length=length):
                self.assertRaises(FrameError, encode_header, length)

    def test_negative(self) -> None:
        """
        A negative length is a programming error reported as L{ValueError}.
        """
        self.assertRaises(ValueError, encode_header, -1)

    def test_encode_frame(self) -> None:
        """
        A frame is the header followed by the payload, byte for byte
        (§9 item 10: TestNatRequest framed as C{14a201020803}).
        """
        self.assertEqual(encode_frame(bytes.fromhex("a201020803")).hex(), "14a201020803")
        self.assertEqual(encode_frame(b""), b"\x00")


class FrameDecoderTests(SynchronousTestCase):
    def test_spec_headers_decode(self) -> None:
        """
        Every §2.1 header vector followed by its payload decodes to exactly
        that payload, with nothing left buffered.
        """
        for length, header in HEADER_VECTORS[:-1]:
            with self.subTest(length=length):
                payload = bytes([length % 251]) * length
                decoder = FrameDecoder()
                self.assertEqual(decoder.feed(bytes.fromhex(header) + payload), [payload])
                self.assertEqual(decoder.buffered, 0)

    def test_upstream_round_trips(self) -> None:
        """
        The payload lengths of upstream's bytes_codec.rs tests survive
        encode then decode unchanged.
        """
        for length in UPSTREAM_LENGTHS:
            with self.subTest(length=length):
                payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
                self.assertEqual(FrameDecoder().feed(encode_frame(payload)), [payload])

    def test_non_canonical_empty_frame(self) -> None:
        """
        C{01 00} (a 2-byte header for a 0-byte payload) is accepted as an
        empty frame, as RustDesk's decoder does (§9 item 1).
        """
        self.assertEqual(FrameDecoder().feed(b"\x01\x00"), [b""])

    def test_non_canonical_headers(self) -> None:
        """
        Longer-than-needed 3- and 4-byte headers are accepted too.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"\x02\x00\x00" + b"\x03\x00\x00\x00"), [b"", b""])
        self.assertEqual(decoder.feed(((5 << 2) | 3).to_bytes(4, "little") + b"hello"), [b"hello"])

    def test_heartbeat(self) -> None:
        """
        A single C{00} byte is an empty (heartbeat) frame; several in a row
        are several frames.
        """
        self.assertEqual(FrameDecoder().feed(b"\x00\x00\x00"), [b"", b"", b""])

    def test_byte_by_byte(self) -> None:
        """
        A stream of several frames delivered one byte at a time is split into
        the same frames, each returned by the call that completes it.
        """
        payloads = [b"", b"a", b"x" * 64, b"y" * 16384, bytes.fromhex("a201020803")]
        stream = b"".join(encode_frame(p) for p in payloads)
        decoder = FrameDecoder()
        frames = []
        for i in range(len(stream)):
            got = decoder.feed(stream[i : i + 1])
            self.assertLessEqual(len(got), 1)
            frames.extend(got)
        self.assertEqual(frames, payloads)
        self.assertEqual(decoder.buffered, 0)

    def test_partial_header(self) -> None:
        """
        The first byte of a multi-byte header alone yields nothing yet; the
        frame comes out once the rest arrives.
        """
        decoder = FrameDecoder()
        frame = encode_frame(b"z" * 100)
        self.assertEqual(decoder.feed(frame[:1]), [])
        self.assertEqual(decoder.buffered, 1)
        self.assertEqual(decoder.feed(frame[1:]), [b"z" * 100])

    def test_partial_payload(self) -> None:
        """
        Upstream's case: a header announcing 8 bytes followed by only 5 of
        them yields nothing; the last 3 complete the frame.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"\x20" + b"12345"), [])
        self.assertEqual(decoder.feed(b"678"), [b"12345678"])

    def test_frame_then_partial(self) -> None:
        """
        A chunk holding one whole frame and the start of the next returns the
        whole one and keeps the rest.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"\x08ab\x0cc"), [b"ab"])
        self.assertEqual(decoder.buffered, 2)
        self.assertEqual(decoder.feed(b"de"), [b"cde"])

    def test_huge_header_does_not_allocate(self) -> None:
        """
        A 4-byte header announcing 0x3FFFFFFF bytes, with the default
        (unlimited) maximum, costs less than 1 MiB of memory when it arrives
        together with a few payload bytes: nothing is reserved up front
        (upstream's "must not allocate >1 MiB" test).
        """
        header = encode_header(MAX_ENCODABLE)
        self.assertEqual(header, b"\xff\xff\xff\xff")
        tracemalloc.start()
        try:
            decoder = FrameDecoder()
            self.assertEqual(decoder.feed(header), [])
            self.assertEqual(decoder.feed(b"0123456789"), [])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, MIB)
        self.assertEqual(decoder.buffered, 14)

    def test_too_large_poisons(self) -> None:
        """
        With C{max_length=65536}, a header announcing 0x3FFFFFFF bytes raises
        L{FrameTooLarge} (carrying both numbers), costs no memory, and every
        later feed raises again even with valid frames: the stream has lost
        its frame boundaries.
        """
        tracemalloc.start()
        try:
            decoder = FrameDecoder(max_length=65536)
            exc = self.assertRaises(FrameTooLarge, decoder.feed, b"\xff\xff\xff\xff" + b"x" * 10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, MIB)
        self.assertEqual((exc.length, exc.limit), (MAX_ENCODABLE, 65536))
        self.assertIsInstance(exc, FrameError)
        self.assertRaises(FrameTooLarge, decoder.feed, b"\x00")
        self.assertRaises(FrameTooLarge, decoder.feed, b"")

    def test_too_large_after_good_frames(self) -> None:
        """
        An oversized header arriving behind a good frame in the same chunk
        still raises; the limit itself is allowed.
        """
        decoder = FrameDecoder(max_length=4)
        self.assertEqual(decoder.feed(encode_frame(b"four")), [b"four"])
        self.assertRaises(FrameTooLarge, decoder.feed, encode_frame(b"ok") + encode_frame(b"fives"))

    def test_take_remainder(self) -> None:
        """
        After the last frame, C{take_remainder} hands back the bytes that
        followed it (hbbr switching to raw mode) and empties the buffer.
        """
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(encode_frame(b"hello") + b"\x05raw bytes"), [b"hello"])
        self.assertEqual(decoder.buffered, 10)
        self.assertEqual(decoder.take_remainder(), b"\x05raw bytes")
        self.assertEqual(decoder.buffered, 0)
        self.assertEqual(decoder.take_remainder(), b"")

    def test_take_remainder_then_frames(self) -> None:
        """
        A decoder whose remainder was taken starts afresh at a frame boundary.
        """
        decoder = FrameDecoder()
        decoder.feed(b"\x08a")
        self.assertEqual(decoder.take_remainder(), b"\x08a")
        self.assertEqual(decoder.feed(b"\x04b"), [b"b"])


class FrameDecoderPropertyTests(SynchronousTestCase):
    @given(st.data(), strategies.payload_lists)
    def test_round_trip_any_split(self, data: st.DataObject, payloads: list[bytes]) -> None:
        """
        Any few payloads (0..70000 bytes), encoded back to back and delivered
        in arbitrary chunks, come out as exactly those payloads in order.
        """
        stream = b"".join(encode_frame(p) for p in payloads)
        chunks = data.draw(strategies.chunked(stream))
        decoder = FrameDecoder()
        self.assertEqual(feed_all(decoder, chunks), payloads)
        self.assertEqual(decoder.buffered, 0)

    @given(st.data(), st.binary(max_size=2048), strategies.max_lengths)
    def test_garbage(self, data: st.DataObject, garbage: bytes, max_length: int) -> None:
        """
        Arbitrary bytes either decode into frames (never more bytes than were
        fed) or raise L{FrameError}; nothing else escapes the decoder.
        """
        decoder = FrameDecoder(max_length=max_length)
        chunks = data.draw(strategies.chunked(garbage))
        try:
            frames = feed_all(decoder, chunks)
        except FrameError:
            return
        self.assertLessEqual(sum(len(f) for f in frames) + decoder.buffered, len(garbage))
        for frame in frames:
            self.assertLessEqual(len(frame), max_length)
