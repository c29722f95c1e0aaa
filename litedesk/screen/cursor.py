"""The host's mouse cursor, sent apart from the video (RustDesk C{CursorData}
and C{CursorPosition}).

The video does not contain the cursor (X screen grabs never do), so the
viewer draws it: the host tells it the cursor's shape when it changes and its
position when it moves.  A L{CursorTracker} watches the X server on its own
thread with its own connection (python-xlib calls block) and reports changes
on the reactor thread.  It runs from the host's start, viewer or not, so it
waits for events rather than polling (issue 15: an idle host costs nothing;
polling the pointer at 30 Hz and the cursor image at 10 Hz cost 1.1 % of a
core with nobody connected):

  - the position: XInput 2 raw motion events on the root window (every
    pointer device, XTest's included, whatever window the pointer is over)
    say that the pointer moved; the position is then asked
    (C{QueryPointer}), at most C{position_hz} times a second, and once a
    second anyway (a program's C{XWarpPointer} makes no motion event);
  - the shape: XFixes C{CursorNotify} events say that the cursor image
    changed; the image is then fetched once.

Without XInput 2 the position is polled at C{position_hz}; without XFixes
there is no shape, as before.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zstandard
from twisted.logger import Logger

__all__ = ["CursorShape", "CursorTracker", "argb_to_rgba", "shape_colors"]

_log = Logger()


@dataclass(frozen=True, slots=True)
class CursorShape:
    """One cursor image: C{rgba} is width*height*4 bytes, row-major."""

    serial: int
    hotx: int
    hoty: int
    width: int
    height: int
    rgba: bytes


def argb_to_rgba(pixels: Any, width: int, height: int) -> bytes:
    """XFixes gives premultiplied ARGB as 32-bit integers; RustDesk wants RGBA bytes."""
    out = bytearray(width * height * 4)
    for i, p in enumerate(pixels[: width * height]):
        p = int(p) & 0xFFFFFFFF
        o = i * 4
        out[o] = (p >> 16) & 0xFF
        out[o + 1] = (p >> 8) & 0xFF
        out[o + 2] = p & 0xFF
        out[o + 3] = (p >> 24) & 0xFF
    return bytes(out)


def shape_colors(shape: CursorShape) -> bytes:
    """C{CursorData.colors}: the RGBA bytes, zstd-compressed (level 3, as RustDesk)."""
    return zstandard.ZstdCompressor(level=3).compress(shape.rgba)


class CursorTracker:
    """Poll one X display's pointer and cursor image; report changes.

    @param on_position: called on the reactor thread with (x, y) root coordinates.
    @param on_shape: called on the reactor thread with each new L{CursorShape}.
    """

    # Seconds between position queries while no motion event comes.
    WARP_CHECK = 1.0

    def __init__(
        self,
        reactor: Any,
        display: str | None,
        on_position: Callable[[int, int], None],
        on_shape: Callable[[CursorShape], None],
        *,
        position_hz: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self._display = display
        self._on_position = on_position
        self._on_shape = on_shape
        self._position_interval = 1.0 / position_hz
        self._stopping = False
        self._wake_r = self._wake_w = -1
        self._thread: threading.Thread | None = None
        self.position: tuple[int, int] | None = None
        self.shape: CursorShape | None = None
        # Round trips asked of the X server (pointer queries, image fetches):
        # what an idle host must not spend.
        self.queries = 0
        self.event_driven = False

    def start(self) -> None:
        if self._thread is not None:
            return
        xdisplay = importlib.import_module("Xlib.display")
        dpy = xdisplay.Display(self._display)  # raises here, not in the thread
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(
            target=self._run, args=(dpy,), name="litedesk-cursor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        thread.join(2)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _select_events(self, dpy: Any, root: Any) -> tuple[bool, bool]:
        """Ask for motion and cursor-change events; which ones we get."""
        motion = shapes = False
        if dpy.has_extension("XInputExtension"):
            xinput = importlib.import_module("Xlib.ext.xinput")
            if dpy.xinput_query_version().major_version >= 2:
                root.xinput_select_events([(xinput.AllMasterDevices, xinput.RawMotionMask)])
                motion = True
        if dpy.has_extension("XFIXES"):
            xfixes = importlib.import_module("Xlib.ext.xfixes")
            dpy.xfixes_query_version()
            dpy.xfixes_select_cursor_input(root, xfixes.XFixesDisplayCursorNotifyMask)
            shapes = True
        dpy.sync()
        return motion, shapes

    def _query_position(self, root: Any, last: tuple[int, int] | None) -> tuple[int, int]:
        self.queries += 1
        p = root.query_pointer()
        pos = (int(p.root_x), int(p.root_y))
        if pos != last:
            self._reactor.callFromThread(self._position, pos)
        return pos

    def _fetch_shape(self, dpy: Any, root: Any, last: int | None) -> int:
        self.queries += 1
        img = dpy.xfixes_get_cursor_image(root)
        if img.cursor_serial != last:
            shape = CursorShape(
                int(img.cursor_serial),
                int(img.xhot),
                int(img.yhot),
                int(img.width),
                int(img.height),
                argb_to_rgba(img.cursor_image, int(img.width), int(img.height)),
            )
            self._reactor.callFromThread(self._shape, shape)
        return int(img.cursor_serial)

    def _run(self, dpy: Any) -> None:
        root = dpy.screen().root
        try:
            motion, shapes = self._select_events(dpy, root)
            self.event_driven = motion
            pos = self._query_position(root, None)
            serial = self._fetch_shape(dpy, root, None) if shapes else None
            self._loop(dpy, root, motion, pos, serial)
        except Exception as e:  # the X server went away: stop tracking, keep the host up
            _log.warn("Cursor tracking stopped: {error}", error=e)
        finally:
            with contextlib.suppress(Exception):
                dpy.close()

    def _loop(
        self, dpy: Any, root: Any, motion: bool, pos: tuple[int, int], serial: int | None
    ) -> None:
        fd = dpy.fileno()
        moved = False
        last_query = time.monotonic()
        while not self._stopping:
            while dpy.pending_events():
                ev = dpy.next_event()
                if getattr(ev, "cursor_serial", None) is not None:
                    serial = self._fetch_shape(dpy, root, serial)
                else:  # raw motion (the only other event asked for)
                    moved = True
            now = time.monotonic()
            # A pointer warped by a program (XWarpPointer) makes no raw
            # motion event: a query every WARP_CHECK seconds catches it.
            polling = moved or not motion
            due = last_query + (self._position_interval if polling else self.WARP_CHECK)
            if now >= due:
                pos = self._query_position(root, pos)
                last_query, moved = now, False
                continue
            # Sleep until an event, or until a position query is due.
            timeout = due - now
            ready, _, _ = select.select([fd, self._wake_r], [], [], timeout)
            if self._wake_r in ready:
                return

    def _position(self, pos: tuple[int, int]) -> None:
        self.position = pos
        self._on_position(*pos)

    def _shape(self, shape: CursorShape) -> None:
        self.shape = shape
        self._on_shape(shape)
