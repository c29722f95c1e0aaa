"""What changed on the screen, from the X server's DAMAGE extension.

Comparing frames (L{litedesk.screen.change}) needs a grab of the whole
monitor first: at 30 frames/s that alone costs a few per cent of a core on an
idle desktop, and every change then costs a full-frame colour conversion and
encode.  The X server already knows what it drew: a DAMAGE object on the
root window reports every rendering request's rectangle (including those in
child windows, in root coordinates).  L{DamageWatcher} listens for those on
a connection and a thread of its own and accumulates them until the streamer
takes them (L{DamageWatcher.take}); no damage means no capture, no compare
and no encode.

The level is C{DamageReportRawRectangles}, as x11vnc uses it: the server
keeps no damage state for us and sends a rectangle per drawing request, so
nothing can be lost between a take and the next report (the other levels
need a C{DamageSubtract} round trip after each take, and damage drawn into
an area already reported but not yet subtracted is never reported again).
The cost is an event per drawing request, a few hundred a second while text
scrolls; they are parsed on this thread, which sleeps in C{select} when
nothing is drawn.

L{merge_rects} (pure) turns the many small rectangles into the few that are
worth a grab each.
"""

from __future__ import annotations

import os
import select
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from .change import Rect, bounding_box

__all__ = ["DamageUnavailable", "DamageWatcher", "align_rect", "clip_rect", "merge_rects"]

_log = Logger()

# merge_rects' pairwise merging is quadratic: above PAIRWISE_MAX distinct
# rectangles they are first snapped to GRID-pixel tiles; above MAX_RECTS
# after that, their bounding box is one grab.
PAIRWISE_MAX = 24
GRID = 64
MAX_RECTS = 64
# A merge may add this many pixels beyond the two rectangles' areas (one grab
# and one conversion call cost about as much as this many pixels).
MERGE_SLACK = 64 * 64


# DamageNotify (damageproto.h): type, level, sequence, drawable, damage,
# timestamp, then the area (x, y: INT16; width, height: CARD16) and the
# geometry; native byte order (python-xlib's connection setup).
_DAMAGE_NOTIFY = 0
_EVENT = struct.Struct("=B15x2h2H8x")
_GENERIC_EVENT = 35


class DamageUnavailable(Exception):
    """The X server has no DAMAGE extension, or the display cannot be opened."""


def clip_rect(r: Rect, bounds: Rect) -> Rect | None:
    """C{r} inside C{bounds}, relative to C{bounds}' corner; C{None} if outside."""
    x0 = max(r.x, bounds.x)
    y0 = max(r.y, bounds.y)
    x1 = min(r.right, bounds.right)
    y1 = min(r.bottom, bounds.bottom)
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0 - bounds.x, y0 - bounds.y, x1 - x0, y1 - y0)


def _clip_in(r: Rect, bounds: Rect) -> Rect | None:
    """C{r} inside C{bounds}, in the same coordinates."""
    c = clip_rect(r, bounds)
    return None if c is None else Rect(c.x + bounds.x, c.y + bounds.y, c.width, c.height)


