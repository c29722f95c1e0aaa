"""The streamer's damage path: grab only what X DAMAGE reported, convert it in place.

L{DamagePath} ties a L{DamageWatcher} (what changed, in root coordinates)
to a L{YuvCanvas} (the encoder's persistent picture) for one L{Capturer}:
L{DamagePath.picture} takes the damage, clips it to the selected monitor,
merges it into a few even-aligned rectangles, grabs each (an XShm grab of
that rectangle) and converts it into the canvas.  Damage does not mean
change: toolkits repaint what is already there (Tk redraws a whole text line
per keystroke, a blinking cursor's window repaints its background), so a
persistent BGRA copy of the monitor is kept, each grabbed rectangle is
compared with it (L{litedesk.screen.change.diff_box}: C{memcmp}s in place)
and only the box that differs is converted; when none does, no frame is
encoded.  A key frame, a monitor
switch, a size change or a watcher that lost track grabs and converts the
whole monitor instead.  It runs on the streamer's worker thread; only
L{DamagePath.pending} and the watcher's callback cross threads.
"""

from __future__ import annotations

from collections.abc import Callable

import av

from .capture import CaptureError, Capturer, DisplayInfo
from .change import Rect, bounding_box, diff_box
from .change_boxes import changed_boxes
from .damage import DamageWatcher, align_rect, clip_rect, merge_rects
from .scroll import Scroll, find_scroll
from .yuv_canvas import YuvCanvas

__all__ = ["DamagePath", "Picture"]

Picture = tuple["av.VideoFrame | None", tuple[int, int], tuple[Rect, ...]]

# How much a window's changed box may grow or shrink from one frame to the
# next and still count as the same window moved (_slid): its step.
_SLIDE_SLACK = 32


