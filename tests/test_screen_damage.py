"""The damage path of the screen pipeline: X DAMAGE, rectangle grabs, in-place conversion.

Covers the pure rectangle helpers of L{litedesk.screen.damage} (with
hypothesis: whatever the X server reports, the merged rectangles cover it,
stay inside the monitor and are bounded in number), L{YuvCanvas} (a
rectangle converted in place gives the same picture as converting the whole
changed screen), and, on a real Xvfb, L{DamageWatcher} and the streamer:
what gets grabbed and encoded is the drawn rectangle and not the screen, an
idle display produces no frames and no frame slots, and the decoded picture
shows what was drawn.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from twisted.internet import defer, reactor
from twisted.trial import unittest

from litedesk.screen import Capturer, EncodedFrame, ScreenStreamer, VideoDecoder
from litedesk.screen.change import Rect
from litedesk.screen.damage import (
    MAX_RECTS,
    DamageUnavailable,
    DamageWatcher,
    align_rect,
    clip_rect,
    merge_rects,
)
from litedesk.screen.damage_frames import DamagePath
from litedesk.screen.testpattern import desktop_image, image_to_bgra
from litedesk.screen.yuv_canvas import YuvCanvas
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import set_root_image, shared_xvfb

W, H = 1920, 1080


def _covers(rects: list[Rect], r: Rect) -> bool:
    """Whether every pixel of C{r} lies in some rectangle of C{rects} (by rows)."""
    for y in range(r.y, r.bottom):
        spans = sorted((q.x, q.right) for q in rects if q.y <= y < q.bottom)
        x = r.x
        for left, right in spans:
            if left <= x < right:
                x = right
        if x < r.right:
            return False
    return True


rect_st = st.builds(
    Rect,
    st.integers(-100, W + 50),
    st.integers(-100, H + 50),
    st.integers(0, 700),
    st.integers(0, 500),
)


class RectHelperTests(unittest.TestCase):
    def test_clip_translates_to_the_monitor(self) -> None:
        """Damage on a second monitor at x=1920 lands in its own coordinates; damage
        elsewhere is dropped."""
        mon = Rect(1920, 0, 1280, 1024)
        self.assertEqual(clip_rect(Rect(1900, 10, 40, 5), mon), Rect(0, 10, 20, 5))
        self.assertIsNone(clip_rect(Rect(0, 0, 1920, 1080), mon))

    def test_align_grows_to_even_pixels_inside_the_frame(self) -> None:
        """4:2:0 needs pairs: an odd rectangle grows by at most a pixel each side."""
        self.assertEqual(align_rect(Rect(5, 7, 3, 3), W, H), Rect(4, 6, 4, 4))
        self.assertEqual(align_rect(Rect(1917, 1077, 3, 3), W, H), Rect(1916, 1076, 4, 4))

    def test_nearby_rectangles_merge_distant_ones_stay_apart(self) -> None:
        """Two glyphs side by side become one grab; a clock in the far corner stays
        its own grab instead of making the whole screen one rectangle."""
        merged = merge_rects(
            [Rect(100, 100, 8, 16), Rect(108, 100, 8, 16), Rect(1800, 1050, 60, 20)]
        )
        self.assertEqual(merged, [Rect(100, 100, 16, 16), Rect(1800, 1050, 60, 20)])

    def test_many_rectangles_stay_apart_on_the_grid(self) -> None:
        """Hundreds of small reports (text redrawn glyph by glyph) in one window
        and a clock in the far corner: two grabs, not the screen's bounding box."""
        glyphs = [Rect(100 + 9 * i, 100 + 20 * j, 8, 16) for i in range(30) for j in range(10)]
        merged = merge_rects([*glyphs, Rect(1800, 1050, 60, 20)], bounds=Rect(0, 0, W, H))
        self.assertEqual(len(merged), 2, merged)
        self.assertTrue(all(_covers(merged, g) for g in glyphs[::37]))
        self.assertLess(sum(r.width * r.height for r in merged), 2 * 448 * 320)

    @given(st.lists(rect_st, max_size=3 * MAX_RECTS))
    @settings(max_examples=150, deadline=None)
    def test_merged_damage_covers_the_reports_within_the_monitor(self, rects: list[Rect]) -> None:
        """Whatever rectangles the X server reports (off-screen, empty, overlapping,
        hundreds), the grabs cover every damaged on-screen pixel, are even-aligned
        inside the monitor, and there are at most MAX_RECTS of them."""
        mon = Rect(0, 0, W, H)
        clipped = [c for r in rects if (c := clip_rect(r, mon)) is not None]
        merged = merge_rects((align_rect(c, W, H) for c in clipped), bounds=mon)
        self.assertLessEqual(len(merged), MAX_RECTS)
        for m in merged:
            self.assertTrue(m.x >= 0 and m.y >= 0 and m.right <= W and m.bottom <= H, m)
            self.assertFalse((m.x | m.y | m.width | m.height) & 1, m)
        for c in clipped[:8]:  # the row walk is slow; a sample is enough
            self.assertTrue(_covers(merged, c), (c, merged))