def align_rect(r: Rect, width: int, height: int, step: int = 2) -> Rect:
    """Grow C{r} to multiples of C{step} (4:2:0 chroma pairs), within the frame."""
    x0 = r.x - r.x % step
    y0 = r.y - r.y % step
    x1 = min(width, -(-r.right // step) * step)
    y1 = min(height, -(-r.bottom // step) * step)
    return Rect(x0, y0, x1 - x0, y1 - y0)


def _area(r: Rect) -> int:
    return r.width * r.height


def merge_rects(
    rects: Iterable[Rect], slack: int = MERGE_SLACK, bounds: Rect | None = None
) -> list[Rect]:
    """Fewer, larger rectangles covering C{rects}, each worth a grab of its own.

    Two rectangles become their union when it costs at most C{slack} pixels
    more than the two did; repeated until no pair qualifies.  That is
    quadratic, so more than L{PAIRWISE_MAX} distinct inputs are first
    snapped to a grid of L{GRID}-pixel tiles (L{_grid_merge}).  The result
    covers every input pixel, holds at most L{MAX_RECTS} rectangles and is
    sorted top to bottom.

    @param bounds: clip the result to this rectangle (the grid may reach
        past the inputs by less than a tile).
    """
    out = list({r for r in rects if r.width > 0 and r.height > 0})
    if len(out) > PAIRWISE_MAX:
        grid = _grid_merge(out)
        if bounds is not None:
            grid = [c for r in grid if (c := _clip_in(r, bounds)) is not None]
        out = grid
    if len(out) > MAX_RECTS:
        return [bounding_box(out)]
    merged = True
    while merged:  # passes until one merges nothing
        merged = False
        i = 0
        while i < len(out):
            j = i + 1
            while j < len(out):
                u = out[i].union(out[j])
                if _area(u) <= _area(out[i]) + _area(out[j]) + slack:
                    out[i] = u
                    del out[j]
                    merged = True
                else:
                    j += 1
            i += 1
    out.sort(key=lambda r: (r.y, r.x))
    return out


def _grid_merge(rects: list[Rect]) -> list[Rect]:
    """Cover C{rects} with runs of grid tiles: horizontal runs per tile row,
    then runs spanning the same columns in consecutive rows joined.  Linear
    in the tiles covered; distant damage stays apart (a clock in a corner
    does not make the whole screen one grab).  The runs may reach past the
    screen's edge by less than a tile; callers clip."""
    g = GRID
    tiles: set[tuple[int, int]] = set()
    for r in rects:
        for ty in range(r.y // g, (r.bottom - 1) // g + 1):
            for tx in range(r.x // g, (r.right - 1) // g + 1):
                tiles.add((tx, ty))
    runs: dict[int, list[tuple[int, int]]] = {}
    for tx, ty in sorted(tiles, key=lambda t: (t[1], t[0])):
        row = runs.setdefault(ty, [])
        if row and row[-1][1] == tx:
            row[-1] = (row[-1][0], tx + 1)
        else:
            row.append((tx, tx + 1))
    out: list[Rect] = []
    open_runs: dict[tuple[int, int], Rect] = {}
    for ty in sorted(runs):
        still: dict[tuple[int, int], Rect] = {}
        for x0, x1 in runs[ty]:
            above = open_runs.pop((x0, x1), None)
            if above is not None and above.bottom == ty * g:
                still[(x0, x1)] = Rect(above.x, above.y, above.width, above.height + g)
            else:
                still[(x0, x1)] = Rect(x0 * g, ty * g, (x1 - x0) * g, g)
        out.extend(open_runs.values())
        open_runs = still
    out.extend(open_runs.values())
    return out


class DamageWatcher:
    """Accumulate the root window's damage on a thread of its own.

    @param on_damage: called I{from the watcher's thread} when damage arrives
        and none was waiting (at most once per L{take}); the streamer passes a
        function that hops to the reactor with C{callFromThread}.
    @raise DamageUnavailable: from L{start}, when the display cannot be
        opened or has no DAMAGE extension (the caller falls back to
        comparing frames).
    """

    def __init__(self, display: str | None, on_damage: Callable[[], None]) -> None:
        self._display_name = display
        self._on_damage = on_damage
        self._lock = threading.Lock()
        self._rects: list[Rect] = []
        self._all = False  # too many to keep: everything counts as damaged
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False
        self.events = 0
        # Set when the thread died: the streamer goes back to comparing frames.
        self.failed = False

    # -- the streamer's side ---------------------------------------------------

    def start(self) -> None:
        """Open the connection, create the DAMAGE object, start the thread."""
        from Xlib import display as xdisplay
        from Xlib.error import DisplayError
        from Xlib.ext import damage

        try:
            conn: Any = xdisplay.Display(self._display_name)
        except (DisplayError, OSError) as e:
            raise DamageUnavailable(f"cannot open display {self._display_name!r}: {e}") from e
        if not conn.has_extension("DAMAGE"):
            conn.close()
            raise DamageUnavailable("the X server has no DAMAGE extension")
        conn.damage_query_version()  # required before any other DAMAGE request
        conn.screen().root.damage_create(damage.DamageReportRawRectangles)
        conn.sync()
        first_event = int(conn.query_extension("DAMAGE").first_event)
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, args=(conn, first_event), name="litedesk-damage", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close its connection (returns once it is gone)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        thread.join(5.0)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._wake_r = self._wake_w = -1

    def mark_all(self) -> None:
        """Count the whole screen as damaged (after a monitor switch, say)."""
        with self._lock:
            self._all = True
            self._rects.clear()

    def pending(self) -> bool:
        """Whether damage waits to be taken."""
        with self._lock:
            return self._all or bool(self._rects)

    def take(self) -> list[Rect] | None:
        """The damage since the last take, in root coordinates, and forget it.

        C{None} means "everything" (see L{mark_all}); C{[]} means nothing.
        """
        with self._lock:
            rects, self._rects = self._rects, []
            everything, self._all = self._all, False
        return None if everything else rects

    # -- the watcher's thread ----------------------------------------------------

    def _add(self, batch: list[Rect]) -> None:
        with self._lock:
            was_empty = not (self._all or self._rects)
            if not self._all:
                self._rects.extend(batch)
                if len(self._rects) > 4 * MAX_RECTS:
                    # Keep the list bounded whatever is drawn: fold it into
                    # its bounding box (merge_rects would do the same).
                    self._rects = [bounding_box(self._rects)]
        if was_empty:
            self._on_damage()

    def _raw_reader(self, conn: Any, first_event: int) -> Callable[[], list[Rect]]:
        """A function that waits for reports and returns them as rectangles.

        python-xlib parses an event in about 40 us, and a window dragged over
        a full-screen one makes 600 reports a second (a twentieth of a core).
        This connection sends no request after L{start}, so all that can
        arrive are 32-byte events (and errors, also 32 bytes): once
        python-xlib's own buffer is empty they are read from the socket and
        unpacked with C{struct} (about 1 us each).
        """
        while conn.pending_events():  # what came before the switch
            ev = conn.next_event()
            if getattr(ev, "area", None) is not None:
                self._add([Rect(ev.area.x, ev.area.y, ev.area.width, ev.area.height)])
        proto = conn.display
        if proto.data_recv:  # a partial packet: never seen after a sync
            raise RuntimeError("python-xlib holds unparsed data; cannot read raw events")
        sock = proto.socket
        fd = sock.fileno()
        code = first_event + _DAMAGE_NOTIFY
        pending = b""

        def read() -> list[Rect]:
            nonlocal pending
            ready, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in ready:
                self._stopping = True
                return []
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the X server closed the DAMAGE connection")
            pending += data
            whole = len(pending) - len(pending) % 32
            rects = []
            for kind, x, y, w, h in _EVENT.iter_unpack(pending[:whole]):
                kind &= 0x7F  # the "sent by SendEvent" bit
                if kind == code:
                    rects.append(Rect(x, y, w, h))
                elif kind == _GENERIC_EVENT:  # longer than 32 bytes: lost track
                    raise RuntimeError("unexpected generic event on the DAMAGE connection")
            pending = pending[whole:]
            return rects

        return read

    def _run(self, conn: Any, first_event: int) -> None:
        try:
            reader = self._raw_reader(conn, first_event)
            while not self._stopping:
                batch = reader()
                if batch:
                    self.events += len(batch)
                    self._add(batch)
        except Exception:
            # The X server went away (or python-xlib choked): the streamer
            # sees `failed` and grabs and compares whole frames rather than
            # trusting the silence.
            _log.failure("X DAMAGE watcher failed; comparing whole frames from now on")
            self.failed = True
            self.mark_all()
            self._on_damage()
        finally:
            try:
                conn.close()
            except Exception:
                _log.failure("closing the DAMAGE connection failed")
