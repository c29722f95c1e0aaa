# -*- test-case-name: tests.test_viewer_window,tests.test_viewer_units -*-
"""The viewer window: C{litedesk-viewer ID} without C{--headless}.

Tk and Twisted share one thread through C{twisted.internet.tksupport} (a
LoopingCall running C{root.update()} every 5 ms; docs/test-lab.md section C
measured it at 72-95 fps for a 720p stream, 32 fps at 1080p).  It is the
simplest of the three options measured there, needs no locking between the
network and the widgets, and keeps tests deterministic (one thread, a plain
C{reactor.run()}).  The price is that anything slow in a Tk callback delays
the network, so nothing here blocks: dialogs are non-modal Toplevels, frames
that arrive while one is being drawn replace each other (only the newest is
drawn), and the only blocking call is the "Save screenshot as" file dialog.

The connection code is the headless mode's (L{litedesk.viewer.connection.connect}),
and the session is L{ViewerSession} with a thin subclass that tells the
window about cursor, clipboard and notices as they arrive.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
import tkinter as tk
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from tkinter import filedialog
from typing import Any

import zstandard
from PIL import Image, ImageTk
from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.input.mouse import MouseType, Rect, ViewMapping, encode_mask
from litedesk.input.mouse import x_button as mouse_x_button
from litedesk.input.mouse import x_wheel as mouse_x_wheel
from litedesk.proto import message_pb2 as pb
from litedesk.screen.encode import DecodedFrame
from litedesk.session.input_messages import key_to_proto as to_key_event
from litedesk.session.viewer_session import SessionError, ViewerSession
from litedesk.viewer import connection
from litedesk.viewer.config import ViewerConfig, load_config, save_config
from litedesk.viewer.keymap import (
    SEND_KEYS,
    HeldKeys,
    HostKey,
    combo_event,
    key_for_tk_event,
    modifiers_for_state,
)
from litedesk.viewer.route import ConnectError

_log = Logger(namespace="litedesk.viewer.window")

TITLE = "LiteDesk"
QUALITIES: dict[str, int] = {"speed": pb.Low, "balanced": pb.Balanced, "best": pb.Best}
FPS_CAPS = (0, 5, 10, 15, 20, 30, 60)
RECONNECT_DELAYS = (2, 4, 8, 15, 30)
#: Reasons after which trying again cannot help: ask the person instead.
FINAL_REASONS = (
    "wrong password",
    "host key mismatch",
    "key mismatch",
    "bad server key",
    "unknown id",
    "the host accepts no password",
    "relay refused",
)
PHASES = {
    "rendezvous": "asking the rendezvous server for the host",
    "punch": "punching through the NAT (relay if that fails)",
    "relay": "connecting through the relay",
    "lan": "connecting to the host on the LAN",
    "direct": "connecting to the host directly",
    "tls": "securing the connection (TLS)",
    "login": "logging in",
}
#: Seconds after a local pointer move during which the cursor is drawn at
#: the local pointer rather than where the host last reported it (the
#: host's report of our own move arrives one round trip late and would make
#: the cursor jump back).
LOCAL_CURSOR_HOLD = 0.5
TICK = 0.25


# -- pure helpers (unit tested) ----------------------------------------------


def view_mapping(
    remote: Rect, mode: str, view_w: int, view_h: int, scroll_x: float = 0.0, scroll_y: float = 0.0
) -> ViewMapping:
    """How the remote monitor is drawn in a C{view_w} x C{view_h} canvas.

    C{"fit"}: scaled (never enlarged beyond what fits) and centred, keeping
    the aspect ratio.  C{"1:1"}: one remote pixel per window pixel, scrolled
    by (C{scroll_x}, C{scroll_y}) window pixels, centred when smaller.
    """
    if mode == "fit":
        return ViewMapping.fit(remote, max(1, view_w), max(1, view_h))
    ox = (view_w - remote.width) / 2 if remote.width < view_w else 0.0 - scroll_x
    oy = (view_h - remote.height) / 2 if remote.height < view_h else 0.0 - scroll_y
    return ViewMapping(remote, 1.0, ox, oy)


def drawn_size(m: ViewMapping) -> tuple[int, int]:
    """The size of the scaled image for mapping C{m}."""
    return (
        max(1, round(m.remote.width * m.scale)),
        max(1, round(m.remote.height * m.scale)),
    )


def mouse_events(
    kind: str, num: int, m: ViewMapping, lx: float, ly: float, state: int
) -> list[pb.MouseEvent]:
    """The MouseEvents for one Tk pointer event at window point (lx, ly).

    C{kind} is "press", "release" or "motion"; C{num} the X button number.
    A press is preceded by a move, since the host presses at its pointer.
    """
    mods = modifiers_for_state(state)
    x, y = m.to_remote(lx, ly)
    if kind == "motion":
        return [pb.MouseEvent(mask=encode_mask(MouseType.MOVE), x=x, y=y)]
    notch = mouse_x_wheel(num)
    if notch is not None:
        if kind != "press":
            return []
        return [
            pb.MouseEvent(
                mask=encode_mask(MouseType.WHEEL),
                x=notch[0],
                y=notch[1],
                modifiers=mods,  # type: ignore[arg-type]
            )
        ]
    button = mouse_x_button(num)
    if button is None:
        return []
    t = MouseType.DOWN if kind == "press" else MouseType.UP
    out = [pb.MouseEvent(mask=encode_mask(MouseType.MOVE), x=x, y=y)] if kind == "press" else []
    out.append(
        pb.MouseEvent(mask=encode_mask(t, button), x=x, y=y, modifiers=mods)  # type: ignore[arg-type]
    )
    return out


def is_final(reason: str) -> bool:
    return any(reason.startswith(r) for r in FINAL_REASONS)


def decode_cursor(shape: pb.CursorData) -> Image.Image | None:
    """The RGBA image of a C{CursorData} (zstd RGBA), or C{None} if damaged."""
    if shape.width <= 0 or shape.height <= 0 or shape.width * shape.height > 256 * 256:
        return None
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            shape.colors, max_output_size=shape.width * shape.height * 4
        )
    except zstandard.ZstdError:
        return None
    if len(raw) != shape.width * shape.height * 4:
        return None
    return Image.frombytes("RGBA", (shape.width, shape.height), raw)


def fmt_rate(bits_per_s: float) -> str:
    if bits_per_s >= 1e6:
        return f"{bits_per_s / 1e6:.1f} Mbit/s"
    return f"{bits_per_s / 1e3:.0f} kbit/s"


# -- the session, with notifications -------------------------------------------


class WindowSession(ViewerSession):
    """L{ViewerSession} that also tells the window what arrived."""

    def __init__(self, *a: Any, listener: ViewerApp, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.listener = listener

    def handshakeCompleted(self) -> None:
        super().handshakeCompleted()
        self.listener.phase("login")

    def message_received(self, msg: pb.Message) -> None:
        super().message_received(msg)
        kind = msg.WhichOneof("union")
        if kind in ("cursor_position", "cursor_data"):
            self.listener.cursor_changed(kind == "cursor_data")
        elif kind in ("clipboard", "multi_clipboards"):
            self.listener.remote_clipboard_changed()
        elif kind == "message_box":
            self.listener.notice_changed()


@dataclass
class FrameCounters:
    received: int = 0
    shown: int = 0
    draw_seconds: float = 0.0


class ErrorDialog:
    """A non-modal message window (a modal one would stall the reactor)."""

    def __init__(
        self,
        root: tk.Misc,
        title: str,
        message: str,
        buttons: list[tuple[str, Callable[[], None]]],
    ) -> None:
        self.top = tk.Toplevel(root)
        self.top.title(f"{TITLE}: {title}")
        self.top.transient(root.winfo_toplevel())
        tk.Label(self.top, text=title, font=("TkDefaultFont", 12, "bold")).pack(
            padx=16, pady=(12, 4), anchor="w"
        )
        tk.Label(self.top, text=message, justify="left", wraplength=460).pack(
            padx=16, pady=4, anchor="w"
        )
        row = tk.Frame(self.top)
        row.pack(padx=12, pady=12, anchor="e")
        for label, fn in buttons:

            def press(fn: Callable[[], None] = fn) -> None:
                self.close()
                fn()

            tk.Button(row, text=label, command=press).pack(side="left", padx=4)
        self.top.protocol("WM_DELETE_WINDOW", self.close)

    def close(self) -> None:
        try:
            self.top.destroy()
        except tk.TclError:
            pass


# -- the window ----------------------------------------------------------------


class ViewerApp:
    """One window showing one remote desktop (or the connect dialog)."""

    def __init__(
        self,
        reactor: Any,
        root: tk.Tk,
        args: argparse.Namespace,
        cfg: ViewerConfig,
        cfg_path: Path | None,
    ) -> None:
        self.reactor = reactor
        self.root = root
        self.args = args
        self.cfg = cfg
        self.cfg_path = cfg_path
        self.host_key = HostKey(args.host_key or cfg.host_key or "F8")
        self.session: WindowSession | None = None
        self.password = ""
        self.path = ""
        self.connected = False
        self.ever_connected = False
        self.user_closed = False
        self.counters = FrameCounters()
        self.held = HeldKeys()
        self.mapping: ViewMapping | None = None
        self._pending: DecodedFrame | None = None
        self._shown: DecodedFrame | None = None
        self._draw_call: IDelayedCall | None = None
        self._scaling = False
        self._view_only_shown = False
        self._photo: ImageTk.PhotoImage | None = None
        self._photo_size = (0, 0)
        self._cursor_photo: ImageTk.PhotoImage | None = None
        self._cursor_img: Image.Image | None = None
        self._cursor_scale = 0.0
        self._local_pointer: tuple[float, float] | None = None
        self._local_moved_at = 0.0
        self._last_move: tuple[int, int] | None = None
        self._phase = ""
        self._phase_at = 0.0
        self._attempt_started = 0.0
        self._reconnect_at: float | None = None
        self._reconnect_call: IDelayedCall | None = None
        self._reconnect_tries = 0
        self._rate_sample: tuple[float, int, int, int] | None = None
        self._rates = (0.0, 0.0, 0.0)  # fps received, fps shown, bits/s
        self._last_clip_local: str | None = None
        self._dialog: Any = None
        self._error: ErrorDialog | None = None
        self._logged_mapping: ViewMapping | None = None
        self._key_frames_seen = 0

        self.scale_var = tk.StringVar(root, args.scale or cfg.scale or "fit")
        self.quality_var = tk.StringVar(root, args.quality or cfg.quality or "balanced")
        self.fps_var = tk.IntVar(root, args.fps if args.fps is not None else cfg.fps)
        self.clip_var = tk.BooleanVar(root, cfg.clipboard_sync)
        self.view_only_var = tk.BooleanVar(root, False)
        self.display_var = tk.IntVar(root, 0)
        self.fullscreen_var = tk.BooleanVar(root, False)
        self._build()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(TICK, now=False)
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._pinger.start(2.0, now=False)

    # -- widgets -----------------------------------------------------------

    def _build(self) -> None:
        root = self.root
        root.title(TITLE)
        root.geometry(self.args.geometry or "1280x800")
        root.protocol("WM_DELETE_WINDOW", self.quit)
        menubar = tk.Menu(root)
        root.config(menu=menubar)
        conn = tk.Menu(menubar, tearoff=False)
        conn.add_command(label="Connect…", underline=0, command=self.show_connect_dialog)
        conn.add_command(label="Reconnect", underline=0, command=self.reconnect_now)
        conn.add_command(label="Disconnect", underline=0, command=self.disconnect)
        conn.add_separator()
        conn.add_command(label="Quit", underline=0, command=self.quit)
        menubar.add_cascade(label="Connection", underline=0, menu=conn)
        self.session_menu = tk.Menu(menubar, tearoff=False)
        self._fill_session_menu(self.session_menu)
        menubar.add_cascade(label="Session", underline=0, menu=self.session_menu)
        keys = tk.Menu(menubar, tearoff=False)
        self._fill_keys_menu(keys)
        menubar.add_cascade(label="Keys", underline=0, menu=keys)
        view = tk.Menu(menubar, tearoff=False)
        self._fill_view_menu(view)
        menubar.add_cascade(label="View", underline=0, menu=view)
        self.menubar = menubar

        # The popup behind the host key: everything, with one-letter
        # underlines so that F8 then a letter works without the mouse.
        self.popup = tk.Menu(root, tearoff=False)
        self._fill_session_menu(self.popup)
        self.popup.add_separator()
        pk = tk.Menu(self.popup, tearoff=False)
        self._fill_keys_menu(pk)
        self.popup.add_cascade(label="Send keys", underline=5, menu=pk)
        self.popup.add_command(
            # Underline the key's last character: "Send F8" -> "8".
            label=f"Send {self.host_key.keysym}",
            underline=len("Send ") + len(self.host_key.keysym) - 1,
            command=self.send_host_key,
        )
        pv = tk.Menu(self.popup, tearoff=False)
        self._fill_view_menu(pv)
        self.popup.add_cascade(label="View", underline=0, menu=pv)
        self.popup.add_separator()
        self.popup.add_command(label="Disconnect", underline=0, command=self.disconnect)
        self.popup.add_command(label="Exit viewer", underline=1, command=self.quit)

        body = tk.Frame(root)
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
        self.body = body
        self.image_item = self.canvas.create_image(0, 0, anchor="nw")
        self.cursor_item = self.canvas.create_image(0, 0, anchor="nw", state="hidden")
        self.overlay = self.canvas.create_text(
            0, 0, text="", fill="#e0e0e0", font=("TkDefaultFont", 14), justify="center"
        )

        bar = tk.Frame(root, relief="sunken", borderwidth=1)
        bar.pack(side="bottom", fill="x")
        self.status = tk.Label(bar, text="", anchor="w")
        self.status.pack(side="left", fill="x", expand=True)
        self.reconnect_button = tk.Button(
            bar, text="Reconnect now", command=self.reconnect_now, pady=0
        )
        self.cancel_button = tk.Button(bar, text="Cancel", command=self.cancel_reconnect, pady=0)
        self.view_only_label = tk.Label(bar, text="VIEW ONLY", fg="white", bg="#b03030")
        self.stats_label = tk.Label(bar, text="", anchor="e")
        self.stats_label.pack(side="right")

        c = self.canvas
        c.bind("<Configure>", self._on_configure)
        c.bind("<Motion>", self._on_motion)
        c.bind("<ButtonPress>", self._on_press)
        c.bind("<ButtonRelease>", self._on_release)
        c.bind("<MouseWheel>", self._on_mouse_wheel)
        c.bind("<KeyPress>", self._on_key_press)
        c.bind("<KeyRelease>", self._on_key_release)
        c.bind("<FocusOut>", self._on_focus_out)
        c.bind("<FocusIn>", self._on_focus_in)
        c.bind("<Leave>", self._on_leave)
        c.bind("<Enter>", self._on_enter)
        self._apply_scale_mode()

    def _on_configure(self, e: tk.Event[Any]) -> None:
        self._schedule_draw()

    def _fill_session_menu(self, m: tk.Menu) -> None:
        mon = tk.Menu(m, tearoff=False, postcommand=lambda: self._fill_monitors(mon))
        m.add_cascade(label="Monitor", underline=0, menu=mon)
        q = tk.Menu(m, tearoff=False)
        choices = (("Speed", "speed", 0), ("Balanced", "balanced", 0), ("Best", "best", 3))
        for label, value, u in choices:
            q.add_radiobutton(
                label=label,
                underline=u,
                value=value,
                variable=self.quality_var,
                command=self.apply_quality,
            )
        m.add_cascade(label="Quality", underline=0, menu=q)
        f = tk.Menu(m, tearoff=False)
        for fps in FPS_CAPS:
            f.add_radiobutton(
                label="Host default" if fps == 0 else f"{fps} fps",
                value=fps,
                variable=self.fps_var,
                command=self.apply_fps,
            )
        m.add_cascade(label="Frame rate cap", underline=6, menu=f)
        m.add_command(label="Request key frame", underline=12, command=self.request_key_frame)
        m.add_checkbutton(
            label="Clipboard sync",
            underline=0,
            variable=self.clip_var,
            command=self._clipboard_toggled,
        )
        m.add_checkbutton(
            label="View only (send no input)", underline=5, variable=self.view_only_var
        )
        m.add_command(label="Screenshot", underline=0, command=self.screenshot)
        m.add_command(label="Screenshot as…", underline=11, command=self.screenshot_as)

    def _fill_keys_menu(self, m: tk.Menu) -> None:
        for label, combo in SEND_KEYS:
            m.add_command(label=label, command=functools.partial(self.send_combo, combo))

    def _fill_view_menu(self, m: tk.Menu) -> None:
        m.add_radiobutton(
            label="Scale to fit",
            underline=0,
            value="fit",
            variable=self.scale_var,
            command=self._apply_scale_mode,
        )
        m.add_radiobutton(
            label="1:1 (scroll)",
            underline=0,
            value="1:1",
            variable=self.scale_var,
            command=self._apply_scale_mode,
        )
        m.add_checkbutton(
            label="Full screen",
            underline=0,
            variable=self.fullscreen_var,
            command=self._apply_fullscreen,
        )

    def _fill_monitors(self, m: tk.Menu) -> None:
        m.delete(0, "end")
        info = self.session.peer_info if self.session is not None else None
        if info is None or not info.displays:
            m.add_command(label="(not connected)", state="disabled")
            return
        for i, d in enumerate(info.displays):
            m.add_radiobutton(
                label=f"{i + 1}: {d.name or 'monitor'} {d.width}×{d.height}",
                underline=0,
                value=i,
                variable=self.display_var,
                command=functools.partial(self.switch_display, i),
            )

    # -- scale and scroll ------------------------------------------------------

    def _apply_scale_mode(self) -> None:
        one = self.scale_var.get() == "1:1"
        if one:
            self.hbar.grid(row=1, column=0, sticky="ew")
            self.vbar.grid(row=0, column=1, sticky="ns")
        else:
            self.hbar.grid_remove()
            self.vbar.grid_remove()
            self.canvas.xview_moveto(0)
            self.canvas.yview_moveto(0)
        self.cfg.scale = self.scale_var.get()
        self._schedule_draw()

    def _apply_fullscreen(self) -> None:
        try:
            self.root.attributes("-fullscreen", self.fullscreen_var.get())
        except tk.TclError:
            pass

    def _xview(self, *a: Any) -> None:
        self.canvas.xview(*a)
        self._schedule_draw()

    def _yview(self, *a: Any) -> None:
        self.canvas.yview(*a)
        self._schedule_draw()

    def _compute_mapping(self, frame: DecodedFrame) -> ViewMapping:
        origin = (0, 0)
        s = self.session
        if s is not None and s.peer_info is not None and s.peer_info.displays:
            idx = s.display if 0 <= s.display < len(s.peer_info.displays) else 0
            d = s.peer_info.displays[idx]
            origin = (d.x, d.y)
        remote = Rect(origin[0], origin[1], frame.width, frame.height)
        cw, ch = self.canvas.winfo_width(), self.canvas.winfo_height()
        mode = self.scale_var.get()
        if mode == "1:1":
            # In 1:1 the canvas scrolls: items live at canvas coordinates
            # and the mapping works on canvas (not window) coordinates.
            return view_mapping(remote, "1:1", max(cw, frame.width), max(ch, frame.height))
        return view_mapping(remote, "fit", cw, ch)

    # -- frames ------------------------------------------------------------

    def on_frame(self, frame: DecodedFrame) -> None:
        self.counters.received += 1
        self._pending = frame
        self._schedule_draw()

    def _schedule_draw(self) -> None:
        # Coalesce: while a draw is pending, newer frames replace older ones,
        # so a slow redraw drops frames instead of building a backlog.
        if self._draw_call is None or not self._draw_call.active():
            self._draw_call = self.reactor.callLater(0, self._draw)

    def _draw(self) -> None:
        self._draw_call = None
        if self._scaling:
            return  # the scaling in flight draws again when it is done
        frame = self._pending or self._shown
        if frame is None:
            self._place_overlay()
            return
        new = self._pending is not None
        self._pending = None
        t0 = time.perf_counter()
        m = self._compute_mapping(frame)
        size = drawn_size(m)
        if size == frame.image.size:
            self._show(frame, m, frame.image, new, t0)
            return
        # Scaling a 1080p picture costs 10-20 ms; done in a worker thread
        # (Pillow releases the GIL) it overlaps with decoding the next frame
        # on the reactor thread instead of adding to it.  BOX (area
        # average) is both faster and sharper for text than BILINEAR when
        # shrinking.
        resample = Image.Resampling.BOX if m.scale < 1 else Image.Resampling.BILINEAR
        self._scaling = True
        d = deferToThread(frame.image.resize, size, resample)

        def scaled(img: Image.Image) -> None:
            self._scaling = False
            try:
                self._show(frame, m, img, new, t0)
            except tk.TclError:
                return  # window closed meanwhile
            if self._pending is not None:
                self._schedule_draw()

        def failed(f: Failure) -> None:
            self._scaling = False
            _log.failure("Scaling a frame failed", f)

        d.addCallbacks(scaled, failed)

    def _show(
        self, frame: DecodedFrame, m: ViewMapping, img: Image.Image, new: bool, t0: float
    ) -> None:
        """Put the (scaled) picture on the canvas; Tk thread only."""
        self.mapping = m
        size = img.size
        if self._photo is None or self._photo_size != size:
            self._photo = ImageTk.PhotoImage(img)
            self._photo_size = size
            self.canvas.itemconfigure(self.image_item, image=self._photo)
        else:
            self._photo.paste(img)
        self.canvas.coords(self.image_item, round(m.offset_x), round(m.offset_y))
        if self.scale_var.get() == "1:1":
            self.canvas.configure(scrollregion=(0, 0, size[0], size[1]))
        else:
            self.canvas.configure(scrollregion=(0, 0, 0, 0))
        self._shown = frame
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
        self._draw_cursor()
        self._place_overlay()

    # -- remote cursor -------------------------------------------------------

    def cursor_changed(self, shape: bool) -> None:
        if shape and self.session is not None and self.session.cursor_shape is not None:
            self._cursor_img = decode_cursor(self.session.cursor_shape)
            self._cursor_scale = 0.0
            # The remote cursor is drawn in the picture: hide the local one
            # over it so the person sees one pointer, shaped as on the host.
            try:
                self.canvas.configure(cursor="none" if self._cursor_img else "")
            except tk.TclError:
                self.canvas.configure(cursor="dot")
        self._draw_cursor()

    def _draw_cursor(self) -> None:
        s, m, img = self.session, self.mapping, self._cursor_img
        if s is None or m is None or img is None or not self.connected:
            self.canvas.itemconfigure(self.cursor_item, state="hidden")
            return
        shape = s.cursor_shape
        assert shape is not None
        scale = min(1.0, m.scale)
        if self._cursor_photo is None or self._cursor_scale != scale:
            shown = img
            if scale < 1.0:
                shown = img.resize(
                    (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                    Image.Resampling.BILINEAR,
                )
            self._cursor_photo = ImageTk.PhotoImage(shown)
            self._cursor_scale = scale
            self.canvas.itemconfigure(self.cursor_item, image=self._cursor_photo)
        now = self.reactor.seconds()
        if self._local_pointer is not None and now - self._local_moved_at < LOCAL_CURSOR_HOLD:
            lx, ly = self._local_pointer
        elif s.cursor is not None:
            lx, ly = m.to_local(*s.cursor)
        else:
            self.canvas.itemconfigure(self.cursor_item, state="hidden")
            return
        self.canvas.coords(
            self.cursor_item, round(lx - shape.hotx * scale), round(ly - shape.hoty * scale)
        )
        self.canvas.itemconfigure(self.cursor_item, state="normal")
        self.canvas.tag_raise(self.cursor_item)

    # -- input -------------------------------------------------------------

    def _input_allowed(self) -> bool:
        return (
            self.session is not None
            and self.connected
            and self.mapping is not None
            and not self.view_only_var.get()
        )

    def _canvas_point(self, e: tk.Event[Any]) -> tuple[float, float]:
        return self.canvas.canvasx(e.x), self.canvas.canvasy(e.y)

    def _send_mouse(self, events: list[pb.MouseEvent]) -> None:
        assert self.session is not None
        for ev in events:
            self.session.send_mouse(ev.mask, ev.x, ev.y, list(ev.modifiers))

    def _on_motion(self, e: tk.Event[Any]) -> None:
        lx, ly = self._canvas_point(e)
        self._local_pointer = (lx, ly)
        self._local_moved_at = self.reactor.seconds()
        if not self._input_allowed():
            return
        assert self.mapping is not None
        pos = self.mapping.to_remote(lx, ly)
        if pos == self._last_move:
            return  # at reduced scale many window pixels map to one remote pixel
        self._last_move = pos
        self._send_mouse(mouse_events("motion", 0, self.mapping, lx, ly, int(e.state)))
        self._draw_cursor()

    def _on_press(self, e: tk.Event[Any]) -> str:
        self.canvas.focus_force()
        if self._input_allowed():
            assert self.mapping is not None
            lx, ly = self._canvas_point(e)
            self._last_move = self.mapping.to_remote(lx, ly)
            self._send_mouse(mouse_events("press", int(e.num), self.mapping, lx, ly, int(e.state)))
        return "break"

    def _on_release(self, e: tk.Event[Any]) -> str:
        if self._input_allowed():
            assert self.mapping is not None
            lx, ly = self._canvas_point(e)
            self._send_mouse(
                mouse_events("release", int(e.num), self.mapping, lx, ly, int(e.state))
            )
        return "break"

    def _on_mouse_wheel(self, e: tk.Event[Any]) -> str:
        # Windows and macOS Tk report the wheel as <MouseWheel> with a delta
        # (120 per notch on Windows, 1 on macOS); X11 uses buttons 4-7.
        if self._input_allowed() and e.delta:
            assert self.session is not None
            step = e.delta // 120 if abs(e.delta) >= 120 else e.delta
            self.session.send_mouse(encode_mask(MouseType.WHEEL), 0, step)
        return "break"

    def _on_key_press(self, e: tk.Event[Any]) -> str:
        # "break" everywhere: Tk's class and "all" bindings (Alt+letter menu
        # traversal, F10, Tab focus traversal) must not see remote input.
        if self.host_key.matches(e.keysym):
            self.open_popup()
            return "break"
        if not self._input_allowed():
            return "break"
        k = key_for_tk_event(e.keysym, e.char, int(e.keysym_num), int(e.state), down=True)
        if k is None:
            _log.debug("Key {keysym} has no RustDesk equivalent; not sent", keysym=e.keysym)
            return "break"
        self.held.down(int(e.keycode), k)
        assert self.session is not None
        self.session.send_key(to_key_event(k))
        return "break"

    def _on_key_release(self, e: tk.Event[Any]) -> str:
        up = self.held.up(int(e.keycode))
        if up is not None and self.session is not None and self.connected:
            self.session.send_key(to_key_event(up))
        return "break"

    def _release_held(self) -> None:
        ups = self.held.release_all()
        if self.session is not None and self.connected:
            for k in ups:
                self.session.send_key(to_key_event(k))

    def _on_focus_out(self, e: tk.Event[Any]) -> None:
        # A key released while another window has the focus never reaches
        # us: release everything now rather than leave it held on the host.
        self._release_held()

    def _on_focus_in(self, e: tk.Event[Any]) -> None:
        self._push_local_clipboard()

    def _on_enter(self, e: tk.Event[Any]) -> None:
        # Coming back from another window (where something may have been
        # copied) usually passes the pointer over the picture first.
        self._push_local_clipboard()

    def _on_leave(self, e: tk.Event[Any]) -> None:
        self._local_pointer = None
        self._draw_cursor()

    def open_popup(self) -> None:
        self._release_held()
        x = self.root.winfo_pointerx()
        y = self.root.winfo_pointery()
        if not (
            self.root.winfo_rootx() <= x < self.root.winfo_rootx() + self.root.winfo_width()
            and self.root.winfo_rooty() <= y < self.root.winfo_rooty() + self.root.winfo_height()
        ):
            x, y = self.canvas.winfo_rootx() + 40, self.canvas.winfo_rooty() + 40
        # On X11 tk_popup returns at once and the menu keeps a grab and the
        # focus until it is dismissed: keys typed meanwhile work the menu.
        self.popup.tk_popup(x, y, 0)

    def send_host_key(self) -> None:
        if self._input_allowed():
            assert self.session is not None
            self.session.send_key(to_key_event(self.host_key.send_event()))

    def send_combo(self, combo: str) -> None:
        if self._input_allowed():
            assert self.session is not None
            self.session.send_key(combo_event(combo))
            _log.info("Sent {combo}", combo=combo)
        self.canvas.focus_force()

    # -- session menu actions ----------------------------------------------

    def apply_quality(self) -> None:
        q = self.quality_var.get()
        self.cfg.quality = q
        if self.session is not None and self.connected:
            self.session.set_option(image_quality=QUALITIES[q])
            _log.info("Quality set to {quality}", quality=q)
            self.flash(f"Quality: {q}")

    def apply_fps(self) -> None:
        fps = int(self.fps_var.get())
        self.cfg.fps = fps
        if self.session is not None and self.connected and fps:
            self.session.set_option(custom_fps=fps)
            _log.info("Frame rate cap set to {fps}", fps=fps)
            self.flash(f"Frame rate cap: {fps} fps")

    def request_key_frame(self) -> None:
        if self.session is not None and self.connected:
            self.session.refresh()
            _log.info("Key frame requested")
            self.flash("Key frame requested")

    def switch_display(self, index: int) -> None:
        if self.session is not None and self.connected:
            self.session.switch_display(index)
            _log.info("Switching to monitor {index}", index=index)

    def _screenshot_dir(self) -> Path:
        d = self.args.screenshot_dir or self.cfg.screenshot_dir
        if d:
            return Path(d).expanduser()
        pictures = Path.home() / "Pictures"
        return pictures if pictures.is_dir() else Path.home()

    def screenshot(self) -> Path | None:
        """Save the last full-resolution frame with a timestamped name."""
        frame = self._shown or (self.session.latest if self.session else None)
        if frame is None:
            self.flash("No picture yet")
            return None
        d = self._screenshot_dir()
        d.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        peer = (self.args.target or "host").replace("/", "_").replace(":", "_")
        path = d / f"litedesk-{peer}-{stamp}.png"
        n = 1
        while path.exists():
            n += 1
            path = d / f"litedesk-{peer}-{stamp}-{n}.png"
        return self._save(frame, path)

    def screenshot_as(self) -> None:
        frame = self._shown
        if frame is None:
            self.flash("No picture yet")
            return
        # The one blocking dialog: the reactor waits while it is open.
        name = filedialog.asksaveasfilename(
            parent=self.root,
            defaultextension=".png",
            initialdir=str(self._screenshot_dir()),
            filetypes=[("PNG", "*.png"), ("JPEG", "*.jpg")],
        )
        if name:
            self._save(frame, Path(name))

    def _save(self, frame: DecodedFrame, path: Path) -> Path | None:
        try:
            frame.image.save(path)
        except (OSError, ValueError) as e:
            self.show_error("cannot save screenshot", f"{path}: {e}", final=False)
            return None
        _log.info("Screenshot saved to {path}", path=str(path))
        self.flash(f"Screenshot saved to {path}")
        return path

    # -- clipboard ---------------------------------------------------------

    def _clipboard_toggled(self) -> None:
        self.cfg.clipboard_sync = bool(self.clip_var.get())
        if self.clip_var.get():
            self._push_local_clipboard()

    def remote_clipboard_changed(self) -> None:
        s = self.session
        if s is None or not self.clip_var.get() or s.remote_clipboard is None:
            return
        text = s.remote_clipboard
        self._last_clip_local = text  # do not echo it back
        self.root.clipboard_clear()
        self.root.clipboard_append(text)
        _log.info("Clipboard from the host ({n} characters)", n=len(text))

    def _push_local_clipboard(self) -> None:
        if self.session is None or not self.connected or not self.clip_var.get():
            return
        try:
            text = self.root.clipboard_get()
        except tk.TclError:
            return  # empty, or not text
        if text and text != self._last_clip_local:
            self._last_clip_local = text
            self.session.set_clipboard(text)
            _log.info("Clipboard sent to the host ({n} characters)", n=len(text))

    def notice_changed(self) -> None:
        s = self.session
        if s is not None and s.view_only_notice and not self._view_only_shown:
            self._view_only_shown = True
            self.view_only_label.pack(side="right", padx=4)
            self.flash(f"Host: {s.view_only_notice}")
            _log.info("View only: {notice}", notice=s.view_only_notice)

    # -- connecting ----------------------------------------------------------

    def start(self) -> None:
        """Connect if the command line says to whom, else ask."""
        a = self.args
        if not a.rendezvous and self.cfg.server and a.target and not connection.is_direct(a.target):
            a.rendezvous = self.cfg.server
        if not a.key and self.cfg.key:
            a.key = self.cfg.key
        try:
            self.password = connection.read_password(a)
        except connection.UsageFailure:
            self.password = ""
        except OSError as e:
            self.show_error("cannot read the password file", str(e), final=True)
            return
        needs_server = (
            a.target and not connection.is_direct(a.target) and not (a.rendezvous and a.key)
        )
        if not a.target or not self.password or needs_server:
            self.show_connect_dialog()
            return
        self.connect()

    def show_connect_dialog(self) -> None:
        from litedesk.viewer.connect_dialog import ConnectDialog

        if self._dialog is not None and self._dialog.alive():
            self._dialog.top.lift()
            return
        self._dialog = ConnectDialog(self, self.on_dialog_connect)

    def on_dialog_connect(
        self, target: str, password: str, server: str, key: str, remember: bool
    ) -> None:
        self.args.target = target
        self.args.rendezvous = server or None
        self.args.key = key or None
        self.password = password
        self.cfg.remember = remember
        if remember:
            self.cfg.server, self.cfg.key = server, key
        else:
            self.cfg.server, self.cfg.key = "", ""
        self._save_config()
        self.close_session()
        self.ever_connected = False
        self._reconnect_tries = 0
        self.connect()

    def connect(self) -> None:
        self.cancel_reconnect(silent=True)
        self.user_closed = False
        a = self.args
        self.root.title(f"{a.target} - {TITLE}")
        self._attempt_started = self.reactor.seconds()
        self.phase("rendezvous" if not connection.is_direct(a.target) else "direct")
        session = WindowSession(
            self.reactor,
            a.target,
            self.password,
            codec=a.codec,
            image_quality=QUALITIES.get(self.quality_var.get(), pb.Balanced),
            custom_fps=int(self.fps_var.get()),
            on_frame=self.on_frame,
            listener=self,
        )
        self.session = session
        self.connected = False
        self.view_only_label.pack_forget()
        self._view_only_shown = False
        d = ensureDeferred(self._attempt(session))
        d.addErrback(lambda f: _log.failure("Connection attempt crashed", f))

    def phase(self, what: str) -> None:
        self._phase = what
        self._phase_at = self.reactor.seconds()
        self._update_status()

    async def _attempt(self, session: WindowSession) -> None:
        a = self.args
        try:
            self.path = await connection.connect(self.reactor, a, session, progress=self.phase)
            if session is not self.session:
                session.disconnect()
                return
            self.phase("tls")
            info = await connection.with_timeout(
                self.reactor, session.logged_in, a.timeout, "the login"
            )
        except (ConnectError, SessionError, connection.UsageFailure) as e:
            if session is self.session:
                self._attempt_failed(e)
            return
        except Exception as e:
            # Anything else (a bad server address, a socket error) must still
            # end in a dialog, not in "Connecting…" forever.
            _log.failure("Unexpected error while connecting")
            if session is self.session:
                self._attempt_failed(ConnectError("cannot connect", f"{type(e).__name__}: {e}"))
            return
        if session is not self.session:
            return
        self.connected = True
        self.ever_connected = True
        self._logged_mapping = None
        self._key_frames_seen = 0
        self._reconnect_tries = 0
        self._phase = ""
        self.display_var.set(session.display)
        self._rate_sample = None
        _log.info(
            "Connected to {peer} via {path} ({n} monitor(s))",
            peer=a.target,
            path=self.path,
            n=len(info.displays),
        )
        self.cfg.add_recent(a.target)
        if self.cfg.remember and a.rendezvous and a.key:
            self.cfg.server, self.cfg.key = a.rendezvous, a.key
        self._save_config()
        session.ended.addCallback(lambda _: self._session_ended(session))
        self.canvas.focus_force()
        self._push_local_clipboard()
        self._update_status()

    def _attempt_failed(self, e: Exception) -> None:
        reason = getattr(e, "reason", None) or str(e)
        _log.warn("Connection failed: {error}", error=str(e))
        self.connected = False
        if self.session is not None and self.session.transport is not None:
            self.session.transport.loseConnection()
        if self.ever_connected and not is_final(reason):
            self._schedule_reconnect(str(e))
            return
        self.show_error(reason, str(e), final=is_final(reason))

    def _session_ended(self, session: WindowSession) -> None:
        if session is not self.session:
            return
        self.connected = False
        self.held = HeldKeys()
        err = session.error
        self._draw_cursor()
        if self.user_closed:
            self._set_status("Disconnected")
            return
        text = str(err) if err is not None else "disconnected"
        _log.warn("Session ended: {error}", error=text)
        if err is not None and is_final(err.reason):
            self.show_error(err.reason, text, final=True)
            return
        self._schedule_reconnect(text)

    def _schedule_reconnect(self, why: str) -> None:
        delay = RECONNECT_DELAYS[min(self._reconnect_tries, len(RECONNECT_DELAYS) - 1)]
        self._reconnect_tries += 1
        self._reconnect_reason = why
        self._reconnect_at = self.reactor.seconds() + delay
        self._reconnect_call = self.reactor.callLater(delay, self.reconnect_now)
        _log.info("Reconnecting in {delay} s ({why})", delay=delay, why=why)
        self.reconnect_button.pack(side="left", padx=2)
        self.cancel_button.pack(side="left", padx=2)
        self._update_status()

    def reconnect_now(self) -> None:
        if not self.args.target:
            self.show_connect_dialog()
            return
        self.cancel_reconnect(silent=True)
        self.close_session()
        self.connect()

    def cancel_reconnect(self, silent: bool = False) -> None:
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        self._reconnect_at = None
        self.reconnect_button.pack_forget()
        self.cancel_button.pack_forget()
        if not silent:
            self._set_status("Not connected (reconnect cancelled)")

    def close_session(self) -> None:
        s, self.session = self.session, None
        self.connected = False
        if s is not None and s.transport is not None:
            s.disconnect()

    def disconnect(self) -> None:
        self.user_closed = True
        self.cancel_reconnect(silent=True)
        self._release_held()
        s = self.session
        self.connected = False
        if s is not None and s.transport is not None:
            s.disconnect()
        self._set_status("Disconnected")
        _log.info("Disconnected by the user")

    def quit(self) -> None:
        self.user_closed = True
        self._release_held()
        self.cancel_reconnect(silent=True)
        self._save_config()
        if self.session is not None and self.session.transport is not None:
            self.session.disconnect()
        # Give the close message a moment to leave before the reactor stops.
        self.reactor.callLater(0.1, self.reactor.stop)

    def show_error(self, reason: str, detail: str, final: bool) -> None:
        if self._error is not None:
            self._error.close()
        self._set_status(f"Not connected: {detail}")
        buttons: list[tuple[str, Callable[[], None]]] = [
            ("Connect to…", self.show_connect_dialog),
            ("Quit", self.quit),
        ]
        if not final:
            buttons.insert(0, ("Try again", self.reconnect_now))
        elif reason.startswith("wrong password"):
            buttons.insert(0, ("Enter password…", self.show_connect_dialog))
        self._error = ErrorDialog(self.root, reason, detail, buttons)

    def _save_config(self) -> None:
        try:
            save_config(self.cfg, self.cfg_path)
        except OSError as e:
            _log.warn("Cannot save the viewer config: {error}", error=e)

    # -- status bar ------------------------------------------------------------

    def _set_status(self, text: str) -> None:
        self.status.configure(text=text)
        self._place_overlay()

    def flash(self, text: str) -> None:
        self._flash = (text, self.reactor.seconds() + 3.0)
        self._update_status()

    def _ping(self) -> None:
        if self.session is not None and self.connected:
            self.session.ping()

    def _tick(self) -> None:
        try:
            self._update_rates()
            self._update_status()
            if self._local_pointer is not None:
                self._draw_cursor()
        except tk.TclError:
            pass  # the window is going away

    def _update_rates(self) -> None:
        s = self.session
        if s is None or not self.connected:
            return
        if s.stats.key_frames != self._key_frames_seen:
            # Worth a log line: a key frame follows every quality change
            # and key-frame request, so it shows the host acted on them.
            self._key_frames_seen = s.stats.key_frames
            _log.info("Key frames received: {n}", n=s.stats.key_frames)
        now = self.reactor.seconds()
        sample = (now, self.counters.received, self.counters.shown, s.stats.bytes)
        prev = self._rate_sample
        if prev is None or now - prev[0] >= 1.0:
            if prev is not None:
                dt = now - prev[0]
                self._rates = (
                    (sample[1] - prev[1]) / dt,
                    (sample[2] - prev[2]) / dt,
                    (sample[3] - prev[3]) * 8 / dt,
                )
            self._rate_sample = sample

    def _update_status(self) -> None:
        now = self.reactor.seconds()
        s = self.session
        flash = getattr(self, "_flash", None)
        if self._reconnect_at is not None:
            left = max(0, round(self._reconnect_at - now))
            text = f"Connection lost ({self._reconnect_reason}); reconnecting in {left} s"
        elif s is not None and not self.connected and self._phase:
            elapsed = now - self._attempt_started
            text = f"Connecting to {self.args.target}: {PHASES.get(self._phase, self._phase)}…"
            text += f" ({elapsed:.1f} s)"
        elif s is not None and self.connected:
            text = f"Connected to {self.args.target} via {self.path}"
            if flash is not None and now < flash[1]:
                text = flash[0]
        else:
            text = self.status.cget("text")
            if flash is not None and now < flash[1]:
                text = flash[0]
        self.status.configure(text=text)
        if s is not None and self.connected:
            rtt = f"{s.stats.rtt_ms:.0f} ms" if s.stats.rtt_ms is not None else "–"
            rx, shown, bits = self._rates
            size = ""
            if self._shown is not None:
                size = f" · {self._shown.width}×{self._shown.height}"
            self.stats_label.configure(
                text=f"{self.path} · RTT {rtt} · {shown:.0f}/{rx:.0f} fps · {fmt_rate(bits)}{size}"
            )
        else:
            self.stats_label.configure(text="")
        self._place_overlay()

    def _place_overlay(self) -> None:
        c = self.canvas
        text = ""
        if not self.connected:
            text = self.status.cget("text")
        c.itemconfigure(self.overlay, text=text, width=max(200, c.winfo_width() - 40))
        c.coords(
            self.overlay,
            c.canvasx(c.winfo_width() / 2),
            c.canvasy(c.winfo_height() / 2),
        )
        c.tag_raise(self.overlay)


def _start_logging(args: argparse.Namespace) -> None:
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    observers: list[Any] = []
    if args.log_file:
        f = open(args.log_file, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
        observers.append(textFileLogObserver(f))
    if args.verbose:
        observers.append(textFileLogObserver(sys.stderr))
    pred = LogLevelFilterPredicate(LogLevel.debug if args.verbose else LogLevel.info)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(o, [pred]) for o in observers], redirectStandardIO=False
    )


def run_window(args: argparse.Namespace) -> int:
    """Open the window and run until it is closed; the process exit status."""
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        print("litedesk-viewer: no display (DISPLAY is unset); use --headless", file=sys.stderr)
        return 2
    _start_logging(args)
    from twisted.internet import reactor, tksupport

    try:
        root = tk.Tk(className="LiteDesk")
    except tk.TclError as e:
        print(f"litedesk-viewer: cannot open the window: {e}", file=sys.stderr)
        return 2
    cfg = load_config(args.config)
    try:
        app = ViewerApp(reactor, root, args, cfg, args.config)
    except ValueError as e:  # a bad --host-key
        print(f"litedesk-viewer: {e}", file=sys.stderr)
        return 2
    tksupport.install(root, ms=5)  # type: ignore[no-untyped-call]
    reactor.callWhenRunning(app.start)
    reactor.run()
    try:
        tksupport.uninstall()  # type: ignore[no-untyped-call]
        root.destroy()
    except (tk.TclError, AttributeError):
        pass
    return 0


__all__ = [
    "ViewerApp",
    "WindowSession",
    "drawn_size",
    "is_final",
    "mouse_events",
    "run_window",
    "view_mapping",
]