class CanvasTests(unittest.TestCase):
    def test_painted_rectangle_equals_whole_conversion(self) -> None:
        """Converting only the changed rectangle gives the picture (Y, U and V planes)
        that converting the whole changed screen gives: what the viewer sees does
        not depend on which path ran."""
        w, h = 640, 360
        before = desktop_image(w, h, seed=3)
        after = before.copy()
        ImageDraw.Draw(after).rectangle([101, 51, 330, 200], fill=(200, 30, 90))
        ImageDraw.Draw(after).text((110, 60), "changed", fill=(255, 255, 255))
        canvas = YuvCanvas()
        canvas.fill(image_to_bgra(before), w, h)
        rect = align_rect(Rect(101, 51, 230, 150), w, h)
        canvas.paint(rect, image_to_bgra(after.crop((rect.x, rect.y, rect.right, rect.bottom))))
        whole = YuvCanvas()
        whole.fill(image_to_bgra(after), w, h)
        assert canvas.frame is not None and whole.frame is not None
        for mine, theirs in zip(canvas.frame.planes, whole.frame.planes, strict=True):
            self.assertEqual(bytes(mine), bytes(theirs))
        self.assertEqual(canvas.painted, w * h + rect.width * rect.height)

    @settings(max_examples=40, deadline=None)
    @given(
        st.integers(0, 99).map(lambda v: v * 2),
        st.integers(0, 59).map(lambda v: v * 2),
        st.integers(1, 60).map(lambda v: v * 2),
        st.integers(1, 40).map(lambda v: v * 2),
    )
    def test_painting_from_the_whole_grab_equals_painting_the_cut_out(
        self, x: int, y: int, w: int, h: int
    ) -> None:
        """The damage path converts a box read in place from the monitor's grab
        (any position and size, any stride): the planes are those of converting
        the box's pixels cut out first."""
        width, height = 320, 200
        w, h = min(w, width - x), min(h, height - y)
        after = image_to_bgra(desktop_image(width, height, seed=9))
        rect = Rect(x, y, w, h)
        cut = b"".join(
            after[(y + r) * width * 4 + x * 4 : (y + r) * width * 4 + (x + w) * 4] for r in range(h)
        )
        mine, theirs = YuvCanvas(), YuvCanvas()
        for canvas in (mine, theirs):
            canvas.fill(bytes(width * height * 4), width, height)
        mine.paint_from(rect, after, width * 4, x, y)
        theirs.paint(rect, cut)
        assert mine.frame is not None and theirs.frame is not None
        for a, b in zip(mine.frame.planes, theirs.frame.planes, strict=True):
            self.assertEqual(bytes(a), bytes(b))
        self.assertRaises(ValueError, mine.paint_from, rect, after, width * 4, width - w + 2, y)

    def test_box_converts_in_place_without_touching_its_neighbours(self) -> None:
        """libswscale, called directly here, converts the box where the grab
        holds it; it writes rows in blocks of 16 pixels, past a 232-pixel
        box, yet every pixel outside the box keeps the picture it had."""
        width, height = 640, 360
        before = image_to_bgra(desktop_image(width, height, seed=4))
        after = bytes(255 - b for b in before)
        canvas, expect = YuvCanvas(), YuvCanvas()
        self.assertIsNotNone(canvas._direct)
        canvas.fill(before, width, height)
        rect = Rect(100, 50, 232, 152)
        canvas.paint_from(rect, after, width * 4, rect.x, rect.y)
        mixed = bytearray(before)
        for row in range(rect.y, rect.bottom):
            o = (row * width + rect.x) * 4
            mixed[o : o + rect.width * 4] = after[o : o + rect.width * 4]
        expect.fill(bytes(mixed), width, height)
        assert canvas.frame is not None and expect.frame is not None
        for a, b in zip(canvas.frame.planes, expect.frame.planes, strict=True):
            self.assertEqual(bytes(a), bytes(b))

    def test_bad_rectangles_are_refused(self) -> None:
        """An odd, outside or wrongly sized rectangle raises instead of writing
        past a plane."""
        canvas = YuvCanvas()
        self.assertRaises(ValueError, canvas.paint, Rect(0, 0, 2, 2), bytes(16))
        canvas.fill(bytes(64 * 32 * 4), 64, 32)
        self.assertRaises(ValueError, canvas.paint, Rect(1, 0, 2, 2), bytes(16))
        self.assertRaises(ValueError, canvas.paint, Rect(62, 30, 4, 4), bytes(64))
        self.assertRaises(ValueError, canvas.paint, Rect(0, 0, 2, 2), bytes(15))


