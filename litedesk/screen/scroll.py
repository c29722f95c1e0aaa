"""Scrolled content: find the rows that moved, so a tile copy moves them.

Text scrolling by a line changes every pixel of a window, and libx264 at
C{ultrafast} codes it at its quantizer cap (bench/session.py's scrolling:
1.1-1.4 Mb/s at 24 frames/s).  VNC's answer is CopyRect.  L{find_scroll}
compares a changed box before and after: a few distinctive rows of the new
content are looked up among the old rows to guess a vertical offset, and
the offset is then checked row by row with C{memcmp}; the longest run of
rows that match is what moved.  The host sends that run as a
L{litedesk.screen.tiles.Copy} and only the rows around it as pixels.
Nothing is guessed on trust: every row of the run was compared.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Final

from .change import Pixels, Rect, address_of, memcmp

__all__ = ["MIN_ROWS", "Scroll", "find_scroll"]

#: A box shorter than this, or a run of matching rows shorter than this, is
#: not worth a copy (a few rows of pixels cost less to send as they are).
MIN_ROWS: Final = 32
# Rows of the new content looked up among the old ones to guess the offset:
# up to three times this many, until _AGREE of them agree.
_PROBES: Final = 12
_AGREE: Final = 3
_GOLDEN: Final = 0.6180339887
# The bytes of a row used as its lookup key (from the box's middle): enough
# to tell lines of text apart, cheap to slice and hash for 600 rows (every
# old row is keyed, so this is most of the search's cost when nothing
# scrolled: 1024 bytes cost a window moving over the desktop 0.7-0.9 ms a
# frame).
_KEY: Final = 256


@dataclass(frozen=True, slots=True)
class Scroll:
    """Rows C{rows} of the box now show what was C{dy} rows lower before.

    @ivar rows: the destination run, full width of the changed box, in the
        coordinates the box was given in.
    @ivar dy: source row minus destination row (positive: content moved up).
    """

    rows: Rect
    dy: int

    @property
    def source(self) -> Rect:
        return Rect(self.rows.x, self.rows.y + self.dy, self.rows.width, self.rows.height)


def find_scroll(
    old: Pixels,
    new: Pixels,
    stride: int,
    box: Rect,
    bpp: int = 4,
) -> Scroll | None:
    """The rows of C{box} that moved vertically between C{old} and C{new}.

    @param old: the image before, C{stride} bytes a row (the same layout as
        C{new}); C{box} lies inside both.
    @return: the longest run of at least L{MIN_ROWS} rows of C{new} that equal
        rows of C{old} at one offset, or C{None}.
    """
    if box.height < 2 * MIN_ROWS or len(old) != len(new):
        return None
    dy = _guess(old, new, stride, box, bpp)
    if dy is None:
        return None
    first, length = _longest_run(old, new, stride, box, bpp, dy)
    if length < MIN_ROWS:
        return None
    return Scroll(Rect(box.x, first, box.width, length), dy)


def _key_span(box: Rect, bpp: int) -> tuple[int, int]:
    width = min(box.width * bpp, _KEY)
    left = box.x * bpp + (box.width * bpp - width) // 2
    left -= left % bpp
    return left, width


def _guess(
    old: Pixels,
    new: Pixels,
    stride: int,
    box: Rect,
    bpp: int,
) -> int | None:
    """The offset most distinctive rows agree on, or C{None}."""
    left, width = _key_span(box, bpp)
    rows: dict[bytes, list[int]] = {}
    for y in range(box.y, box.bottom):
        o = y * stride + left
        rows.setdefault(bytes(old[o : o + width]), []).append(y)
    votes: Counter[int] = Counter()
    # Probe rows spread by the golden ratio, not evenly: even spacing can
    # fall in step with the line pitch and hit only the gaps between lines.
    for k in range(1, 3 * _PROBES + 1):
        y = box.y + int(box.height * ((k * _GOLDEN) % 1.0))
        o = y * stride + left
        key = bytes(new[o : o + width])
        seen = rows.get(key)
        # A blank row (or any row repeated) says nothing about the offset.
        if seen is None or len(seen) > 2 or key.count(key[:bpp]) * bpp == width:
            continue
        for source in seen:
            if source != y:
                votes[source - y] += 1
        if votes and votes.most_common(1)[0][1] >= _AGREE:
            break
        if k >= _PROBES and not votes:
            break  # a window moving sideways, new content: nothing to find
    if not votes:
        return None
    dy, count = votes.most_common(1)[0]
    return dy if count >= 2 else None


def _longest_run(
    old: Pixels,
    new: Pixels,
    stride: int,
    box: Rect,
    bpp: int,
    dy: int,
) -> tuple[int, int]:
    """The longest run of rows C{y} of C{box} with C{new[y] == old[y + dy]}."""
    po, pn = address_of(old), address_of(new)
    n = box.width * bpp
    left = box.x * bpp
    best = (box.y, 0)
    start = None
    top, bottom = max(box.y, box.y - dy), min(box.bottom, box.bottom - dy)
    for y in range(top, bottom + 1):
        same = y < bottom and memcmp(pn + y * stride + left, po + (y + dy) * stride + left, n) == 0
        if same and start is None:
            start = y
        elif not same and start is not None:
            if y - start > best[1]:
                best = (start, y - start)
            start = None
    return best
