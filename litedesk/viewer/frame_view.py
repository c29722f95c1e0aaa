"""The canvas that shows the remote screen: frames, scaling, scrolling, the cursor.

Frames that arrive while one is being drawn replace each other (only the
newest is drawn), and the conversion to RGBA at the drawn size (one
libswscale step, L{litedesk.screen.decoded.PictureScaler}) runs in a worker
thread, so a slow redraw drops frames instead of delaying the network (the
reactor shares Tk's thread; see L{litedesk.viewer.window}); its buffer goes
into Tk's photo as it is (L{litedesk.viewer.tk_photo}).  Where the picture goes is
computed by L{litedesk.viewer.geometry}; this module only applies it.
"""

from __future__ import annotations

import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageTk
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.input.mouse import ViewMapping
from litedesk.screen.decoded import DecodedFrame, PictureScaler
from litedesk.viewer.controller import ConnectionController
from litedesk.viewer.geometry import (
    ONE_TO_ONE,
    canvas_mapping,
    cursor_scale,
    drawn_size,
    monitor_rect,
)
from litedesk.viewer.remote_cursor import cursor_corner, cursor_spot, decode_cursor, scaled_cursor
from litedesk.viewer.tk_photo import PhotoWriter, changed_rows

_log = Logger(namespace="litedesk.viewer.window")


@dataclass
class FrameCounters:
    received: int = 0
    shown: int = 0
    draw_seconds: float = 0.0


