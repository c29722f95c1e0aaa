"""Cursor shape conversion and compression (the X polling is covered end to end)."""

from __future__ import annotations

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from litedesk.screen.cursor import CursorShape, argb_to_rgba, shape_colors


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