class _Window:
    """An override-redirect window on the display, drawn with plain X requests."""

    def __init__(self, display: str, x: int, y: int, w: int, h: int) -> None:
        from Xlib import X
        from Xlib import display as xdisplay

        self.conn: Any = xdisplay.Display(display)
        screen = self.conn.screen()
        self.window = screen.root.create_window(
            x, y, w, h, 0, screen.root_depth,
            background_pixel=screen.white_pixel,
            override_redirect=True,
            event_mask=X.ExposureMask,
        )  # fmt: skip
        self.gc = self.window.create_gc(foreground=screen.black_pixel)
        self.window.map()
        self.conn.sync()

    def fill(self, x: int, y: int, w: int, h: int, rgb: int) -> None:
        self.gc.change(foreground=rgb)
        self.window.fill_rectangle(self.gc, x, y, w, h)
        self.conn.sync()

    def close(self) -> None:
        self.window.destroy()
        self.conn.sync()
        self.conn.close()


def damage_rig(
    case: unittest.TestCase,
    display: str,
    window: tuple[int, int, int, int],
    on_damage: Any = lambda: None,
) -> tuple[DamagePath, Capturer, _Window]:
    """A started damage path, a capturer and a window C{(x, y, w, h)} on
    C{display}, all cleaned up after C{case}."""
    path = DamagePath(display, on_damage)
    path.start()
    case.addCleanup(path.stop)
    cap = Capturer(display)
    case.addCleanup(cap.close)
    win = _Window(display, *window)
    case.addCleanup(win.close)
    return path, cap, win


