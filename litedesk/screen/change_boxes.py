"""The boxes that differ between two frames, apart where far apart.

L{litedesk.screen.change.diff_box} gives one bounding box.  After a whole
grab (the damage path's L{litedesk.screen.damage_frames.DamagePath._full})
that box can be mostly unchanged pixels: a window moving on the left of the
screen and a button clicked on the right make one box across the screen:
bench/session.py's moving window and click target, 0.8-1.9 million pixels
against 0.34 million for the two boxes, and that frame, the one the person
clicking waits for, was converted and encoded at that size.
L{changed_boxes} finds the same changes as up to C{most} boxes side by
side, split where more than C{gap} unchanged columns lie between them.

It scans as diff_box does: the first and last differing bytes give the top
and bottom rows; each row between is compared only outside the boxes found
so far (one C{memcmp} a stretch, in place, L{MemCompare}), and a search for
the first and last differing pixel runs only where a stretch differs.  With
one box that is one call a row (the end of one row and the start of the
next are compared together); a second box adds one a row.  The boxes only
grow and never overlap in columns; each box's bottom is then found by
comparing its columns row by row upwards from the last changed row, which
only a box that ends above the others needs.  Boxes side by side cover
what a box across would leave out only when they are split by columns, so
a change above another in the same columns stays one box; and changes
that begin on the same row, with no box between them yet, are seen by one
comparison and start as one box (a window and a button begin on the same
row only by chance).
"""

from __future__ import annotations

from .change import BPP, MemCompare, Pixels, Rect, check_frame

__all__ = ["MOST", "SPLIT_GAP", "changed_boxes"]

#: Columns of unchanged pixels that keep two boxes apart.  Narrower gaps cost
#: a comparison a row for little area (and a moving text window's white
#: inside leaves gaps between its two edges that later rows fill).
SPLIT_GAP = 256
#: Boxes side by side at most: each adds a comparison a row.
MOST = 2


def changed_boxes(
    prev: Pixels,
    cur: Pixels,
    width: int,
    height: int,
    *,
    gap: int = SPLIT_GAP,
    most: int = MOST,
    bpp: int = BPP,
) -> list[Rect]:
    """The exact boxes of the pixels that differ, left to right; C{[]} if none.

    Every differing pixel is in one box; each box is the bounding box of
    the differences in it; boxes are at least C{gap} columns apart.

    @raise ValueError: C{cur} does not have the size given.
    """
    check_frame(cur, width, height, bpp)
    if len(prev) != len(cur):
        return [Rect(0, 0, width, height)]
    cmp = MemCompare(prev, cur)
    if cmp.same(0, len(cur)):
        return []
    return _Scan(cmp, width, len(cur), gap, most, bpp).boxes()


class _Scan:
    """One search: the boxes so far, each C{[left, right (inclusive), top,
    the last row a difference was put in it]}, sorted by left, apart in
    columns."""

    def __init__(self, cmp: MemCompare, width: int, end: int, gap: int, most: int, bpp: int):
        self.cmp, self.width, self.gap, self.most, self.bpp = cmp, width, gap, most, bpp
        self.stride = width * bpp
        self.top = cmp.first(0, end) // self.stride
        self.bottom = cmp.last(0, end) // self.stride
        self.found: list[list[int]] = []

    def boxes(self) -> list[Rect]:
        self._rows()
        cmp, stride, bpp = self.cmp, self.stride, self.bpp
        out = []
        for left, right, first_row, last_row in self.found:
            a, n = left * bpp, (right - left + 1) * bpp
            low = self.bottom
            while low > last_row and cmp.same(low * stride + a, low * stride + a + n):
                low -= 1
            out.append(Rect(left, first_row, right - left + 1, low - first_row + 1))
        return out

    def _rows(self) -> None:
        cmp, stride, bpp, width, found = self.cmp, self.stride, self.bpp, self.width, self.found
        tail = -1  # the column from which the last row's end is still unchecked
        for y in range(self.top, self.bottom + 1):
            rs = y * stride
            x, i = 0, 0
            if tail >= 0:
                start = found[0][0] if found else width
                if cmp.same(rs - stride + tail * bpp, rs + start * bpp):
                    # The end of the row above and the start of this one agree.
                    x, i = self._after(start)
                else:
                    self._stretch(y - 1, len(found), tail, width)
                tail = -1
            while x < width:
                if i == len(found) and y < self.bottom:
                    tail = x  # compared with the next row's start
                    break
                stop = found[i][0] if i < len(found) else width
                self._stretch(y, i, x, stop)
                x, i = self._after(stop)

    def _after(self, x: int) -> tuple[int, int]:
        """From column x on: the first column not in a box, and the index
        of the box after it."""
        found, i = self.found, 0
        while i < len(found) and found[i][1] < x:
            i += 1
        if i < len(found) and found[i][0] <= x:
            return found[i][1] + 1, i + 1
        return x, i

    def _stretch(self, y: int, i: int, lo: int, hi: int) -> None:
        """Compare columns [lo, hi) of row y (box i to their right) and put
        what differs in a box.  Afterwards every column of the stretch is in
        a box or known to be the same."""
        cmp, bpp = self.cmp, self.bpp
        rs = y * self.stride
        a, b = rs + lo * bpp, rs + hi * bpp
        if hi <= lo or cmp.same(a, b):
            return
        near = self.gap * bpp
        # A box that grows (the common case: a window's edge, row after
        # row) differs next to it: one comparison then spares the search
        # on that side, whose answer the box's columns would cover anyway.
        if i > 0 and not cmp.same(a, min(b, a + near)):
            first, last = lo, (cmp.last(a, b) - rs) // bpp
        elif i < len(self.found) and not cmp.same(max(a, b - near), b):
            first, last = (cmp.first(a, b) - rs) // bpp, hi - 1
        else:
            first, last = (cmp.first(a, b) - rs) // bpp, (cmp.last(a, b) - rs) // bpp
        self._put(i, first, last, y)

    def _put(self, i: int, lo: int, hi: int, y: int) -> None:
        """Differences in columns [lo, hi] of row y, between boxes i-1 and i:
        join a box near enough, or start one."""
        found, gap = self.found, self.gap
        left = found[i - 1] if i > 0 else None
        right = found[i] if i < len(found) else None
        dl = lo - left[1] if left is not None else None
        dr = right[0] - hi if right is not None else None
        near_l = dl is not None and dl <= gap
        near_r = dr is not None and dr <= gap
        if not (near_l or near_r) and len(found) >= self.most:
            # No box to spare: join the nearer one.
            near_l = dr is None or (dl is not None and dl <= dr)
            near_r = not near_l
        if left is not None and near_l and right is not None and near_r:
            left[1], left[2], left[3] = right[1], min(left[2], right[2]), y
            del found[i]
        elif left is not None and near_l:
            left[1], left[3] = hi, y
        elif right is not None and near_r:
            right[0], right[3] = lo, y
        else:
            found.insert(i, [lo, hi, y, y])
