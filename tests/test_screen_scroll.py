"""Scrolled content: finding the rows that moved, and moving them on the viewer.

L{litedesk.screen.scroll.find_scroll} on images built in memory: text-like
rows scrolled up or down by any offset are found with the exact run of
rows that moved, anything it reports is true row by row (hypothesis over
any image, offset and box), and blank or unrelated content reports nothing.
L{litedesk.screen.tile_frames.scroll_parts} plus the tile message redraw a
scrolled box exactly on the viewer, for even and odd offsets (an odd one
sends the run's chroma).  On Xvfb, a window scrolled with XCopyArea and a
new line drawn goes as one tile message that moves the rows, and the
viewer's picture is the screen.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.trial import unittest

from litedesk.screen import EncodedFrame, ScreenStreamer
from litedesk.screen.change import Rect
from litedesk.screen.scroll import MIN_ROWS, Scroll, find_scroll
from litedesk.screen.tile_frames import as_tiles, scroll_parts
from litedesk.screen.tile_patch import apply_tiles
from litedesk.screen.tiles import TILE_CODEC, encode_tiles, parse_tiles
from litedesk.screen.yuv_canvas import to_yuv
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import shared_desktop

from .test_screen_damage import _Window
from .test_screen_tiles import _block, _planes, _shown

W, H = 320, 240


def _text_rows(n: int, width: int, seed: int) -> list[bytes]:
    """Rows like lines of text: runs of white with dark 'glyph' pixels, some blank."""
    rng = random.Random(seed)
    rows = []
    for y in range(n):
        if y % 16 >= 12:  # the gap between lines
            rows.append(b"\xff\xff\xff\xff" * width)
            continue
        px = bytearray(b"\xff\xff\xff\xff" * width)
        for _ in range(width // 6):
            x = rng.randrange(width)
            v = rng.randrange(0, 200)
            px[x * 4 : x * 4 + 4] = bytes([v, v, v, 255])
        rows.append(bytes(px))
    return rows


def _image(rows: list[bytes]) -> bytes:
    return b"".join(rows)


class FindScrollTests(unittest.TestCase):
    def test_text_scrolled_up_is_found_with_its_rows(self) -> None:
        """Content moved up by 15 rows inside the box (a new line at the bottom):
        the run is every row but the new ones, and dy is 15."""
        content = _text_rows(H + 15, W, seed=1)
        old = _image(content[:H])
        new = _image(content[15 : H + 15])
        found = find_scroll(old, new, W * 4, Rect(0, 0, W, H))
        assert found is not None
        self.assertEqual(found.dy, 15)
        self.assertEqual(found.rows, Rect(0, 0, W, H - 15))

    def test_text_scrolled_down_inside_a_box(self) -> None:
        """Only the box's rows and columns count; content moving down is a negative dy."""
        content = _text_rows(H, W, seed=2)
        old = bytearray(_image(content))
        new = bytearray(old)
        box = Rect(40, 20, 200, 180)
        for y in range(box.y + 8, box.bottom):
            o = y * W * 4 + box.x * 4
            s = (y - 8) * W * 4 + box.x * 4
            new[o : o + box.width * 4] = old[s : s + box.width * 4]
        found = find_scroll(bytes(old), bytes(new), W * 4, box)
        assert found is not None
        self.assertEqual((found.dy, found.rows), (-8, Rect(40, 28, 200, 172)))

    def test_blank_or_unrelated_content_is_no_scroll(self) -> None:
        blank = b"\xff" * (W * H * 4)
        self.assertIsNone(find_scroll(blank, blank, W * 4, Rect(0, 0, W, H)))
        a = _image(_text_rows(H, W, seed=3))
        b = _image(_text_rows(H, W, seed=4))
        self.assertIsNone(find_scroll(a, b, W * 4, Rect(0, 0, W, H)))
        self.assertIsNone(find_scroll(a, a, W * 4, Rect(0, 0, W, MIN_ROWS)))

    @settings(max_examples=80, deadline=None)
    @given(
        st.integers(-60, 60),
        st.integers(0, 100),
        st.integers(0, 40),
        st.integers(2 * MIN_ROWS, H),
        st.integers(0, 2**16),
    )
    def test_what_it_reports_is_true_row_by_row(
        self, dy: int, x: int, y: int, h: int, seed: int
    ) -> None:
        """Any scroll of any box: when found, the offset is the one applied and
        every row of the run equals the old row dy away; a scroll of more than
        MIN_ROWS rows of text is always found."""
        content = _text_rows(H + 120, W, seed=seed)
        old = bytearray(_image(content[60 : 60 + H]))
        new = bytearray(old)
        box = Rect(x, min(y, H - h), W - x, h)
        for row in range(box.y, box.bottom):
            o = row * W * 4 + box.x * 4
            src = content[60 + row + dy]
            new[o : o + box.width * 4] = src[box.x * 4 : box.right * 4]
        found = find_scroll(bytes(old), bytes(new), W * 4, box)
        moved = box.height - abs(dy)
        if found is None:
            self.assertTrue(dy == 0 or moved < MIN_ROWS + 8, (dy, box))
            return
        self.assertEqual(found.dy, dy)
        for row in range(found.rows.y, found.rows.bottom):
            o = row * W * 4 + box.x * 4
            s = (row + dy) * W * 4 + box.x * 4
            self.assertEqual(new[o : o + box.width * 4], old[s : s + box.width * 4])


