"""Change detection between two frames, in pure Python.

The screen pipeline skips frames identical to the last one sent, so an idle
desktop costs no video bandwidth at all.  The comparisons are C{bytes}
slice equality, which CPython does with C{memcmp}: on a 2-core box a whole
1920x1080 BGRA frame compares in 0.3-0.6 ms when nothing changed, and finding
the changed 64x64 tiles costs 3-10 ms when something did (numpy was at most
twice as fast, not worth the dependency).  Slicing a C{memoryview} instead
was more than ten times slower, because each slice comparison then goes
through the buffer protocol element by element.

The search narrows down in steps so that the common cases are cheap:
whole frame, then bands of one tile height, then rows inside a changed band,
then tile-wide slices of a changed row.  The exact bounding box is found with
a few extra comparisons per changed row (binary search for the first and last
differing byte only where it can still move the box).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "BPP",
    "Change",
    "MemCompare",
    "Pixels",
    "Rect",
    "address_of",
    "bounding_box",
    "changed_tiles",
    "check_frame",
    "detect_change",
    "diff_box",
    "memcmp",
]

# Bytes per pixel of mss' BGRA frames.
BPP = 4

#: Frames as grabs hand them over: bytes, mss' bytearray, or a memoryview of
#: shared memory (litedesk.screen.shm_grab).
Pixels = bytes | bytearray | memoryview

_libc = ctypes.CDLL(None)
#: libc's memcmp on addresses (L{address_of}): comparisons in place.
memcmp = _libc.memcmp
memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
memcmp.restype = ctypes.c_int


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in frame pixels; C{x + width} is one past the right edge."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    def overlaps(self, other: Rect) -> bool:
        """Whether the two share a pixel."""
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )

    def holds(self, other: Rect) -> bool:
        """Whether every pixel of C{other} is in this one."""
        return (
            self.x <= other.x
            and self.y <= other.y
            and other.right <= self.right
            and other.bottom <= self.bottom
        )

    def union(self, other: Rect) -> Rect:
        """The smallest rectangle holding both."""
        x = min(self.x, other.x)
        y = min(self.y, other.y)
        return Rect(x, y, max(self.right, other.right) - x, max(self.bottom, other.bottom) - y)


def bounding_box(rects: Sequence[Rect]) -> Rect:
    """The smallest rectangle holding all of C{rects} (at least one)."""
    box = rects[0]
    for r in rects[1:]:
        box = box.union(r)
    return box


@dataclass(frozen=True, slots=True)
class Change:
    """What differs between two frames.

    @ivar changed: C{False} only when the frames are identical.
    @ivar bbox: the exact bounding box of the differing pixels, or C{None}.
    @ivar tiles: the differing tiles (clipped at the frame edges), row-major.
    """

    changed: bool
    bbox: Rect | None = None
    tiles: list[Rect] = field(default_factory=list)


def _first_diff(a: bytes, b: bytes, lo: int, hi: int) -> int:
    """Index of the first differing byte in C{[lo, hi)}; the range must differ."""
    # Invariant: a[start:lo] == b[start:lo] and a[lo:hi] != b[lo:hi].
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _last_diff(a: bytes, b: bytes, lo: int, hi: int) -> int:
    """Index of the last differing byte in C{[lo, hi)}; the range must differ."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[mid:hi] == b[mid:hi]:
            hi = mid
        else:
            lo = mid
    return lo


