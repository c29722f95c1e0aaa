"""Change detection between frames (litedesk.screen.change), no X needed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from litedesk.screen.change import Rect, changed_tiles, detect_change, diff_box


def _frame(width: int, height: int, fill: int = 0x40) -> bytearray:
    return bytearray([fill, fill, fill, 255] * (width * height))


def _paint(buf: bytearray, width: int, rect: Rect, value: int = 0xEE) -> None:
    for y in range(rect.y, rect.bottom):
        for x in range(rect.x, rect.right):
            i = (y * width + x) * 4
            buf[i : i + 3] = bytes([value, value ^ 0x55, value ^ 0xAA])


class DetectChangeTests(unittest.TestCase):
    W, H = 320, 200

    def test_identical_frames_report_no_change(self) -> None:
        """An unchanged screen yields changed=False, no box and no tiles (no video sent)."""
        a = bytes(_frame(self.W, self.H))
        change = detect_change(a, bytes(a), self.W, self.H)
        self.assertFalse(change.changed)
        self.assertIsNone(change.bbox)
        self.assertEqual(change.tiles, [])

    def test_exact_rectangle_found(self) -> None:
        """A changed rectangle is reported exactly, with the tiles it touches."""
        a = _frame(self.W, self.H)
        b = bytearray(a)
        rect = Rect(70, 30, 61, 45)  # crosses tile boundaries at 64 and 128
        _paint(b, self.W, rect)
        change = detect_change(bytes(a), bytes(b), self.W, self.H)
        self.assertTrue(change.changed)
        self.assertEqual(change.bbox, rect)
        self.assertEqual(
            change.tiles,
            [
                Rect(64, 0, 64, 64),
                Rect(128, 0, 64, 64),
                Rect(64, 64, 64, 64),
                Rect(128, 64, 64, 64),
            ],
        )

    def test_single_pixel_changes(self) -> None:
        """One changed pixel at each corner is found exactly (edges and clipped tiles)."""
        for x, y in [(0, 0), (self.W - 1, 0), (0, self.H - 1), (self.W - 1, self.H - 1)]:
            a = _frame(self.W, self.H)
            b = bytearray(a)
            _paint(b, self.W, Rect(x, y, 1, 1))
            change = detect_change(bytes(a), bytes(b), self.W, self.H)
            self.assertEqual(change.bbox, Rect(x, y, 1, 1))
            self.assertEqual(len(change.tiles), 1)
            tile = change.tiles[0]
            self.assertTrue(tile.x <= x < tile.right and tile.y <= y < tile.bottom)
            # 200 is not a multiple of 64: the last tile row is clipped to 8 rows.
            self.assertLessEqual(tile.bottom, self.H)

    def test_two_separate_changes_bounding_box(self) -> None:
        """Two distant changes give a box spanning both and only their tiles."""
        a = _frame(self.W, self.H)
        b = bytearray(a)
        _paint(b, self.W, Rect(5, 150, 3, 3))
        _paint(b, self.W, Rect(300, 10, 4, 2))
        change = detect_change(bytes(a), bytes(b), self.W, self.H)
        self.assertEqual(change.bbox, Rect(5, 10, 299, 143))
        self.assertEqual(change.tiles, [Rect(256, 0, 64, 64), Rect(0, 128, 64, 64)])

    def test_no_previous_frame_is_full_change(self) -> None:
        """The first frame (or one of a new size) counts as entirely changed."""
        a = bytes(_frame(self.W, self.H))
        change = detect_change(None, a, self.W, self.H)
        self.assertEqual(change.bbox, Rect(0, 0, self.W, self.H))
        self.assertEqual(len(change.tiles), 5 * 4)
        self.assertTrue(detect_change(a[:-4], a, self.W, self.H).changed)

    def test_changed_tiles_helper_and_tile_size(self) -> None:
        """changed_tiles honours the tile size and reports clipped edge tiles."""
        a = _frame(self.W, self.H)
        b = bytearray(a)
        _paint(b, self.W, Rect(319, 199, 1, 1))
        self.assertEqual(
            changed_tiles(bytes(a), bytes(b), self.W, self.H, tile=32), [Rect(288, 192, 32, 8)]
        )

    def test_wrong_size_rejected(self) -> None:
        """A frame whose length does not match its size is a caller bug (ValueError)."""
        self.assertRaises(ValueError, detect_change, None, b"1234", 2, 2)


class DiffBoxTests(unittest.TestCase):
    W, H = 96, 64

    def test_identical_is_none_and_a_rectangle_is_exact(self) -> None:
        """No difference: None (the damage path sends nothing); one painted
        rectangle: exactly its box."""
        a = bytes(_frame(self.W, self.H))
        self.assertIsNone(diff_box(bytearray(a), a, self.W, self.H))
        b = _frame(self.W, self.H)
        _paint(b, self.W, Rect(13, 7, 30, 21))
        self.assertEqual(diff_box(bytearray(a), bytes(b), self.W, self.H), Rect(13, 7, 30, 21))

    @given(
        st.lists(
            st.tuples(
                st.integers(0, 95), st.integers(0, 63), st.integers(1, 40), st.integers(1, 30)
            ),
            max_size=4,
        )
    )
    @settings(max_examples=60, deadline=None)
    def test_box_is_the_detect_change_box(self, paints: list[tuple[int, int, int, int]]) -> None:
        """Whatever rectangles changed, diff_box finds the box detect_change finds."""
        a = bytes(_frame(self.W, self.H))
        b = _frame(self.W, self.H)
        for x, y, w, h in paints:
            _paint(b, self.W, Rect(x, y, min(w, self.W - x), min(h, self.H - y)))
        change = detect_change(a, bytes(b), self.W, self.H)
        self.assertEqual(diff_box(bytearray(a), bytes(b), self.W, self.H), change.bbox)


class DiffBoxPixelTests(unittest.TestCase):
    W, H = 64, 40

    @given(
        st.lists(
            st.tuples(st.integers(0, 63), st.integers(0, 39), st.integers(0, 3)),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    @settings(max_examples=300, deadline=None)
    def test_box_holds_every_changed_byte(self, pixels: list[tuple[int, int, int]]) -> None:
        """Single bytes changed anywhere (the screen's edges too, any channel):
        the box is exactly the smallest one holding them all, as a pixel-by-pixel
        search finds it (the damage path converts only this box, so a pixel
        outside would never reach the viewer)."""
        a = bytes(_frame(self.W, self.H))
        b = bytearray(a)
        for x, y, channel in pixels:
            b[(y * self.W + x) * 4 + channel] ^= 0xFF
        xs = [x for x, y, c in pixels]
        ys = [y for x, y, c in pixels]
        expect = Rect(min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1)
        self.assertEqual(diff_box(a, bytes(b), self.W, self.H), expect)