class ScrollTilesTests(unittest.TestCase):
    def _redraw(self, dy: int) -> None:
        content = _text_rows(H + abs(dy), W, seed=dy)
        if dy > 0:  # content moved up: new row r is old row r + dy
            old_rows, new_rows = content[:H], content[dy : dy + H]
        else:
            old_rows, new_rows = content[-dy : -dy + H], content[:H]
        old, new = _image(old_rows), _image(new_rows)
        box = Rect(0, 0, W, H)
        found = find_scroll(old, new, W * 4, box)
        assert found is not None, dy
        copy, pixels, chroma = scroll_parts(box, found, W, H)
        host_old, host_new = to_yuv(old, W, H), to_yuv(new, W, H)
        data = encode_tiles(host_new, pixels, (copy,), chroma)
        out = apply_tiles(host_old, parse_tiles(data, W, H))
        self.assertEqual(_planes(out), _planes(host_new))
        self.assertEqual(_block(out, box), _block(host_new, box))
        self.assertEqual(bool(chroma), dy % 2 == 1)

    def test_even_offset_moves_luma_and_chroma(self) -> None:
        """Scrolled by 16 rows: the copy moves all three planes, only the new rows
        are pixels, and the viewer's picture is the host's exactly."""
        self._redraw(16)

    def test_odd_offset_sends_the_chroma(self) -> None:
        """Scrolled by 15 rows (4:2:0 chroma cannot move by half a row): the copy
        moves luma, the run's chroma comes as a chroma rect, and the result is
        still exact."""
        self._redraw(15)

    def test_downward_scroll(self) -> None:
        self._redraw(-9)

    def test_what_goes_with_a_scroll(self) -> None:
        """A small change elsewhere rides along as a rect; one overlapping the
        scrolled box (compared against rows it had already changed) sends the
        frame to the encoder; a scroll with too many new rows too."""
        picture = to_yuv(_image(_text_rows(H, W, seed=7)), W, H)
        box = Rect(0, 0, 200, 200)
        scroll = Scroll(Rect(0, 0, 200, 180), 20)
        frame = as_tiles(picture, (box, Rect(260, 10, 20, 20)), scroll, 5, (W, H))
        assert frame is not None
        message = parse_tiles(frame.data, W, H)
        self.assertEqual(len(message.copies), 1)
        self.assertIn(Rect(260, 10, 20, 20), message.rects)
        self.assertIsNone(as_tiles(picture, (box, Rect(190, 10, 20, 20)), scroll, 5, (W, H)))
        tall = Rect(0, 0, 320, 240)
        few = Scroll(Rect(0, 0, 320, 32), 20)
        self.assertIsNone(as_tiles(picture, (tall,), few, 5, (W, H)))


