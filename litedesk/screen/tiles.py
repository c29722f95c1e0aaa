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
Scrolled content is moved, not sent: a copy
(L{Copy}) moves a block of the picture the viewer shows, and only the rows
that scrolled in go as pixels.  The wire format is in docs/protocol.rst,
"Screen tiles" (all numbers big-endian):

    payload = version (1 byte, 1)
              | copies (1 byte, 0..MAX_COPIES) | rects (1 byte, 0..MAX_TILES)
              | chroma rects (1 byte, 0..MAX_COPIES)
              | copies x (source x, y, width, height, target x, y: 6 x uint16)
              | rects x (x, y, width, height: 4 x uint16)
              | chroma rects x (x, y, width, height: 4 x uint16)
              | deflate(each rect's Y rows, then its U rows, then its V rows;
                        then each chroma rect's U rows, then its V rows)

The viewer applies the copies first, each reading the picture as it was
before the message, then the chroma rects, then the rects.  A copy moves
the Y plane; it moves U and V too when all six numbers are even (4:2:0
chroma covers 2 x 2 pixels).  Otherwise the host sends the destination's
chroma as a chroma rect.  Rects and chroma rects are on even coordinates
with even sizes, inside the picture, and do not overlap others of their
kind.  L{parse_tiles} checks all of that and inflates at most the bytes the
rectangles need (a deflate bomb costs nothing); anything else is a
L{TileError}.  The host calls L{encode_tiles} on its worker thread; the
viewer's side is L{litedesk.screen.tile_patch}.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .change import Rect

__all__ = [
    "MAX_COPIES",
    "MAX_TILES",
    "TILE_BYTES",
    "TILE_CODEC",
    "TILE_PIXELS",
    "VERSION",
    "Copy",
    "TileError",
    "Tiles",
    "encode_tiles",
    "parse_tiles",
    "plane_rows",
    "tile_candidate",
]

VERSION: Final = 1
#: L{litedesk.screen.codec.EncodedFrame.codec} of a tile message (the
#: C{VideoFrame} union member minus its C{s}, as for the video codecs).
TILE_CODEC: Final = "tile"
#: At most this many rectangles in one message (the damage path merges to
#: fewer; the byte keeps the header small).
MAX_TILES: Final = 64
#: At most this many copies, and as many chroma rects, in one message.
MAX_COPIES: Final = 4
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
_HEAD = struct.Struct("!BBBB")
_RECT = struct.Struct("!HHHH")
_COPY = struct.Struct("!HHHHHH")


class TileError(ValueError):
    """A tile message that is not well-formed for the picture it patches."""


@dataclass(frozen=True, slots=True)
class Copy:
    """Move C{source}'s pixels so that its corner lands at C{(x, y)}."""

    source: Rect
    x: int
    y: int

    @property
    def target(self) -> Rect:
        return Rect(self.x, self.y, self.source.width, self.source.height)

    @property
    def with_chroma(self) -> bool:
        """Whether U and V move too: everything on even pixels."""
        s = self.source
        return not (s.x | s.y | s.width | s.height | self.x | self.y) & 1


@dataclass(frozen=True, slots=True)
class Tiles:
    """A parsed tile message; C{planes} holds the rects' then the chroma rects' bytes."""

    rects: tuple[Rect, ...]
    planes: bytes
    copies: tuple[Copy, ...] = ()
    chroma: tuple[Rect, ...] = ()


def _plane_bytes(r: Rect) -> int:
    """Bytes of one rectangle's Y, U and V planes (4:2:0)."""
    return r.width * r.height + _chroma_bytes(r)


def _chroma_bytes(r: Rect) -> int:
    return 2 * (r.width // 2) * (r.height // 2)


def tile_candidate(region: Sequence[Rect]) -> bool:
    """Whether a change this size may go as tiles (before deflating it)."""
    if not region or len(region) > MAX_TILES:
        return False
    return sum(r.width * r.height for r in region) <= TILE_PIXELS


def encode_tiles(
    picture: Any,
    region: Sequence[Rect],
    copies: Sequence[Copy] = (),
    chroma: Sequence[Rect] = (),
) -> bytes:
    """The tile message for C{region}'s rectangles of a C{yuv420p} picture,
    after C{copies} and C{chroma} rects.

    @param picture: the host's C{av.VideoFrame} (never written to).
    @param region: non-overlapping even-aligned rectangles inside it.
    @raise TileError: a rectangle is odd-aligned, outside the picture,
        overlapping or too many are given (a bug on the host's side).
    """
    rects, moves, colour = tuple(region), tuple(copies), tuple(chroma)
    _check(rects, moves, colour, picture.width, picture.height)
    head = [_HEAD.pack(VERSION, len(moves), len(rects), len(colour))]
    head += [
        _COPY.pack(c.source.x, c.source.y, c.source.width, c.source.height, c.x, c.y) for c in moves
    ]
    head += [_RECT.pack(r.x, r.y, r.width, r.height) for r in rects + colour]
    deflate = zlib.compressobj(_LEVEL)
    body = [deflate.compress(b"".join(_rect_planes(picture, r, (0, 1, 2)))) for r in rects]
    body += [deflate.compress(b"".join(_rect_planes(picture, r, (1, 2)))) for r in colour]
    body.append(deflate.flush())
    return b"".join(head + body)


def plane_rows(plane: Any, r: Rect, p: int) -> tuple[range, int]:
    """Where C{r}'s rows start in plane C{p} (0 Y, 1 U, 2 V), and their length."""
    div = 2 if p else 1
    stride = plane.line_size
    x, y, w, h = r.x // div, r.y // div, r.width // div, r.height // div
    return range(y * stride + x, (y + h) * stride, stride), w


def _rect_planes(picture: Any, r: Rect, planes: tuple[int, ...]) -> list[bytes]:
    out: list[bytes] = []
    for p in planes:
        plane = picture.planes[p]
        view = memoryview(plane)
        starts, w = plane_rows(plane, r, p)
        out += [bytes(view[o : o + w]) for o in starts]
    return out


def parse_tiles(data: bytes, width: int, height: int) -> Tiles:
    """Check and inflate a tile message for a C{width x height} picture.

    @raise TileError: with the reason, for anything but a well-formed
        message whose rectangles fit the picture.
    """
    if len(data) < _HEAD.size:
        raise TileError("tile message shorter than its header")
    version, ncopies, nrects, nchroma = _HEAD.unpack_from(data)
    if version != VERSION:
        raise TileError(f"tile format {version} is not {VERSION}")
    pos = _HEAD.size
    end = pos + ncopies * _COPY.size + (nrects + nchroma) * _RECT.size
    if len(data) < end:
        raise TileError("tile message shorter than its rectangles")
    copies = []
    for _ in range(ncopies):
        sx, sy, w, h, x, y = _COPY.unpack_from(data, pos)
        copies.append(Copy(Rect(sx, sy, w, h), x, y))
        pos += _COPY.size
    boxes = []
    for _ in range(nrects + nchroma):
        boxes.append(Rect(*_RECT.unpack_from(data, pos)))
        pos += _RECT.size
    rects, chroma = tuple(boxes[:nrects]), tuple(boxes[nrects:])
    _check(rects, tuple(copies), chroma, width, height)
    need = sum(_plane_bytes(r) for r in rects) + sum(_chroma_bytes(r) for r in chroma)
    inflate = zlib.decompressobj()
    try:
        # At most one byte more than the rectangles need: a longer stream
        # is refused without inflating the rest of it.
        planes = inflate.decompress(data[end:], need + 1)
    except zlib.error as e:
        raise TileError(f"tile planes are not deflate data: {e}") from None
    if len(planes) != need or not inflate.eof:
        raise TileError(f"tile planes are not the {need} bytes the rectangles need")
    return Tiles(rects, planes, tuple(copies), chroma)


def _check(
    rects: Sequence[Rect],
    copies: Sequence[Copy],
    chroma: Sequence[Rect],
    width: int,
    height: int,
) -> None:
    if not rects and not copies and not chroma:
        raise TileError("a tile message with nothing in it")
    if len(rects) > MAX_TILES:
        raise TileError(f"{len(rects)} tiles (at most {MAX_TILES} allowed)")
    if len(copies) > MAX_COPIES or len(chroma) > MAX_COPIES:
        raise TileError(f"{len(copies)} copies, {len(chroma)} chroma rects (at most {MAX_COPIES})")
    for c in copies:
        for r in (c.source, c.target):
            if r.width <= 0 or r.height <= 0 or r.right > width or r.bottom > height:
                raise TileError(f"copy {c.source} -> ({c.x}, {c.y}) is not inside {width}x{height}")
    _check_rects(rects, width, height)
    _check_rects(chroma, width, height)


def _check_rects(rects: Sequence[Rect], width: int, height: int) -> None:
    for i, r in enumerate(rects):
        if (r.x | r.y | r.width | r.height) & 1 or r.width <= 0 or r.height <= 0:
            raise TileError(f"tile {r} is not on even coordinates with an even size")
        if r.right > width or r.bottom > height:
            raise TileError(f"tile {r} is not inside {width}x{height}")
        for other in rects[:i]:
            if r.overlaps(other):
                raise TileError(f"tiles {other} and {r} overlap")
