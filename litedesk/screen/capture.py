"""Screen capture with mss: list the monitors, grab one as BGRA bytes.

mss's default Linux backend (XCB + XShmGetImage) grabs a 1920x1080 frame in
2-3 ms on Xvfb, several times faster than its XGetImage or Xlib backends, so
that is what L{Capturer} uses unless told otherwise.  Grabs return the raw
BGRA bytes (4 bytes per pixel, stride C{width * 4}); converting to RGB in
Python would cost more than the grab (mss' own C{.rgb} takes 9-17 ms), so the
encoder hands BGRA straight to libswscale and Pillow reads it with the
C{"BGRX"} raw mode.

An mss object holds an X connection.  L{Capturer} opens it lazily in the
thread that first grabs and reopens it if called from another thread, so the
streamer's worker thread owns its own connection.

Whole-monitor grabs for the damage path (L{Capturer.grab_whole}) skip mss'
copy where they can: L{litedesk.screen.shm_grab} has the X server write into
two shared-memory segments of our own, used in turn, on a second connection
kept the same way; mss takes over where that cannot work.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import mss
from PIL import Image
from twisted.logger import Logger

from .change import Rect
from .shm_grab import ShmGrabber, ShmGrabError, ShmUnavailable

__all__ = [
    "CaptureError",
    "Capturer",
    "DisplayInfo",
    "Frame",
    "bgra_to_image",
    "list_displays",
]

_log = Logger()


class CaptureError(Exception):
    """The screen could not be grabbed (no X server, monitor gone, ...)."""


@dataclass(frozen=True, slots=True)
class DisplayInfo:
    """One monitor, in the shape of RustDesk's C{DisplayInfo} message.

    @ivar index: position in L{list_displays}' answer, 0-based; this is the
        number C{SwitchDisplay.display} and C{PeerInfo.current_display} use.
    @ivar x: left edge in virtual-desktop coordinates.
    @ivar y: top edge in virtual-desktop coordinates.
    """

    index: int
    x: int
    y: int
    width: int
    height: int
    name: str
    primary: bool


@dataclass(frozen=True, slots=True)
class Frame:
    """One grabbed frame.

    @ivar data: BGRA pixels, C{width * 4} bytes per row, no padding.
    @ivar seq: increases by one per grab of this capturer.
    """

    data: bytes
    width: int
    height: int
    seq: int


def _open_mss(display: str | None, backend: str) -> Any:
    kwargs: dict[str, Any] = {"backend": backend}
    if display is not None:
        kwargs["display"] = display
    try:
        return mss.MSS(**kwargs)
    except Exception as e:  # mss raises its own XError/ScreenShotError types
        raise CaptureError(f"cannot open display {display!r}: {e}") from e


def _displays_from_monitors(monitors: list[dict[str, Any]]) -> list[DisplayInfo]:
    # monitors[0] is the bounding box of all monitors; the real ones follow.
    real = monitors[1:] or monitors[:1]
    flagged = [bool(m.get("is_primary")) for m in real]
    # Xvfb (and X servers without RandR outputs) mark nothing as primary; the
    # first monitor is then the one a person would call primary.
    if not any(flagged):
        flagged[0] = True
    out = []
    for i, (m, primary) in enumerate(zip(real, flagged, strict=True)):
        name = str(m.get("output") or m.get("name") or f"monitor {i + 1}")
        out.append(
            DisplayInfo(
                index=i,
                x=int(m["left"]),
                y=int(m["top"]),
                width=int(m["width"]),
                height=int(m["height"]),
                name=name,
                primary=primary,
            )
        )
    return out


def list_displays(display: str | None = None, backend: str = "default") -> list[DisplayInfo]:
    """List the monitors of an X display (C{None}: C{$DISPLAY}).

    @raise CaptureError: the display cannot be opened.
    """
    sct = _open_mss(display, backend)
    try:
        return _displays_from_monitors(list(sct.monitors))
    finally:
        sct.close()


def bgra_to_image(data: bytes, width: int, height: int) -> Image.Image:
    """Wrap BGRA bytes as a Pillow RGB image (one C pass, no Python loop)."""
    return Image.frombuffer("RGB", (width, height), data, "raw", "BGRX", 0, 1)


class Capturer:
    """Grab one monitor repeatedly, keeping the previous frame.

    Not thread-safe: use one capturer from one thread at a time (the
    streamer's worker).  L{select} may be called from any thread between
    grabs; it takes effect on the next grab.

    @ivar previous: the frame before the latest grab, or C{None}.
    @ivar current: the latest grab, or C{None}.
    """

    def __init__(
        self, display: str | None = None, index: int = 0, backend: str = "default"
    ) -> None:
        self._display = display
        self._backend = backend
        self._index = index
        self._sct: Any = None
        self._owner: int | None = None
        self._monitors: list[DisplayInfo] = []
        self._seq = 0
        self._lock = threading.Lock()
        # Whole grabs into shared memory (shm_grab), per thread like _sct;
        # once they cannot work here, why (and mss grabs from then on).
        self._shm: ShmGrabber | None = None
        self._shm_owner: int | None = None
        self._shm_off: str | None = None
        self.previous: Frame | None = None
        self.current: Frame | None = None

    @property
    def display_name(self) -> str | None:
        """The X display grabbed (C{None}: C{$DISPLAY})."""
        return self._display

    @property
    def index(self) -> int:
        """The monitor being captured (an index into L{displays})."""
        return self._index

    @property
    def shm_unavailable(self) -> str | None:
        """Why L{grab_whole} copies through mss, or C{None} (shared memory
        works, or has not been tried yet)."""
        return self._shm_off

    def _conn(self) -> Any:
        me = threading.get_ident()
        if self._sct is None or self._owner != me:
            # XCB connections are not meant to be shared between threads;
            # a new owner gets its own connection.
            self._close_conn()
            self._sct = _open_mss(self._display, self._backend)
            self._owner = me
            self._monitors = _displays_from_monitors(list(self._sct.monitors))
        return self._sct

    def displays(self) -> list[DisplayInfo]:
        """The monitors, as seen by this capturer's connection (refreshed)."""
        sct = self._conn()
        self._monitors = _displays_from_monitors(list(sct.monitors))
        return list(self._monitors)

    def select(self, index: int) -> None:
        """Capture monitor C{index} from the next grab on.

        The previous frame is forgotten, so the next grab counts as changed.
        """
        with self._lock:
            self._index = index
            self.previous = None
            self.current = None

    def monitor(self) -> DisplayInfo:
        """The selected monitor, as this capturer's connection sees it.

        @raise CaptureError: it does not exist (any more).
        """
        with self._lock:
            index = self._index
        sct = self._conn()
        if not 0 <= index < len(self._monitors):
            # Monitors can come and go (RandR); look again before giving up.
            self._monitors = _displays_from_monitors(list(sct.monitors))
            if not 0 <= index < len(self._monitors):
                raise CaptureError(f"no monitor {index} ({len(self._monitors)} present)")
        return self._monitors[index]

    def _shot(self, left: int, top: int, width: int, height: int) -> Any:
        region = {"left": left, "top": top, "width": width, "height": height}
        try:
            return self._conn().grab(region)
        except Exception as e:
            # A failed grab often means the monitor layout changed: drop the
            # connection so the next grab starts from a fresh monitor list.
            self._close_conn()
            raise CaptureError(f"grab of {width}x{height}+{left}+{top} failed: {e}") from e

    def grab(self) -> Frame:
        """Grab the selected monitor now.

        @raise CaptureError: the grab failed or the monitor does not exist.
        """
        mon = self.monitor()
        shot = self._shot(mon.x, mon.y, mon.width, mon.height)
        self._seq += 1
        # bytes() copies once (~1 ms at 1080p); immutable frames can then be
        # compared and handed across threads without surprises.
        frame = Frame(bytes(shot.raw), int(shot.width), int(shot.height), self._seq)
        with self._lock:
            if self._index == mon.index:
                self.previous, self.current = self.current, frame
        return frame

    def grab_whole(self) -> tuple[bytearray | memoryview, DisplayInfo]:
        """Grab the selected monitor without the copy L{grab} makes.

        The damage path keeps the buffer as its picture of the monitor and
        writes rectangles into it; a copy per grab was 8 MB of fresh memory
        at 1080p, a fifth of the host's samples while a window moved.  Where
        shared memory works (L{litedesk.screen.shm_grab}) the buffer is a
        writable C{memoryview} of exactly the monitor's bytes in one of two
        segments used in turn: it stays unchanged until the grab after next
        (of this capturer), when the X server writes into it again, so keep
        only the latest.  Elsewhere it is mss' new C{bytearray}.

        @raise CaptureError: the grab failed or the monitor does not exist.
        """
        mon = self.monitor()
        shm = self._grabber(mon)
        if shm is not None:
            try:
                return shm.grab(mon.x, mon.y, mon.width, mon.height), mon
            except ShmUnavailable as e:  # no new segments for a new size
                self._shm_unusable(str(e))
            except ShmGrabError as e:
                # Either the request is wrong (the monitor layout changed:
                # mss fails too, and _shot raises) or shared memory is.
                self._close_shm()
                raw = self._whole_by_mss(mon)
                self._shm_unusable(f"{e}, where mss' grab worked")
                return raw, mon
        return self._whole_by_mss(mon), mon

    def _whole_by_mss(self, mon: DisplayInfo) -> bytearray:
        shot = self._shot(mon.x, mon.y, mon.width, mon.height)
        if (int(shot.width), int(shot.height)) != (mon.width, mon.height):
            raise CaptureError(f"grab of monitor {mon.index} is not {mon.width}x{mon.height}")
        raw: bytearray = shot.raw
        return raw

    def _grabber(self, mon: DisplayInfo) -> ShmGrabber | None:
        """This thread's shared-memory grabber, or C{None}: grab with mss."""
        if self._shm_off is not None:
            return None
        me = threading.get_ident()
        if self._shm is None or self._shm_owner != me:
            # Like _conn: an XCB connection belongs to the thread using it.
            self._close_shm()
            try:
                self._shm = ShmGrabber(self._display, mon.width, mon.height)
            except ShmUnavailable as e:
                self._shm_unusable(str(e))
                return None
            self._shm_owner = me
        return self._shm

    def _shm_unusable(self, why: str) -> None:
        """Whole grabs copy through mss from now on; said once."""
        self._close_shm()
        self._shm_off = why
        _log.info(
            "whole-monitor grabs of {display} go through mss (a copy each): {why}",
            display=self._display or os.environ.get("DISPLAY"),
            why=why,
        )

    def grab_rect(self, rect: Rect) -> bytearray:
        """Grab part of the selected monitor: BGRA, stride C{rect.width * 4}.

        C{rect} is in the monitor's coordinates.  Nothing is kept: the damage
        path keeps its picture in a L{litedesk.screen.yuv_canvas.YuvCanvas}.
        The buffer is mss' own, handed over without a second copy.

        @raise CaptureError: the grab failed or the monitor does not exist.
        """
        mon = self.monitor()
        shot = self._shot(mon.x + rect.x, mon.y + rect.y, rect.width, rect.height)
        raw: bytearray = shot.raw
        return raw

    def _close_conn(self) -> None:
        if self._sct is not None:
            try:
                self._sct.close()
            except Exception:
                _log.failure("closing the mss connection failed")
            self._sct = None
            self._owner = None

    def _close_shm(self) -> None:
        # Buffers handed out stay valid: the X server no longer writes into
        # them, and each mapping goes with its last view.
        shm, self._shm, self._shm_owner = self._shm, None, None
        if shm is not None:
            try:
                shm.close()
            except Exception:
                _log.failure("closing the shared-memory grabber failed")

    def close(self) -> None:
        """Release the X connections (the next grab reopens them)."""
        self._close_conn()
        self._close_shm()
