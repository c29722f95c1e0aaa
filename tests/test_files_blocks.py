"""litedesk.files.blocks and partial: a block's payload both ways, the caps on
what a peer's block can make us allocate (zstd bombs), and the partial file
(C{NAME.download} + C{NAME.digest}) a receiver writes, resumes and renames."""

from __future__ import annotations

import contextlib
import json
import os
import random

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.files.blocks import (
    BLOCK_SIZE,
    MAX_BLOCK_PAYLOAD,
    BlockError,
    decode_block,
    encode_block,
    is_compressed_name,
)
from litedesk.files.partial import PartialError, PartialFile

TEXT = b"".join(b"line %d of a log file, somewhat repetitive\n" % i for i in range(4000))


class EncodeTests(SynchronousTestCase):
    def test_text_is_compressed_and_round_trips(self) -> None:
        data = TEXT[:BLOCK_SIZE]
        payload, compressed = encode_block(data, "app.log")
        self.assertTrue(compressed)
        self.assertLess(len(payload), len(data) // 4)
        self.assertEqual(decode_block(payload, compressed, BLOCK_SIZE), data)

    def test_random_data_goes_as_it_is(self) -> None:
        """Incompressible blocks are not sent as a (longer) zstd frame."""
        data = random.Random(1).randbytes(BLOCK_SIZE)
        payload, compressed = encode_block(data, "blob.bin")
        self.assertFalse(compressed)
        self.assertIs(payload, data)

    def test_compressed_extensions_are_never_compressed(self) -> None:
        """RustDesk's list: xz gz zip 7z rar bz2 tgz png jpg, by the last extension."""
        for name in ("a.gz", "dir/b.tar.gz", "c.zip", "d.png", "e.jpg", "f.7z", "g.tgz"):
            self.assertEqual(encode_block(TEXT[:1000], name), (TEXT[:1000], False))
            self.assertTrue(is_compressed_name(name))
        self.assertFalse(is_compressed_name("report.txt"))
        self.assertFalse(is_compressed_name("gz"))

    def test_a_frame_from_another_level_is_accepted(self) -> None:
        frame = zstandard.ZstdCompressor(level=19).compress(TEXT[:5000])
        self.assertEqual(decode_block(frame, True, 5000), TEXT[:5000])

    @given(st.binary(max_size=3 * 4096), st.sampled_from(["x.txt", "x.gz", "", "noext"]))
    def test_round_trip(self, data: bytes, name: str) -> None:
        payload, compressed = encode_block(data, name)
        self.assertLessEqual(len(payload), len(data))
        self.assertEqual(decode_block(payload, compressed, len(data)), data)


class DecodeLimitTests(SynchronousTestCase):
    def test_bomb_with_declared_size_is_refused_before_decompressing(self) -> None:
        """A frame declaring 64 MiB is refused from its header."""
        bomb = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
        self.assertLess(len(bomb), 64 * 1024)
        e = self.assertRaises(BlockError, decode_block, bomb, True, BLOCK_SIZE)
        self.assertIn("67108864", str(e))

    def test_bomb_without_declared_size_stops_at_the_limit(self) -> None:
        co = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
        bomb = co.compress(bytes(64 << 20)) + co.flush()
        self.assertRaises(BlockError, decode_block, bomb, True, BLOCK_SIZE)

    def test_limit_is_what_the_file_still_lacks(self) -> None:
        frame = zstandard.ZstdCompressor().compress(TEXT[:1000])
        self.assertRaises(BlockError, decode_block, frame, True, 999)
        self.assertRaises(BlockError, decode_block, TEXT[:1000], False, 999)
        self.assertRaises(
            BlockError, decode_block, zstandard.ZstdCompressor().compress(b"x"), True, 0
        )
        self.assertEqual(decode_block(b"", False, 0), b"")

    def test_oversized_payload_is_refused(self) -> None:
        self.assertRaises(BlockError, decode_block, bytes(MAX_BLOCK_PAYLOAD + 1), False)

    def test_garbage_is_a_block_error(self) -> None:
        self.assertRaises(BlockError, decode_block, b"not zstd at all", True, BLOCK_SIZE)

    @settings(max_examples=300)
    @given(st.binary(max_size=2048), st.booleans(), st.integers(0, MAX_BLOCK_PAYLOAD))
    def test_any_payload_decodes_within_limit_or_is_refused(
        self, payload: bytes, compressed: bool, limit: int
    ) -> None:
        """Whatever a peer sends: bytes within the limit, or BlockError."""
        try:
            out = decode_block(payload, compressed, limit)
        except BlockError:
            return
        self.assertLessEqual(len(out), limit)

    @given(st.binary(min_size=1, max_size=4096), st.integers(0, 8))
    def test_mangled_frames_never_raise_anything_else(self, data: bytes, cut: int) -> None:
        frame = zstandard.ZstdCompressor().compress(data)
        for mangled in (frame[: len(frame) - cut], frame[:4] + bytes([cut]) + frame[5:]):
            with contextlib.suppress(BlockError):
                decode_block(mangled, True, len(data))


class PartialFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = self.mktemp()
        os.makedirs(self.dir)
        self.target = os.path.join(self.dir, "movie.mkv")

    def _files(self) -> list[str]:
        return sorted(os.listdir(self.dir))

    def test_complete_file_is_renamed_with_its_time(self) -> None:
        p = PartialFile.open(self.target, 6, 1_600_000_000)
        self.assertEqual(self._files(), ["movie.mkv.digest", "movie.mkv.download"])
        with open(self.target + ".digest") as f:
            self.assertEqual(json.load(f), {"size": 6, "modified": 1_600_000_000})
        p.write(b"abc")
        p.write(memoryview(b"def"))
        p.finish()
        self.assertEqual(self._files(), ["movie.mkv"])
        with open(self.target, "rb") as f:
            self.assertEqual(f.read(), b"abcdef")
        self.assertEqual(os.stat(self.target).st_mtime, 1_600_000_000)

    def test_short_file_is_not_renamed(self) -> None:
        with open(self.target, "wb") as f:
            f.write(b"old")
        p = PartialFile.open(self.target, 6, 1)
        p.write(b"abc")
        self.assertRaises(PartialError, p.finish)
        p.abort()
        self.assertEqual(self._files(), ["movie.mkv"])
        with open(self.target, "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_more_than_announced_is_refused(self) -> None:
        p = PartialFile.open(self.target, 2, 1)
        self.assertRaises(PartialError, p.write, b"abc")
        p.abort()

    def test_interrupted_partial_resumes_for_the_same_source_only(self) -> None:
        p = PartialFile.open(self.target, 10, 77)
        p.write(b"01234")
        p.abort(keep=True)
        self.assertEqual(PartialFile.resumable(self.target, 10, 77), 5)
        self.assertEqual(PartialFile.resumable(self.target, 10, 78), 0)
        self.assertEqual(PartialFile.resumable(self.target, 11, 77), 0)
        p = PartialFile.open(self.target, 10, 77, offset=5)
        p.write(b"56789")
        p.finish()
        with open(self.target, "rb") as f:
            self.assertEqual(f.read(), b"0123456789")

    def test_resume_beyond_the_partial_is_refused(self) -> None:
        p = PartialFile.open(self.target, 10, 77)
        p.write(b"01")
        p.abort(keep=True)
        self.assertRaises(PartialError, PartialFile.open, self.target, 10, 77, 5)

    def test_broken_digest_means_no_resume(self) -> None:
        for text in ("", "[]", '{"size": "10", "modified": 77}', "{", "x" * 10000):
            with open(self.target + ".download", "wb") as f:
                f.write(b"01234")
            with open(self.target + ".digest", "w") as f:
                f.write(text)
            self.assertEqual(PartialFile.resumable(self.target, 10, 77), 0)

    def test_abort_removes_partial_and_digest(self) -> None:
        p = PartialFile.open(self.target, 10, 77)
        p.write(b"01")
        p.abort()
        p.abort()
        self.assertEqual(self._files(), [])

    def test_partial_through_a_symlink_is_refused(self) -> None:
        """O_NOFOLLOW: a NAME.download planted as a link is not written through."""
        outside = self.mktemp()
        os.symlink(outside, self.target + ".download")
        self.assertRaises(PartialError, PartialFile.open, self.target, 3, 1)
        self.assertFalse(os.path.exists(outside))