class DamagePath:
    """Frames from damage for one capturer.

    @param on_damage: called from the watcher's thread when damage arrives
        and none was waiting.
    @raise litedesk.screen.damage.DamageUnavailable: from L{start}.
    """

    # When the damage covers this share of the monitor, one whole grab and a
    # search for the box that differs beat grabbing and comparing the pieces
    # (toolkits repaint whole windows on every expose: a window dragged over a
    # full-screen one damages nearly the whole screen, and changes a window).
    FULL_GRAB = 0.3
    # L{unencoded} folds into its bounding box past this many rectangles (a
    # long run of frames sent as tiles must not grow it without bound).
    MAX_UNENCODED = 64

    def __init__(self, display: str | None, on_damage: Callable[[], None]) -> None:
        self.watcher = DamageWatcher(display, on_damage)
        self.canvas = YuvCanvas()
        self._monitor: DisplayInfo | None = None
        # The monitor as last grabbed, BGRA, stride width * 4: the whole
        # grab's buffer as grab_whole hands it over (no copy; only the
        # latest may be kept), rectangles written into it.
        self._bgra: bytearray | memoryview = bytearray()
        #: What the last L{picture} found scrolled in its one changed box
        #: (monitor coordinates), or C{None}.
        self.scroll: Scroll | None = None
        # The one box the last whole grab found changed, if one (_slid).
        self._last_full: Rect | None = None
        # What changed in the canvas since the encoder last took it (frames
        # sent as tiles in between add up), or None: unknown, all of it.
        self._unencoded: list[Rect] | None = None

    def start(self) -> None:
        self.watcher.start()

    def stop(self) -> None:
        self.watcher.stop()

    @property
    def usable(self) -> bool:
        """C{False} once the watcher failed: the streamer compares frames again."""
        return not self.watcher.failed

    def pending(self) -> bool:
        """Whether damage waits (callable from any thread)."""
        return self.watcher.pending()

    def picture(self, source: Capturer, keyframe: bool, scrolls: bool = False) -> Picture:
        """Bring the canvas up to date: C{(frame, size, region)}.

        C{frame} is C{None} when nothing on the selected monitor changed;
        C{region} is what was grabbed, in monitor coordinates.  With
        C{scrolls} (only a viewer that draws tiles can use them; the search
        costs up to a millisecond) changed boxes are searched for scrolled
        rows, found in L{scroll}.  Damage is
        taken before grabbing: whatever is drawn after the take is grabbed
        now or reported again, never lost.

        @raise litedesk.screen.capture.CaptureError: a grab failed.
        """
        mon = source.monitor()
        w, h = mon.width, mon.height
        self.scroll = None
        rects = self.watcher.take()
        canvas = self.canvas
        if keyframe or rects is None or mon != self._monitor or not canvas.fits(w, h):
            self._bgra, mon = source.grab_whole()
            w, h = mon.width, mon.height
            canvas.fill(self._bgra, w, h)
            self._monitor = mon
            self._unencoded = None
            return canvas.frame, (w, h), (Rect(0, 0, w, h),)
        bounds = Rect(mon.x, mon.y, w, h)
        clipped = [c for r in rects if (c := clip_rect(r, bounds)) is not None]
        full = self.FULL_GRAB * w * h
        # One report that big (a toolkit repainting a full-screen window)
        # decides it: no need to merge the others first.
        if any(c.width * c.height >= full for c in clipped):
            region = [Rect(0, 0, w, h)]
        else:
            aligned = (align_rect(c, w, h) for c in clipped)
            region = merge_rects(aligned, bounds=Rect(0, 0, w, h))
        if not region:
            return None, (w, h), ()
        if sum(r.width * r.height for r in region) >= full:
            changed = self._full(source, w, h, scrolls)
        else:
            changed = tuple(
                c for r in region if (c := self._update(r, source.grab_rect(r), w, scrolls))
            )
        if not changed:
            return None, (w, h), ()
        if self._unencoded is not None:
            self._unencoded.extend(changed)
            if len(self._unencoded) > self.MAX_UNENCODED:
                self._unencoded = [bounding_box(self._unencoded)]
        return canvas.frame, (w, h), changed

    @property
    def unencoded(self) -> tuple[Rect, ...] | None:
        """Everything that differs between the canvas now and when the encoder
        last took it (L{encoded}), or C{None} when that is not known."""
        return None if self._unencoded is None else tuple(self._unencoded)

    def encoded(self) -> None:
        """The encoder has taken the canvas as it is now."""
        self._unencoded = []

    def _full(self, source: Capturer, w: int, h: int, scrolls: bool) -> tuple[Rect, ...]:
        """Most of the monitor is damaged: one grab, and the boxes that differ."""
        data, mon = source.grab_whole()
        if (mon.width, mon.height) != (w, h):
            raise CaptureError(f"the monitor is not {w}x{h} any more")
        # Boxes side by side, not one across: a click far from a moving
        # window would otherwise convert and encode the screen between them.
        boxes = tuple(align_rect(b, w, h) for b in changed_boxes(self._bgra, data, w, h))
        for box in boxes:
            self.canvas.paint_from(box, data, w * 4, box.x, box.y)
        if scrolls and len(boxes) == 1 and not _slid(self._last_full, boxes[0]):
            self.scroll = find_scroll(self._bgra, data, w * 4, boxes[0])
        self._last_full = boxes[0] if len(boxes) == 1 else None
        self._bgra = data
        return boxes

    def _update(self, r: Rect, data: bytes | bytearray, width: int, scrolls: bool) -> Rect | None:
        """Keep C{r}'s grab where it differs from what we had: the box that
        differs (even-aligned, converted), or C{None}.

        The box is exact, not the band of rows: Tk redraws a whole line of
        text for one typed glyph, and the viewer's tiles
        (L{litedesk.screen.tiles}) carry the converted box as it is.
        """
        buf = self._bgra
        stride, n = width * 4, r.width * 4
        start = r.y * stride + r.x * 4
        old = b"".join(buf[o : o + n] for o in range(start, start + r.height * stride, stride))
        box = diff_box(old, data, r.width, r.height)
        if box is None:
            return None
        for row in range(box.y, box.bottom):
            o = start + row * stride
            buf[o : o + n] = data[row * n : row * n + n]
        box = align_rect(box, r.width, r.height)
        moved = Rect(r.x + box.x, r.y + box.y, box.width, box.height)
        self.canvas.paint_from(moved, data, n, box.x, box.y)
        if scrolls and (found := find_scroll(old, data, n, box)) is not None:
            rows = found.rows
            self.scroll = Scroll(
                Rect(r.x + rows.x, r.y + rows.y, rows.width, rows.height), found.dy
            )
        return moved


def _slid(before: Rect | None, box: Rect) -> bool:
    """Whether C{box} looks like the last frame's box moved sideways: a
    window dragged across the screen.  Its content moved sideways too,
    which a search for rows moved up or down never finds (0.6 ms a frame
    wasted on bench/session.py's moving window); a scrolled area stays in
    its columns.  The size may differ by the window's step."""
    return (
        before is not None
        and box.x != before.x
        and abs(box.width - before.width) <= _SLIDE_SLACK
        and abs(box.height - before.height) <= _SLIDE_SLACK
    )