class FrameView:
    """The remote picture, its scroll bars and the remote cursor on one canvas."""

    def __init__(
        self,
        reactor: Any,
        parent: tk.Misc,
        scale_var: tk.StringVar,
        conn: ConnectionController,
        overlay_text: Callable[[], str],
    ) -> None:
        self.reactor = reactor
        self.scale_var = scale_var
        self.conn = conn
        self.overlay_text = overlay_text
        self.counters = FrameCounters()
        self.mapping: ViewMapping | None = None
        self.shown: DecodedFrame | None = None
        self._pending: DecodedFrame | None = None
        self._draw_call: IDelayedCall | None = None
        self._scaling = False
        self._scaler = PictureScaler()
        self._writer: PhotoWriter | None = None
        # The converted picture (av.VideoFrame) the photo shows, kept to put
        # only the rows the next one changes; None: unknown (Pillow's paste).
        self._photo_holds: Any = None
        self._photo: ImageTk.PhotoImage | None = None
        self._photo_size = (0, 0)
        self._placed: tuple[int, int, tuple[int, int]] | None = None
        self._overlay_state: tuple[str, int, float, float] | None = None
        self._cursor_hidden = True  # created hidden
        self._logged_mapping: ViewMapping | None = None
        self._cursor_photo: ImageTk.PhotoImage | None = None
        self._cursor_img: Image.Image | None = None
        self._cursor_scale = 0.0
        self._local_pointer: tuple[float, float] | None = None
        self._local_moved_at = 0.0

        body = self.body = tk.Frame(parent)
        body.pack(side="top", fill="both", expand=True)
        self.canvas = tk.Canvas(
            body, background="#202020", highlightthickness=0, borderwidth=0, takefocus=True
        )
        self.hbar = tk.Scrollbar(body, orient="horizontal", command=self._xview)
        self.vbar = tk.Scrollbar(body, orient="vertical", command=self._yview)
        self.canvas.configure(xscrollcommand=self.hbar.set, yscrollcommand=self.vbar.set)
        self.canvas.grid(row=0, column=0, sticky="nsew")
        body.rowconfigure(0, weight=1)
        body.columnconfigure(0, weight=1)
        self.image_item = self.canvas.create_image(0, 0, anchor="nw")
        self.cursor_item = self.canvas.create_image(0, 0, anchor="nw", state="hidden")
        self.overlay = self.canvas.create_text(
            0, 0, text="", fill="#e0e0e0", font=("TkDefaultFont", 14), justify="center"
        )
        self.canvas.bind("<Configure>", lambda _e: self.schedule_draw())
        # A window nobody can see (iconified, or covered by other windows)
        # skips converting and drawing pictures: only the newest is kept and
        # drawn when it shows again, which X tells with a VisibilityNotify.
        self._covered = False
        self.canvas.bind("<Visibility>", self._visibility)

    def new_session(self) -> None:
        """A session logged in: log where its first picture goes."""
        self._logged_mapping = None

    # -- scale and scroll ----------------------------------------------------------

    def apply_scale_mode(self) -> None:
        if self.scale_var.get() == ONE_TO_ONE:
            self.hbar.grid(row=1, column=0, sticky="ew")
            self.vbar.grid(row=0, column=1, sticky="ns")
        else:
            self.hbar.grid_remove()
            self.vbar.grid_remove()
            self.canvas.xview_moveto(0)
            self.canvas.yview_moveto(0)
        self.schedule_draw()

    def _xview(self, *a: Any) -> None:
        self.canvas.xview(*a)
        self.schedule_draw()

    def _yview(self, *a: Any) -> None:
        self.canvas.yview(*a)
        self.schedule_draw()

    def _compute_mapping(self, frame: DecodedFrame) -> ViewMapping:
        s = self.conn.session
        info = s.peer_info if s is not None else None
        monitors = list(info.displays) if info is not None else []
        remote = monitor_rect(
            monitors, s.display if s is not None else 0, frame.width, frame.height
        )
        cw, ch = self.canvas.winfo_width(), self.canvas.winfo_height()
        return canvas_mapping(remote, self.scale_var.get(), cw, ch)

    # -- frames ------------------------------------------------------------------

    def on_frame(self, frame: DecodedFrame) -> None:
        self.counters.received += 1
        self._pending = frame
        self.schedule_draw()

    def schedule_draw(self) -> None:
        # Coalesce: while a draw is pending, newer frames replace older ones,
        # so a slow redraw drops frames instead of building a backlog.
        if self._draw_call is None or not self._draw_call.active():
            self._draw_call = self.reactor.callLater(0, self._draw)

    def _visibility(self, event: Any) -> None:
        # Also sent when the window shows again after being iconified
        # (not viewable: no event then, and no draws either).
        self._covered = event.state == "VisibilityFullyObscured"
        if not self._covered:
            self.schedule_draw()

    def _draw(self) -> None:
        self._draw_call = None
        if self._scaling:
            return  # the scaling in flight draws again when it is done
        if self._pending is not None and (self._covered or not self.canvas.winfo_viewable()):
            return  # drawn when the window shows again (see _visibility)
        frame = self._pending or self.shown
        if frame is None:
            self.place_overlay()
            return
        new = self._pending is not None
        self._pending = None
        t0 = time.perf_counter()
        m = self._compute_mapping(frame)
        size = drawn_size(m)
        if size == frame.size:
            # 1:1: converted right here, as fast as a thread hand-off would
            # be; a frame is drawn as soon as it is decoded, as before issue 15.
            try:
                picture = self._convert(frame, size, self._photo_holds)
            except Exception:  # PyAV raises many types; a bad picture is skipped
                _log.failure("Converting a frame for display failed")
                return
            self._show(frame, m, picture, new, t0)
            return
        # Scaled: straight from YUV to RGBA at the drawn size in one step, in
        # a worker thread (libswscale releases the GIL), so it overlaps with
        # decoding the next frame on the reactor thread instead of adding
        # to it.
        self._scaling = True
        d = deferToThread(self._convert, frame, size, self._photo_holds)

        def scaled(picture: tuple[Any, tuple[int, int] | None]) -> None:
            self._scaling = False
            try:
                self._show(frame, m, picture, new, t0)
            except tk.TclError:
                return  # window closed meanwhile
            if self._pending is not None:
                self.schedule_draw()

        def failed(f: Failure) -> None:
            self._scaling = False
            _log.failure("Converting a frame for display failed", f)

        d.addCallbacks(scaled, failed)

    def _convert(
        self, frame: DecodedFrame, size: tuple[int, int], holds: Any
    ) -> tuple[Any, tuple[int, int] | None]:
        """C{frame} at C{size} and the rows in which it differs from C{holds}
        (the picture in the photo); in the worker thread when scaled."""
        picture = self._scaler.picture(frame, *size)
        if isinstance(picture, Image.Image):
            return picture, (0, size[1])
        return picture, changed_rows(picture, holds)

    def _put(self, converted: tuple[Any, tuple[int, int] | None]) -> tuple[int, int]:
        """Copy a converted picture into the shown photo (made anew when its
        size changed); its size.

        @param converted: an RGBA C{av.VideoFrame} from
            L{PictureScaler.picture}, handed to Tk as it is, or a Pillow
            image (the padded picture of an odd-sized display), which Pillow
            copies in; and the rows that differ from the picture the photo
            holds (L{changed_rows}; C{None}: none), the only ones put.
        """
        picture, rows = converted
        image = isinstance(picture, Image.Image)
        size: tuple[int, int] = picture.size if image else (picture.width, picture.height)
        if self._photo is None or self._photo_size != size:
            # An RGB photo whatever the picture: Tk then copies the pixels
            # without looking at an alpha channel.
            self._photo = ImageTk.PhotoImage("RGB", size)
            self._photo_size = size
            self._photo_holds = None
            rows = (0, size[1])
            self.canvas.itemconfigure(self.image_item, image=self._photo)
        if rows is None and self._photo_holds is not None:
            self._photo_holds = picture  # the same pixels: nothing to put
            return size
        if image:
            self._photo_holds = None
            self._photo.paste(picture)
            return size
        if self._writer is None:
            self._writer = PhotoWriter(self.canvas)
        self._photo_holds = picture
        if not self._writer.available or not self._writer.put(self._photo, picture, rows):
            pixels: Any = picture.planes[0]
            line = picture.planes[0].line_size
            self._photo.paste(Image.frombuffer("RGBA", size, pixels, "raw", "RGBA", line, 1))
        return size

    def _show(
        self,
        frame: DecodedFrame,
        m: ViewMapping,
        picture: tuple[Any, tuple[int, int] | None],
        new: bool,
        t0: float,
    ) -> None:
        """Put the (scaled) picture on the canvas; Tk thread only."""
        self.mapping = m
        size = self._put(picture)
        # Moving the item or setting the scroll region makes Tk redraw the
        # whole canvas, the letterbox bands included: only when they change
        # (the photo's own change redraws just the picture).
        whole = size if self.scale_var.get() == ONE_TO_ONE else (0, 0)
        placed = (round(m.offset_x), round(m.offset_y), whole)
        if placed != self._placed:
            self._placed = placed
            self.canvas.coords(self.image_item, placed[0], placed[1])
            self.canvas.configure(scrollregion=(0, 0, whole[0], whole[1]))
        self.shown = frame
        if m != self._logged_mapping:
            # Tests and bug reports need to know where the picture is.
            self._logged_mapping = m
            _log.info(
                "Showing {w}x{h} at scale {scale:.5f}, offset {ox:.1f},{oy:.1f}; "
                "canvas at {cx},{cy} size {cw}x{ch}",
                w=frame.width,
                h=frame.height,
                scale=m.scale,
                ox=m.offset_x,
                oy=m.offset_y,
                cx=self.canvas.winfo_rootx(),
                cy=self.canvas.winfo_rooty(),
                cw=self.canvas.winfo_width(),
                ch=self.canvas.winfo_height(),
            )
        if new:
            self.counters.shown += 1
            self.counters.draw_seconds += time.perf_counter() - t0
        self.draw_cursor()
        self.place_overlay()

    def place_overlay(self) -> None:
        """The connection state over the (empty or stale) picture while not connected."""
        c = self.canvas
        text = "" if self.conn.connected else self.overlay_text()
        width = c.winfo_width()
        state = (text, width, c.canvasx(width / 2), c.canvasy(c.winfo_height() / 2))
        if state == self._overlay_state:
            return  # called for every frame: unchanged, it costs Tk no redraw
        self._overlay_state = state
        c.itemconfigure(self.overlay, text=text, width=max(200, width - 40))
        c.coords(self.overlay, state[2], state[3])
        c.tag_raise(self.overlay)

    # -- remote cursor -----------------------------------------------------------

    def pointer_moved(self, lx: float, ly: float) -> None:
        self._local_pointer = (lx, ly)
        self._local_moved_at = self.reactor.seconds()

    def pointer_left(self) -> None:
        self._local_pointer = None
        self.draw_cursor()

    def tick(self) -> None:
        if self._local_pointer is not None:
            self.draw_cursor()

    def cursor_changed(self, shape: bool) -> None:
        s = self.conn.session
        if shape and s is not None and s.cursor_shape is not None:
            self._cursor_img = decode_cursor(s.cursor_shape)
            self._cursor_scale = 0.0
            # The remote cursor is drawn in the picture: hide the local one
            # over it so the person sees one pointer, shaped as on the host.
            try:
                self.canvas.configure(cursor="none" if self._cursor_img else "")
            except tk.TclError:
                self.canvas.configure(cursor="dot")
        self.draw_cursor()

    def draw_cursor(self) -> None:
        s, m, img = self.conn.session, self.mapping, self._cursor_img
        if s is None or m is None or img is None or not self.conn.connected:
            self._hide_cursor()
            return
        shape = s.cursor_shape
        assert shape is not None
        scale = cursor_scale(m)
        if self._cursor_photo is None or self._cursor_scale != scale:
            self._cursor_photo = ImageTk.PhotoImage(scaled_cursor(img, scale))
            self._cursor_scale = scale
            self.canvas.itemconfigure(self.cursor_item, image=self._cursor_photo)
        spot = cursor_spot(
            m, self.reactor.seconds(), self._local_pointer, self._local_moved_at, s.cursor
        )
        if spot is None:
            self._hide_cursor()
            return
        self.canvas.coords(self.cursor_item, *cursor_corner(spot, shape, scale))
        self.canvas.itemconfigure(self.cursor_item, state="normal")
        self.canvas.tag_raise(self.cursor_item)
        self._cursor_hidden = False

    def _hide_cursor(self) -> None:
        # Once: hiding an item redraws its area, and this runs for every frame.
        if not self._cursor_hidden:
            self._cursor_hidden = True
            self.canvas.itemconfigure(self.cursor_item, state="hidden")
