"""The viewer's side of screen tiles: patching a message into the picture shown.

L{patched} checks a tile message against the picture the viewer shows
(L{litedesk.screen.tiles.parse_tiles}) and writes it into a copy: the
decoder's picture is never written, as it may be the reference of the next
video frame.  Copies read the picture as it was before the message, then
chroma rects and rects are written (docs/protocol.rst, "Screen tiles").
"""

from __future__ import annotations

from typing import Any

import av

from .change import Rect
from .decoded import DecodedFrame
from .tiles import TileError, Tiles, parse_tiles, plane_rows
from .yuv_canvas import copy_block

__all__ = ["apply_tiles", "patched"]


def apply_tiles(picture: Any, tiles: Tiles) -> av.VideoFrame:
    """A copy of a C{yuv420p} picture with C{tiles} written into it.

    @raise TileError: the picture is not C{yuv420p}.
    """
    if picture.format.name != "yuv420p":
        raise TileError(f"tiles patch yuv420p pictures, not {picture.format.name}")
    out = av.VideoFrame(picture.width, picture.height, "yuv420p")
    for p in range(3):
        plane = out.planes[p]
        copy_block(picture.planes[p], plane, Rect(0, 0, plane.width, plane.height), 0, 0)
    for c in tiles.copies:
        for p in (0, 1, 2) if c.with_chroma else (0,):
            div = 2 if p else 1
            s = c.source
            block = Rect(s.x // div, s.y // div, s.width // div, s.height // div)
            copy_block(picture.planes[p], out.planes[p], block, c.x // div, c.y // div)
    src = memoryview(tiles.planes)
    pos = 0
    for r, planes in [(r, (0, 1, 2)) for r in tiles.rects] + [(r, (1, 2)) for r in tiles.chroma]:
        for p in planes:
            plane = out.planes[p]
            view = memoryview(plane)
            starts, w = plane_rows(plane, r, p)
            for o in starts:
                view[o : o + w] = src[pos : pos + w]
                pos += w
    out.pts = picture.pts
    return out


def patched(shown: DecodedFrame, data: bytes, pts: int) -> DecodedFrame:
    """The picture C{shown} with a tile message written into a copy of it.

    @raise TileError: the message is malformed or does not fit C{shown}.
    """
    picture = shown.picture
    tiles = parse_tiles(data, picture.width, picture.height)
    return DecodedFrame(apply_tiles(picture, tiles), pts, shown.width, shown.height)
