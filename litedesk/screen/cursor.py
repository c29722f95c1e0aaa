"""The host's mouse cursor, sent apart from the video (RustDesk C{CursorData}
and C{CursorPosition}).

The video does not contain the cursor (X screen grabs never do), so the
viewer draws it: the host tells it the cursor's shape when it changes and its
position when it moves.  A L{CursorTracker} polls the X server on its own
thread with its own connection (python-xlib calls block): the pointer
position at C{position_hz} and the XFixes cursor image at C{shape_hz}, and
reports changes on the reactor thread.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
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

    def __init__(
        self,
        reactor: Any,
        display: str | None,
        on_position: Callable[[int, int], None],
        on_shape: Callable[[CursorShape], None],
        *,
        position_hz: float = 30.0,
        shape_hz: float = 10.0,
    ) -> None:
        self._reactor = reactor
        self._display = display
        self._on_position = on_position
        self._on_shape = on_shape
        self._position_interval = 1.0 / position_hz
        self._shape_every = max(1, round(position_hz / shape_hz))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.position: tuple[int, int] | None = None
        self.shape: CursorShape | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        xdisplay = importlib.import_module("Xlib.display")
        dpy = xdisplay.Display(self._display)  # raises here, not in the thread
        self._thread = threading.Thread(
            target=self._run, args=(dpy,), name="litedesk-cursor", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _run(self, dpy: Any) -> None:
        root = dpy.screen().root
        has_xfixes = dpy.has_extension("XFIXES")
        if has_xfixes:
            dpy.xfixes_query_version()
        last_pos: tuple[int, int] | None = None
        last_serial: int | None = None
        tick = 0
        try:
            while not self._stop.wait(self._position_interval):
                p = root.query_pointer()
                pos = (int(p.root_x), int(p.root_y))
                if pos != last_pos:
                    last_pos = pos
                    self._reactor.callFromThread(self._position, pos)
                tick += 1
                if has_xfixes and tick % self._shape_every == 0:
                    img = dpy.xfixes_get_cursor_image(root)
                    if img.cursor_serial != last_serial:
                        last_serial = img.cursor_serial
                        shape = CursorShape(
                            int(img.cursor_serial),
                            int(img.xhot),
                            int(img.yhot),
                            int(img.width),
                            int(img.height),
                            argb_to_rgba(img.cursor_image, int(img.width), int(img.height)),
                        )
                        self._reactor.callFromThread(self._shape, shape)
        except Exception as e:  # the X server went away: stop tracking, keep the host up
            _log.warn("Cursor tracking stopped: {error}", error=e)
        finally:
            with contextlib.suppress(Exception):
                dpy.close()

    def _position(self, pos: tuple[int, int]) -> None:
        self.position = pos
        self._on_position(*pos)

    def _shape(self, shape: CursorShape) -> None:
        self.shape = shape
        self._on_shape(shape)
