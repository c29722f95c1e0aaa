"""Screen tiles: a small change sent losslessly beside the video.

A typed glyph, a blinking cursor or a button changing colour touches a few
thousand pixels, yet libx264 spends ~5 ms on a 1080p frame whatever changed,
and codes a flat area changing colour as residual (a 160 x 160 square from
red to blue: about 1.25 kB).  VNC sends such changes as rectangles.  A LiteDesk
viewer that says so (C{SupportedDecoding.litedesk_tiles}) gets them the same
way: the changed rectangles of the host's C{yuv420p} picture (the encoder's
own input, L{litedesk.screen.yuv_canvas}), deflated, in
C{VideoFrame.tiles}.  The viewer patches them into a copy of the picture it
shows last; the next video frame codes the same change against the
encoder's reference and replaces the whole picture, so nothing drifts.
The wire format is in docs/protocol.rst, "Screen tiles":

    payload = version (1 byte, 1) | count (1 byte, 1..MAX_TILES)
              | count x (x, y, width, height: 4 x uint16 big-endian)
              | deflate(for each tile: its Y rows, then its U rows, then its V rows)

Every rectangle is on even coordinates with an even size (4:2:0 chroma
covers 2 x 2 pixels), inside the picture, and they do not overlap.
L{parse_tiles} checks all of that and inflates at most the bytes the
rectangles need (a deflate bomb costs nothing); anything else is a
L{TileError}.  Both sides are plain functions: the host calls
L{encode_tiles} on its worker thread, the viewer L{patched} (L{parse_tiles}
and L{apply_tiles}).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import av

from .change import Rect
from .decoded import DecodedFrame

__all__ = [
    "MAX_TILES",
    "TILE_BYTES",
    "TILE_CODEC",
    "TILE_PIXELS",
    "VERSION",
    "TileError",
    "Tiles",
    "apply_tiles",
    "encode_tiles",
    "parse_tiles",
    "patched",
    "tile_candidate",
]

VERSION: Final = 1
#: L{litedesk.screen.codec.EncodedFrame.codec} of a tile message (the
#: C{VideoFrame} union member minus its C{s}, as for the video codecs).
TILE_CODEC: Final = "tile"
#: At most this many rectangles in one message (the damage path merges to
#: fewer; the byte keeps the header small).
MAX_TILES: Final = 64
#: A change covering more pixels than this goes to the encoder: beyond it a
#: deflated picture costs more than the video's few bytes per macroblock.
#: 65,536 is a 256 x 256 square; the click target of bench/session.py (160 x
#: 160) and a line of typed text are well under it.
TILE_PIXELS: Final = 65_536
#: Deflated tiles larger than this go to the encoder instead (photographic
#: content deflates poorly; video codes it in a fraction).
TILE_BYTES: Final = 8_192
# zlib level 6 (the default) was measured against 1 on the session
# benchmark's changes: a glyph's tile 10-20 % smaller for under 0.1 ms.
_LEVEL: Final = 6
_HEAD = struct.Struct("!BB")
_RECT = struct.Struct("!HHHH")


class TileError(ValueError):
    """A tile message that is not well-formed for the picture it patches."""


@dataclass(frozen=True, slots=True)
class Tiles:
    """A parsed tile message: rectangles and their planes, in order."""

    rects: tuple[Rect, ...]
    planes: bytes


def _plane_bytes(r: Rect) -> int:
    """Bytes of one rectangle's Y, U and V planes (4:2:0)."""
    return r.width * r.height + 2 * (r.width // 2) * (r.height // 2)


def tile_candidate(region: Sequence[Rect]) -> bool:
    """Whether a change this size may go as tiles (before deflating it)."""
    if not region or len(region) > MAX_TILES:
        return False
    return sum(r.width * r.height for r in region) <= TILE_PIXELS


def encode_tiles(picture: Any, region: Sequence[Rect]) -> bytes:
    """The tile message for C{region}'s rectangles of a C{yuv420p} picture.

    @param picture: the host's C{av.VideoFrame} (never written to).
    @param region: non-overlapping even-aligned rectangles inside it.
    @raise TileError: a rectangle is odd-aligned, outside the picture or
        too many are given (a bug on the host's side).
    """
    rects = tuple(region)
    _check_rects(rects, picture.width, picture.height)
    head = [_HEAD.pack(VERSION, len(rects))]
    head += [_RECT.pack(r.x, r.y, r.width, r.height) for r in rects]
    deflate = zlib.compressobj(_LEVEL)
    body = [deflate.compress(b"".join(_rect_planes(picture, r))) for r in rects]
    body.append(deflate.flush())
    return b"".join(head + body)


def _rect_planes(picture: Any, r: Rect) -> list[bytes]:
    out: list[bytes] = []
    for p, div in ((0, 1), (1, 2), (2, 2)):
        plane = picture.planes[p]
        view = memoryview(plane)
        stride = plane.line_size
        x, y, w, h = r.x // div, r.y // div, r.width // div, r.height // div
        out += [bytes(view[o : o + w]) for o in range(y * stride + x, (y + h) * stride, stride)]
    return out


def parse_tiles(data: bytes, width: int, height: int) -> Tiles:
    """Check and inflate a tile message for a C{width x height} picture.

    @raise TileError: with the reason, for anything but a well-formed
        message whose rectangles fit the picture.
    """
    if len(data) < _HEAD.size:
        raise TileError("tile message shorter than its header")
    version, count = _HEAD.unpack_from(data)
    if version != VERSION:
        raise TileError(f"tile format {version} is not {VERSION}")
    if not 1 <= count <= MAX_TILES:
        raise TileError(f"{count} tiles (1 to {MAX_TILES} allowed)")
    end = _HEAD.size + count * _RECT.size
    if len(data) < end:
        raise TileError("tile message shorter than its rectangles")
    rects = tuple(Rect(*_RECT.unpack_from(data, _HEAD.size + i * _RECT.size)) for i in range(count))
    _check_rects(rects, width, height)
    need = sum(_plane_bytes(r) for r in rects)
    inflate = zlib.decompressobj()
    try:
        # At most one byte more than the rectangles need: a longer stream
        # is refused without inflating the rest of it.
        planes = inflate.decompress(data[end:], need + 1)
    except zlib.error as e:
        raise TileError(f"tile planes are not deflate data: {e}") from None
    if len(planes) != need or not inflate.eof:
        raise TileError(f"tile planes are not the {need} bytes the rectangles need")
    return Tiles(rects, planes)


def _check_rects(rects: Sequence[Rect], width: int, height: int) -> None:
    if not 1 <= len(rects) <= MAX_TILES:
        raise TileError(f"{len(rects)} tiles (1 to {MAX_TILES} allowed)")
    for i, r in enumerate(rects):
        if (r.x | r.y | r.width | r.height) & 1 or r.width <= 0 or r.height <= 0:
            raise TileError(f"tile {r} is not on even coordinates with an even size")
        if r.right > width or r.bottom > height:
            raise TileError(f"tile {r} is not inside {width}x{height}")
        for other in rects[:i]:
            if (
                r.x < other.right
                and other.x < r.right
                and r.y < other.bottom
                and other.y < r.bottom
            ):
                raise TileError(f"tiles {other} and {r} overlap")


def apply_tiles(picture: Any, tiles: Tiles) -> av.VideoFrame:
    """A copy of a C{yuv420p} picture with C{tiles} written into it.

    The decoder's picture itself is never written: it may be the reference
    of the next video frame.

    @raise TileError: the picture is not C{yuv420p} or too small.
    """
    if picture.format.name != "yuv420p":
        raise TileError(f"tiles patch yuv420p pictures, not {picture.format.name}")
    _check_rects(tiles.rects, picture.width, picture.height)
    out = av.VideoFrame(picture.width, picture.height, "yuv420p")
    for p in range(3):
        _copy_whole(picture.planes[p], out.planes[p])
    src = memoryview(tiles.planes)
    pos = 0
    for r in tiles.rects:
        for p, div in ((0, 1), (1, 2), (2, 2)):
            plane = out.planes[p]
            view = memoryview(plane)
            stride = plane.line_size
            x, y, w, h = r.x // div, r.y // div, r.width // div, r.height // div
            for o in range(y * stride + x, (y + h) * stride, stride):
                view[o : o + w] = src[pos : pos + w]
                pos += w
    out.pts = picture.pts
    return out


def _copy_whole(src: Any, dst: Any) -> None:
    s, d = memoryview(src), memoryview(dst)
    if src.line_size == dst.line_size:
        n = min(len(s), len(d))
        d[:n] = s[:n]
        return
    w = min(src.line_size, dst.line_size)
    for row in range(min(src.height, dst.height)):
        d[row * dst.line_size : row * dst.line_size + w] = s[
            row * src.line_size : row * src.line_size + w
        ]


def patched(shown: DecodedFrame, data: bytes, pts: int) -> DecodedFrame:
    """The picture C{shown} with a tile message written into a copy of it.

    @raise TileError: the message is malformed or does not fit C{shown}.
    """
    picture = shown.picture
    tiles = parse_tiles(data, picture.width, picture.height)
    return DecodedFrame(apply_tiles(picture, tiles), pts, shown.width, shown.height)