def check_frame(cur: Pixels, width: int, height: int, bpp: int = BPP) -> None:
    """@raise ValueError: C{cur} is not a frame of C{width x height} pixels."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if len(cur) != width * height * bpp:
        raise ValueError(f"frame is {len(cur)} bytes, expected {width * height * bpp}")


# One flat pass over the frame: a helper call per changed row would cost
# measurable time per frame (bench/screen_pipeline.py), so the loop stays whole.
def _scan(  # noqa: C901
    prev: bytes, cur: bytes, width: int, height: int, tile: int, bpp: int, want_bbox: bool
) -> Change:
    stride = width * bpp
    tile_bytes = tile * bpp
    ncols = (width + tile - 1) // tile
    tiles: list[Rect] = []
    top = bottom = -1
    left, right = width, -1  # pixel columns, right inclusive
    for band_y in range(0, height, tile):
        band_h = min(tile, height - band_y)
        s = band_y * stride
        e = s + band_h * stride
        if prev[s:e] == cur[s:e]:
            continue
        marked = [False] * ncols
        for y in range(band_y, band_y + band_h):
            rs = y * stride
            re = rs + stride
            if prev[rs:re] == cur[rs:re]:
                continue
            if top < 0:
                top = y
            bottom = y
            for c in range(ncols):
                if marked[c]:
                    continue
                ts = rs + c * tile_bytes
                te = min(ts + tile_bytes, re)
                if prev[ts:te] != cur[ts:te]:
                    marked[c] = True
            if want_bbox:
                # Only search where the box can still grow: one comparison
                # per row when this row's changes lie inside the box so far.
                lb = rs + left * bpp
                if left > 0 and prev[rs:lb] != cur[rs:lb]:
                    left = (_first_diff(prev, cur, rs, lb) - rs) // bpp
                elif left == width:
                    left = (_first_diff(prev, cur, rs, re) - rs) // bpp
                rb = rs + (right + 1) * bpp
                if right < 0:
                    right = (_last_diff(prev, cur, rs, re) - rs) // bpp
                elif right < width - 1 and prev[rb:re] != cur[rb:re]:
                    right = (_last_diff(prev, cur, rb, re) - rs) // bpp
        for c in range(ncols):
            if marked[c]:
                x = c * tile
                tiles.append(Rect(x, band_y, min(tile, width - x), band_h))
    if top < 0:
        return Change(False)
    bbox = None
    if want_bbox:
        bbox = Rect(left, top, right - left + 1, bottom - top + 1)
    else:
        bbox = tiles[0]
        for t in tiles[1:]:
            bbox = bbox.union(t)
    return Change(True, bbox, tiles)


def detect_change(
    prev: bytes | None,
    cur: bytes,
    width: int,
    height: int,
    *,
    tile: int = 64,
    bpp: int = BPP,
    exact_bbox: bool = True,
) -> Change:
    """Compare two frames of C{width x height} pixels (C{bpp} bytes each).

    With no previous frame, or one of another size, everything changed.

    @param exact_bbox: find the exact bounding box of the changed pixels;
        with C{False} the box is the union of the changed tiles (a little
        cheaper).
    @raise ValueError: C{cur} does not have the size given.
    """
    check_frame(cur, width, height, bpp)
    if prev is None or len(prev) != len(cur):
        return Change(True, Rect(0, 0, width, height), _all_tiles(width, height, tile))
    if prev == cur:  # the idle-screen fast path: one memcmp
        return Change(False)
    return _scan(prev, cur, width, height, tile, bpp, exact_bbox)


def changed_tiles(
    prev: bytes | None, cur: bytes, width: int, height: int, *, tile: int = 64, bpp: int = BPP
) -> list[Rect]:
    """The C{tile x tile} tiles that differ (clipped at the edges), row-major."""
    return detect_change(prev, cur, width, height, tile=tile, bpp=bpp, exact_bbox=False).tiles


def _all_tiles(width: int, height: int, tile: int) -> list[Rect]:
    return [
        Rect(x, y, min(tile, width - x), min(tile, height - y))
        for y in range(0, height, tile)
        for x in range(0, width, tile)
    ]


def address_of(buf: Pixels) -> int:
    """Where C{buf}'s bytes are (no copy); valid while C{buf} lives.

    A C{memoryview} must be writable and contiguous, as the whole grabs of
    L{litedesk.screen.shm_grab} are (ctypes takes only writable buffers).
    """
    if isinstance(buf, bytes):
        return ctypes.cast(ctypes.c_char_p(buf), ctypes.c_void_p).value or 0
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


class MemCompare:
    """C{memcmp} of two frames' byte ranges through ctypes: no slice copies.

    A C{bytes} slice comparison copies both slices first; on a whole 1080p
    frame the binary searches below copied 16 MB per frame (8.5 ms on the
    moving-window desktop).  A ctypes call costs about 1.7 us whatever the
    length.
    """

    def __init__(self, a: Pixels, b: Pixels) -> None:
        self._a, self._b = a, b  # keep both alive while addresses are used
        self._pa, self._pb = address_of(a), address_of(b)

    def same(self, lo: int, hi: int) -> bool:
        return hi <= lo or memcmp(self._pa + lo, self._pb + lo, hi - lo) == 0

    def first(self, lo: int, hi: int) -> int:
        """First differing byte in C{[lo, hi)}; the range must differ."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.same(lo, mid):
                lo = mid
            else:
                hi = mid
        return lo

    def last(self, lo: int, hi: int) -> int:
        """Last differing byte in C{[lo, hi)}; the range must differ."""
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.same(mid, hi):
                hi = mid
            else:
                lo = mid
        return lo


def diff_box(prev: Pixels, cur: Pixels, width: int, height: int, bpp: int = BPP) -> Rect | None:
    """The exact bounding box of the pixels that differ, or C{None}; no tiles.

    Cheaper than L{detect_change} when only the box is wanted (the damage
    path, after a whole-monitor grab): the first and last differing bytes
    (binary searches over the whole frame) give the top and bottom rows, and
    each row between costs about one comparison (the right of the box so far
    on the row above and the left of it on this row, together) plus a search
    only where the box grows.  All comparisons are
    C{memcmp}s in place (L{MemCompare}).
    """
    check_frame(cur, width, height, bpp)
    if len(prev) != len(cur):
        return Rect(0, 0, width, height)
    cmp = MemCompare(prev, cur)
    if cmp.same(0, len(cur)):
        return None
    stride = width * bpp
    top = cmp.first(0, len(cur)) // stride
    bottom = cmp.last(0, len(cur)) // stride
    left, right = width, -1  # pixel columns, right inclusive
    # Each row's left strip (before the box so far) and right strip (after
    # it) are compared; a window moving over the desktop spans 500 rows, and
    # a ctypes call costs more than its comparison, so the right strip of
    # one row and the left strip of the next, adjacent bytes, are compared
    # in one call, and apart only where that differs.
    unchecked = -1  # a row whose right strip is still to compare
    for y in range(top, bottom + 1):
        rs = y * stride
        if unchecked >= 0:
            after = unchecked * stride + (right + 1) * bpp
            if left > 0 and right < width - 1 and cmp.same(after, rs + left * bpp):
                unchecked = y
                continue
            if not cmp.same(after, rs):
                right = (cmp.last(after, rs) - unchecked * stride) // bpp
        lb = rs + left * bpp
        if left > 0 and not cmp.same(rs, lb):
            left = (cmp.first(rs, lb) - rs) // bpp
        unchecked = y
    rs = unchecked * stride
    after = rs + (right + 1) * bpp
    if not cmp.same(after, rs + stride):
        right = (cmp.last(after, rs + stride) - rs) // bpp
    return Rect(left, top, right - left + 1, bottom - top + 1)
