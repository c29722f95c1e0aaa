"""The host's cursor: shape conversion and compression, and L{CursorTracker} on a
real Xvfb (position and shape reported from X events, the pointer moved
through XTest as input injection moves it)."""

from __future__ import annotations

from typing import Any

import zstandard
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.screen.cursor import CursorShape, CursorTracker, argb_to_rgba, shape_colors
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import shared_xvfb


class CursorTests(SynchronousTestCase):
    def test_argb_to_rgba(self) -> None:
        """XFixes ARGB pixels become the RGBA byte order RustDesk viewers draw."""
        self.assertEqual(
            argb_to_rgba([0x80FF0000, 0xFF00FF00], 2, 1),
            bytes([0xFF, 0, 0, 0x80, 0, 0xFF, 0, 0xFF]),
        )

    def test_colors_are_zstd_rgba(self) -> None:
        """CursorData.colors decompresses to width*height*4 RGBA bytes."""
        rgba = bytes(range(256)) * 9  # 24x24x4
        shape = CursorShape(1, 3, 4, 24, 24, rgba[: 24 * 24 * 4])
        colors = shape_colors(shape)
        self.assertLess(len(colors), len(shape.rgba))
        out = zstandard.ZstdDecompressor().decompress(colors, max_output_size=1 << 20)
        self.assertEqual(out, shape.rgba)


@requires("Xvfb")
class CursorTrackerOnXvfbTests(TestCase):
    """The tracker on a real X server: events, not polling."""

    @defer.inlineCallbacks
    def test_reports_moves_and_shape_changes_from_events(self) -> Any:
        """The tracker reports the pointer's position and the cursor's image at
        start, a pointer moved by XTest (as the host's input injection moves
        it) and the new image when the pointer enters a window with another
        cursor, all from X events (no polling on an idle display)."""
        from Xlib import X, Xcursorfont
        from Xlib import display as xdisplay
        from Xlib.ext import xtest

        xvfb = shared_xvfb()
        moves: list[tuple[int, int]] = []
        shapes: list[CursorShape] = []
        tracker = CursorTracker(
            reactor, xvfb.display, lambda x, y: moves.append((x, y)), shapes.append
        )
        tracker.start()
        self.addCleanup(tracker.stop)
        yield until(lambda: bool(moves) and bool(shapes))
        self.assertTrue(tracker.event_driven)
        # A window with a crosshair cursor, away from the pointer.
        conn: Any = xdisplay.Display(xvfb.display)
        self.addCleanup(conn.close)
        screen = conn.screen()
        font = conn.open_font("cursor")
        cross = font.create_glyph_cursor(
            font, Xcursorfont.crosshair, Xcursorfont.crosshair + 1,
            (0, 0, 0), (0xFFFF, 0xFFFF, 0xFFFF),
        )  # fmt: skip
        win = screen.root.create_window(
            600, 400, 200, 200, 0, screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=screen.white_pixel, override_redirect=True, cursor=cross,
        )  # fmt: skip
        win.map()
        conn.sync()
        self.addCleanup(lambda: (win.destroy(), conn.sync()))
        first = shapes[-1]
        # As the host's injector (pynput) moves the pointer: XTest.
        xtest.fake_input(conn, X.MotionNotify, x=700, y=500)
        conn.sync()
        yield until(lambda: bool(moves) and moves[-1] == (700, 500))
        yield until(lambda: shapes[-1].serial != first.serial)
        self.assertNotEqual(shapes[-1].rgba, first.rgba)
        self.assertEqual(tracker.position, (700, 500))
