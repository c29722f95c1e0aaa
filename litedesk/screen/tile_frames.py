"""The host's side of screen tiles: which changes go as tiles, and how.

L{as_tiles} turns what the damage path found (the changed boxes, and a
scrolled run of rows in one box, L{litedesk.screen.scroll}) into a tile
message (L{litedesk.screen.tiles}), or says C{None} and the encoder runs:

  - a small change: its boxes, as pixels;
  - a scrolled box: one copy for the run of rows that moved, the rows
    around it and any other small change as pixels, and, when the offset is
    odd (4:2:0 chroma cannot move by half a row), the run's chroma as a
    chroma rect.

Either way the message must deflate to L{TILE_BYTES} at most: text deflates
to a few kB a line; a photograph does not, and goes to the encoder.
"""

from __future__ import annotations

from typing import Any

from .change import Rect
from .codec import EncodedFrame
from .damage import align_rect
from .scroll import Scroll
from .tiles import (
    MAX_TILES,
    TILE_BYTES,
    TILE_CODEC,
    TILE_PIXELS,
    Copy,
    TileError,
    encode_tiles,
    tile_candidate,
)

__all__ = ["as_tiles", "scroll_parts"]


def scroll_parts(
    box: Rect, scroll: Scroll, width: int, height: int
) -> tuple[Copy, tuple[Rect, ...], tuple[Rect, ...]]:
    """The copy, pixel rects and chroma rects that redraw C{box} after C{scroll}."""
    rows = scroll.rows
    copy = Copy(scroll.source, rows.x, rows.y)
    pixels = []
    if rows.y > box.y:
        pixels.append(align_rect(Rect(box.x, box.y, box.width, rows.y - box.y), width, height))
    if rows.bottom < box.bottom:
        below = Rect(box.x, rows.bottom, box.width, box.bottom - rows.bottom)
        pixels.append(align_rect(below, width, height))
    chroma = () if copy.with_chroma else (align_rect(copy.target, width, height),)
    return copy, tuple(pixels), chroma


def _holding(region: tuple[Rect, ...], rows: Rect) -> Rect | None:
    """The box of C{region} that holds the scrolled C{rows}."""
    return next((r for r in region if r.holds(rows)), None)


def as_tiles(
    picture: Any,
    region: tuple[Rect, ...],
    scroll: Scroll | None,
    pts: int,
    size: tuple[int, int],
) -> EncodedFrame | None:
    """A change as a tile message, or C{None} for the encoder.

    The encoder is not called: its reference keeps the old pixels, and its
    next frame codes the change again for the viewer's decoder (the tiles
    only patch the picture shown).
    """
    w, h = size
    try:
        box = _holding(region, scroll.rows) if scroll is not None else None
        if scroll is not None and box is not None:
            # The scrolled box, and whatever else changed with it (a click's
            # effect elsewhere) as pixels: sent as video, the click would
            # carry every scroll since the encoder's last frame.
            others = tuple(r for r in region if r is not box)
            if any(r.overlaps(box) for r in others):
                # The scroll was found against rows another rectangle of
                # this frame had already updated; the viewer's copy reads
                # them as they were.
                return None
            copy, pixels, chroma = scroll_parts(box, scroll, w, h)
            pixels += others
            if len(pixels) > MAX_TILES or sum(r.width * r.height for r in pixels) > TILE_PIXELS:
                return None
            data = encode_tiles(picture, pixels, (copy,), chroma)
        elif tile_candidate(region):
            data = encode_tiles(picture, region)
        else:
            return None
    except TileError:  # rectangles that overlap after alignment
        return None
    if len(data) > TILE_BYTES:
        return None
    return EncodedFrame(data, False, pts, TILE_CODEC, w, h)