@requires("Xvfb", "display")
class ScrollOnXvfbTests(unittest.TestCase):
    def setUp(self) -> None:
        self.display = shared_desktop(seed=29)

    @defer.inlineCallbacks
    def test_scrolled_window_goes_as_a_copy(self) -> Any:
        """A 600x400 window of 'text' scrolled up by 17 pixels (XCopyArea, as
        toolkits scroll) and a new line drawn: one tile message carrying a copy
        and a few rows, far smaller than the window, and the viewer's picture
        is the screen (from the grab of the same moment)."""
        from PIL import Image

        from litedesk.screen import Capturer

        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(reactor, sent.append, lambda: 0, display=self.display, tiles=True)
        win = _Window(self.display, 300, 200, 600, 400)
        self.addCleanup(win.close)
        rng = random.Random(5)
        for y in range(0, 400, 17):
            for _ in range(40):
                win.fill(rng.randrange(590), y + rng.randrange(12), 6, 2, rng.randrange(1 << 24))
        streamer.start()
        self.addCleanup(streamer.stop)
        yield until(lambda: len(sent) >= 1 and streamer.idle)
        # A button elsewhere changes colour in the same moment (a click's
        # effect while text scrolls): it rides along as pixels.
        button = _Window(self.display, 1300, 100, 80, 40)
        self.addCleanup(button.close)
        yield until(lambda: streamer.idle and not streamer._damage.pending())  # type: ignore[union-attr]
        frames = len(sent)
        button.fill(0, 0, 80, 40, 0x2060C0)
        win.window.copy_area(win.gc, win.window, 0, 17, 600, 383, 0, 0)
        win.fill(0, 383, 600, 17, 0xFFFFFF)
        for _ in range(40):
            win.fill(rng.randrange(590), 385 + rng.randrange(10), 6, 2, 0x101010)
        yield until(lambda: len(sent) > frames and streamer.idle)
        scrolled = sent[frames:]
        tiles = [f for f in scrolled if f.codec == TILE_CODEC]
        self.assertTrue(tiles, [f.codec for f in scrolled])
        message = parse_tiles(tiles[0].data, 1920, 1080)
        self.assertEqual(len(message.copies), 1)
        self.assertEqual(message.copies[0].source.y - message.copies[0].y, 17)
        if len(tiles) == 1:  # button and scroll in one take (the usual case)
            self.assertTrue(
                any(r.x <= 1300 and r.right >= 1380 and r.y <= 100 for r in message.rects),
                message.rects,
            )
        self.assertLess(sum(len(f.data) for f in scrolled), 30_000)
        # The moved rows are the viewer's previous picture's rows 17 lower, to
        # the byte (a copy, not a re-encoding), and the whole window is the
        # screen as grabbed, as well as the key frame it came from.
        target = message.copies[0].target
        self.assertGreater(target.width, 500)
        self.assertGreater(target.height, 300)
        before, after = _shown(sent[:frames]).picture, _shown(sent).picture
        plane_b, plane_a = before.planes[0], after.planes[0]
        vb, va = memoryview(plane_b), memoryview(plane_a)
        # (Rows a pixel rect covers were written after the copy.)
        redrawn = {y for r in message.rects for y in range(r.y, r.bottom)}
        for y in sorted(set(range(target.y, target.bottom)) - redrawn):
            a = y * plane_a.line_size + target.x
            b = (y + 17) * plane_b.line_size + target.x
            self.assertEqual(bytes(va[a : a + target.width]), bytes(vb[b : b + target.width]), y)
        grab = Capturer(self.display).grab()
        expect = Image.frombuffer("RGB", (1920, 1080), grab.data, "raw", "BGRX")
        shown = _shown(sent).image
        self.assertLess(
            mean_error(expect.crop((300, 200, 900, 600)), shown.crop((300, 200, 900, 600))), 4.0
        )
        # The new line came as pixels: exact but for the colour conversion.
        self.assertLess(
            mean_error(expect.crop((300, 584, 900, 600)), shown.crop((300, 584, 900, 600))), 1.0
        )
