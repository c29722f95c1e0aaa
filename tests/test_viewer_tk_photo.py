"""Converted pictures into the viewer's Tk photo (litedesk.viewer.tk_photo).

The window puts libswscale's RGBA buffer into its Tk photo without Pillow
(L{PhotoWriter}), and only the band of rows that changed since the picture
the photo holds (L{changed_rows}).  What a person would notice if either
were wrong: a stale strip of an older picture left on screen, or colours
swapped.  Covered here on a real Tk on Xvfb: the photo holds exactly the
pixels put (read back through Tk), a band put leaves the other rows alone,
and after any sequence of pictures put band by band, as the frame view
does, the photo is exactly the last picture; L{changed_rows} (hypothesis,
arbitrary pictures and changes) always covers every changed row, is
exactly the changed band, and says "nothing" only for equal pictures.
"""

from __future__ import annotations

import tkinter as tk

import av
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.viewer.tk_photo import PhotoWriter, changed_rows

from .support.skips import requires
from .support.xvfb import shared_xvfb


def picture(width: int, height: int, rows: list[bytes]) -> av.VideoFrame:
    """An RGBA frame whose row M{y} is C{rows[y]} (repeated or cut to fit,
    padding included, so two pictures differ only where their rows do)."""
    frame = av.VideoFrame(width, height, "rgba")
    plane = frame.planes[0]
    line = plane.line_size
    data = b"".join((r * (line // max(1, len(r)) + 1))[:line] for r in rows)
    plane.update(data)
    return frame


def pixels_of(frame: av.VideoFrame) -> list[list[tuple[int, int, int]]]:
    plane = frame.planes[0]
    raw, line = bytes(plane), plane.line_size
    return [
        [tuple(raw[y * line + 4 * x : y * line + 4 * x + 3]) for x in range(frame.width)]  # type: ignore[misc]
        for y in range(frame.height)
    ]


def lines(frame: av.VideoFrame) -> list[bytes]:
    """The buffer's rows, padding included."""
    plane = frame.planes[0]
    raw, line = bytes(plane), plane.line_size
    return [raw[y * line : (y + 1) * line] for y in range(frame.height)]


def row_patterns(height: int) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.binary(min_size=1, max_size=12), min_size=height, max_size=height)


class ChangedRowsTests(SynchronousTestCase):
    """L{changed_rows}: the rows to put again, found by comparing buffers."""

    @settings(max_examples=200, deadline=None)
    @given(
        st.integers(1, 9),
        st.integers(1, 40),
        st.data(),
    )
    def test_band_is_exactly_the_changed_rows(
        self, width: int, height: int, data: st.DataObject
    ) -> None:
        """Whatever rows differ, the band starts at the first and ends after the
        last; equal pictures give None."""
        old_rows = data.draw(row_patterns(height))
        changed = data.draw(st.sets(st.integers(0, height - 1)))
        new_rows = [r + b"\x01" if y in changed else r for y, r in enumerate(old_rows)]
        old = picture(width, height, old_rows)
        new = picture(width, height, new_rows)
        really = [y for y, (a, b) in enumerate(zip(lines(new), lines(old), strict=True)) if a != b]
        got = changed_rows(new, old)
        if not really:
            self.assertIsNone(got)
        else:
            self.assertEqual(got, (really[0], really[-1] + 1))

    def test_nothing_to_compare_with(self) -> None:
        """No picture in the photo yet, or one of another size: all rows."""
        new = picture(4, 6, [b"\x10\x20\x30\xff"] * 6)
        self.assertEqual(changed_rows(new, None), (0, 6))
        self.assertEqual(changed_rows(new, picture(4, 5, [b"\x10\x20\x30\xff"] * 5)), (0, 6))
        self.assertEqual(changed_rows(new, picture(5, 6, [b"\x10\x20\x30\xff"] * 6)), (0, 6))


@requires("Xvfb", "tkinter")
class PhotoWriterTests(SynchronousTestCase):
    """L{PhotoWriter.put} on a real Tk photo."""

    def setUp(self) -> None:
        # The process's shared Xvfb (Tk keeps its connection after destroy).
        self.root = tk.Tk(screenName=shared_xvfb().display, className="LiteDeskTest")
        self.addCleanup(self.root.destroy)
        self.writer = PhotoWriter(self.root)
        self.assertTrue(self.writer.available, "libtk not found in the test process")

    def photo_pixels(self, photo: tk.PhotoImage) -> list[list[tuple[int, int, int]]]:
        w, h = photo.width(), photo.height()
        return [[tuple(photo.get(x, y)) for x in range(w)] for y in range(h)]  # type: ignore[misc]

    def test_photo_holds_the_pixels_put(self) -> None:
        """Red, green and blue land as such (no channel swapped, alpha ignored)."""
        rows = [bytes([250, 10, 20, 0]), bytes([5, 200, 7, 128]), bytes([1, 2, 255, 255])]
        frame = picture(5, 3, rows)
        photo = tk.PhotoImage(width=5, height=3)
        self.assertTrue(self.writer.put(photo, frame))
        self.assertEqual(self.photo_pixels(photo), pixels_of(frame))
        self.assertEqual(photo.get(0, 0), (250, 10, 20))

    def test_band_leaves_other_rows(self) -> None:
        """Putting rows 2-3 changes those and no other."""
        old = picture(4, 6, [bytes([9, 9, 9, 255])] * 6)
        new = picture(4, 6, [bytes([200, 100, 50, 255])] * 6)
        photo = tk.PhotoImage(width=4, height=6)
        self.writer.put(photo, old)
        self.writer.put(photo, new, (2, 4))
        got = self.photo_pixels(photo)
        self.assertEqual(
            [row[0] for row in got], [(9, 9, 9)] * 2 + [(200, 100, 50)] * 2 + [(9, 9, 9)] * 2
        )
        with self.assertRaises(ValueError):
            self.writer.put(photo, new, (3, 7))

    def test_photo_missing(self) -> None:
        """A photo Tk no longer has is refused, not written to."""
        photo = tk.PhotoImage(width=2, height=2)
        name = str(photo)
        del photo
        self.assertFalse(self.writer.put(name, picture(2, 2, [b"\x01\x02\x03\x04"] * 2)))

    @settings(max_examples=25, deadline=None)
    @given(st.lists(row_patterns(8), min_size=1, max_size=6))
    def test_band_by_band_shows_the_last_picture(self, pictures: list[list[bytes]]) -> None:
        """As the frame view puts them (each only where it differs from the
        one before), the photo ends up exactly the last picture."""
        photo = tk.PhotoImage(width=3, height=8)
        holds = None
        for rows in pictures:
            frame = picture(3, 8, rows)
            band = changed_rows(frame, holds)
            if band is not None:
                self.assertTrue(self.writer.put(photo, frame, band))
            holds = frame
        assert holds is not None
        self.assertEqual(self.photo_pixels(photo), pixels_of(holds))