@requires("Xvfb", "display")
class DamageOnXvfbTests(unittest.TestCase):
    def setUp(self) -> None:
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        self.display = xvfb.display
        tmp = tempfile.mkdtemp(prefix="litedesk-damage-")
        path = os.path.join(tmp, "desktop.png")
        self.desktop = desktop_image(W, H, seed=21)
        self.desktop.save(path)
        set_root_image(xvfb, path)

    @defer.inlineCallbacks
    def test_watcher_reports_what_was_drawn(self) -> Any:
        """Drawing into a child window is reported in root coordinates, and a take
        empties the report."""
        arrived: list[int] = []
        hop: Any = reactor
        watcher = DamageWatcher(self.display, lambda: hop.callFromThread(arrived.append, 1))
        watcher.start()
        self.addCleanup(watcher.stop)
        win = _Window(self.display, 300, 200, 200, 100)
        self.addCleanup(win.close)
        yield until(lambda: bool(arrived))
        watcher.take()
        win.fill(10, 20, 30, 40, 0xFF0000)
        yield until(lambda: watcher.pending())
        rects = watcher.take()
        assert rects is not None
        self.assertTrue(_covers(rects, Rect(310, 220, 30, 40)), rects)
        self.assertFalse(watcher.pending())
        self.assertGreaterEqual(watcher.events, 2)

    @defer.inlineCallbacks
    def test_watcher_keeps_up_with_a_burst(self) -> Any:
        """Two thousand drawing requests at once (64 kB of reports, read from the
        socket in pieces that split events): every one is counted (the
        window's own repaint may add one), what is taken covers every drawn
        pixel in root coordinates and nothing off the screen (folded into a
        box once too many wait, so memory stays bounded), and the watcher
        still works afterwards."""
        hop: Any = reactor
        watcher = DamageWatcher(self.display, lambda: hop.callFromThread(lambda: None))
        watcher.start()
        self.addCleanup(watcher.stop)
        win = _Window(self.display, 100, 100, 400, 100)
        self.addCleanup(win.close)
        yield until(lambda: watcher.pending())
        watcher.take()
        base = watcher.events
        for i in range(2000):
            win.window.fill_rectangle(win.gc, i % 400, (i // 400) * 20, 1, 1)
        win.conn.sync()
        seen: list[Rect] = []

        def collected() -> bool:
            seen.extend(watcher.take() or [])
            return watcher.events >= base + 2000 and not watcher.pending()

        yield until(collected)
        self.assertGreaterEqual(watcher.events, base + 2000)
        self.assertLessEqual(watcher.events, base + 2002)
        screen = Rect(0, 0, W, H)
        self.assertTrue(all(clip_rect(r, screen) == r for r in seen), seen[:5])
        for i in range(0, 2000, 7):
            self.assertTrue(_covers(seen, Rect(100 + i % 400, 100 + (i // 400) * 20, 1, 1)), i)
        self.assertFalse(watcher.failed)
        win.fill(0, 0, 10, 10, 0x00FF00)
        yield until(lambda: watcher.pending())

    def test_no_server_raises_unavailable(self) -> None:
        """A display that cannot be opened is DamageUnavailable (the streamer then
        compares frames)."""
        self.assertRaises(DamageUnavailable, DamageWatcher(":4094", lambda: None).start)

    @defer.inlineCallbacks
    def test_streamer_grabs_and_encodes_only_the_damaged_region(self) -> Any:
        """After the first key frame, a small drawing is grabbed and converted as one
        small rectangle around it (not the 1920x1080 screen), sent as one delta
        that decodes to the screen as it is now; the same drawing again is
        damage without change and sends nothing; an idle display produces no
        frame and no frame slot."""
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(reactor, sent.append, lambda: 0, display=self.display)
        win = _Window(self.display, 800, 500, 320, 200)
        self.addCleanup(win.close)
        streamer.start()
        try:
            self.assertTrue(streamer.damage_driven)
            yield until(lambda: len(sent) >= 1 and streamer.idle)
            frames, pixels = len(sent), streamer.stats.captured_pixels
            win.fill(40, 30, 100, 50, 0x2080E0)
            yield until(lambda: len(sent) > frames and streamer.idle)
            region = streamer.stats.last_region
            self.assertTrue(_covers(list(region), Rect(840, 530, 100, 50)), region)
            grabbed = streamer.stats.captured_pixels - pixels
            self.assertLess(grabbed, 2 * 104 * 54, region)
            self.assertFalse(sent[-1].key)
            # Drawn again, the same: damage, but no change and so no frame.
            frames, unchanged = len(sent), streamer.stats.unchanged
            win.fill(40, 30, 100, 50, 0x2080E0)
            yield until(lambda: streamer.stats.unchanged > unchanged and streamer.idle)
            self.assertEqual(len(sent), frames)
            # Idle: nothing drawn, no slot runs and no frame is sent.
            slots, frames = streamer.stats.slots, len(sent)
            yield until(lambda: streamer.idle)
            self.assertEqual((streamer.stats.slots, len(sent)), (slots, frames))
        finally:
            yield streamer.stop()
        dec = VideoDecoder()
        outs = [dec.decode_frame(f) for f in sent]
        last = outs[-1]
        assert last is not None
        expect = Image.frombuffer("RGB", (W, H), Capturer(self.display).grab().data, "raw", "BGRX")
        self.assertLess(mean_error(expect, last.image), 4.0)
        box = (840, 530, 940, 580)
        self.assertLess(mean_error(expect.crop(box), last.image.crop(box)), 8.0)
