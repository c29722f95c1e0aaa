"""libvpx's active map: which 16x16 blocks of a VP9 frame changed.

The damage path knows which rectangles of the picture differ from the frame
the encoder was given last (L{litedesk.screen.damage_frames.DamagePath}).
libvpx does not: at speed 9 it still looks at every block of a 1080p frame
to find that most are as they were.  It can be told, with
C{vpx_codec_control(ctx, VP8E_SET_ACTIVEMAP, &map)} (vpx/vp8cx.h): a
C{vpx_active_map_t} of one byte per 16x16 block, row by row, 1 where the
block is active.  The VP9 encoder (vp9/encoder/vp9_encoder.c,
C{vp9_set_active_map} and C{apply_active_map}) puts inactive blocks in a
segment whose blocks are coded as skipped, from the last frame with no
motion, without analysis, and with the loop filter off there, so they decode
to exactly what the viewer already shows.  Chrome Remote Desktop's host
drives libvpx the same way for the same reason.

What libvpx checks and does, and what this module relies on:
  - C{rows} and C{cols} must be the encoder's 16x16 block counts
    (C{(height + 15) // 16} and C{(width + 15) // 16}), or the control
    fails with C{VPX_CODEC_INVALID_PARAM}, as it does for a NULL
    C{vpx_active_map_t *};
  - a map of the right size whose C{active_map} is NULL turns the map off:
    every block is coded as usual (L{ActiveMap.everything});
  - the map stays until it is replaced, and an intra-only frame (a key
    frame) turns it off by itself: the map must be set again for the next
    frame, as L{litedesk.screen.libvpx.DirectVP9} does for every frame.

A block is inactive only when it lies wholly outside every changed
rectangle: rectangles are rounded outward to whole blocks, so a change that
touches one pixel of a block makes the block active.  One buffer per
encoder, filled in place for every frame (no allocation per frame).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import ClassVar

from litedesk.screen.change import Rect

__all__ = ["BLOCK", "VP8E_SET_ACTIVEMAP", "ActiveMap", "VpxActiveMap"]

# vp8e_enc_control_id (vpx/vp8cx.h): VP8E_UPD_ENTROPY = 5, then
# VP8E_UPD_REFERENCE, VP8E_USE_REFERENCE, VP8E_SET_ROI_MAP, VP8E_SET_ACTIVEMAP.
VP8E_SET_ACTIVEMAP = 9
BLOCK = 16  # pixels a side of one map entry


class VpxActiveMap(ctypes.Structure):
    """C{vpx_active_map_t} (vpx/vp8cx.h)."""

    _fields_: ClassVar = [
        ("active_map", ctypes.c_void_p),
        ("rows", ctypes.c_uint),
        ("cols", ctypes.c_uint),
    ]


class ActiveMap:
    """The active map of one encoder's frame size, refilled for every frame.

    @ivar rows: 16x16 block rows (the frame's height rounded up).
    @ivar cols: 16x16 block columns (the frame's width rounded up).
    @ivar changed: the map for the rectangles L{fill} was given last.
    @ivar everything: the map with a NULL C{active_map}: every block active.
    """

    def __init__(self, width: int, height: int) -> None:
        self._size = (width, height)
        self.cols = -(-width // BLOCK)
        self.rows = -(-height // BLOCK)
        n = self.rows * self.cols
        self._blocks = bytearray(n)
        # A ctypes view of the bytearray: libvpx reads the bytes that fill
        # writes, and the export keeps the bytearray from ever moving.
        self._view = (ctypes.c_uint8 * n).from_buffer(self._blocks)
        self._clear = bytes(n)
        self._ones = b"\x01" * self.cols
        self.changed = VpxActiveMap(ctypes.addressof(self._view), self.rows, self.cols)
        self.everything = VpxActiveMap(None, self.rows, self.cols)

    def fill(self, changed: Sequence[Rect]) -> VpxActiveMap:
        """Mark active every block that C{changed} touches, the rest inactive.

        Parts of rectangles outside the frame are ignored.  Returns
        L{changed}, ready for C{VP8E_SET_ACTIVEMAP}.
        """
        blocks, cols, ones = self._blocks, self.cols, self._ones
        width, height = self._size
        blocks[:] = self._clear
        for r in changed:
            # Clipped to the frame, then rounded outward to whole blocks.
            left, top = max(0, r.x), max(0, r.y)
            right, bottom = min(width, r.right), min(height, r.bottom)
            if right <= left or bottom <= top:
                continue  # no pixel of the frame changed
            x0, x1 = left // BLOCK, -(-right // BLOCK)
            run = ones[: x1 - x0]
            for row in range(top // BLOCK, -(-bottom // BLOCK)):
                start = row * cols + x0
                blocks[start : start + len(run)] = run
        return self.changed

    def blocks(self) -> bytes:
        """The map as L{fill} left it, one byte a block, row by row."""
        return bytes(self._blocks)
