"""Keyboard and mouse on the canvas, sent to the host.

Every binding returns "break": Tk's class and "all" bindings (Alt+letter
menu traversal, F10, Tab focus traversal) must not see remote input.  The
host key (F8) opens the viewer's menu instead of reaching the host.  Keys
are released by keycode (L{HeldKeys}), so what a press sent is undone even
when the keysym changed in between, and everything held is released when
the window loses the focus.
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from litedesk.input.mouse import MouseType, encode_mask
from litedesk.proto import message_pb2 as pb
from litedesk.session.input_messages import key_to_proto as to_key_event
from litedesk.viewer.controller import ConnectionController
from litedesk.viewer.frame_view import FrameView
from litedesk.viewer.keymap import HeldKeys, HostKey, combo_event, key_for_tk_event
from litedesk.viewer.pointer import mouse_events, wheel_step

_log = Logger(namespace="litedesk.viewer.window")


class InputMapper:
    """Turns the canvas's Tk events into the host's input messages."""

    def __init__(
        self,
        reactor: Any,
        conn: ConnectionController,
        frames: FrameView,
        host_key: HostKey,
        view_only_var: tk.BooleanVar,
        open_menu: Callable[[], None],
        pointer_back: Callable[[], None],
    ) -> None:
        self.reactor = reactor
        self.conn = conn
        self.frames = frames
        self.canvas = frames.canvas
        self.host_key = host_key
        self.view_only_var = view_only_var
        self.open_menu = open_menu
        self.pointer_back = pointer_back  # the focus or pointer came back to us
        self.held = HeldKeys()
        self._last_move: tuple[int, int] | None = None
        c = self.canvas
        c.bind("<Motion>", self._on_motion)
        c.bind("<ButtonPress>", self._on_press)
        c.bind("<ButtonRelease>", self._on_release)
        c.bind("<MouseWheel>", self._on_mouse_wheel)
        c.bind("<KeyPress>", self._on_key_press)
        c.bind("<KeyRelease>", self._on_key_release)
        c.bind("<FocusOut>", self._on_focus_out)
        c.bind("<FocusIn>", lambda _e: self.pointer_back())
        # Coming back from another window (where something may have been
        # copied) usually passes the pointer over the picture first.
        c.bind("<Enter>", lambda _e: self.pointer_back())
        c.bind("<Leave>", lambda _e: self.frames.pointer_left())

    def input_allowed(self) -> bool:
        return (
            self.conn.session is not None
            and self.conn.connected
            and self.frames.mapping is not None
            and not self.view_only_var.get()
        )

    def session_lost(self) -> None:
        # Keys held on a session that is gone need no release.
        self.held = HeldKeys()

    def _canvas_point(self, e: tk.Event[Any]) -> tuple[float, float]:
        return self.canvas.canvasx(e.x), self.canvas.canvasy(e.y)

    def _send_mouse(self, events: list[pb.MouseEvent]) -> None:
        assert self.conn.session is not None
        for ev in events:
            self.conn.session.send_mouse(ev.mask, ev.x, ev.y, list(ev.modifiers))

    # -- mouse ---------------------------------------------------------------------

    def _on_motion(self, e: tk.Event[Any]) -> None:
        lx, ly = self._canvas_point(e)
        self.frames.pointer_moved(lx, ly)
        if not self.input_allowed():
            return
        m = self.frames.mapping
        assert m is not None
        pos = m.to_remote(lx, ly)
        if pos == self._last_move:
            return  # at reduced scale many window pixels map to one remote pixel
        self._last_move = pos
        self._send_mouse(mouse_events("motion", 0, m, lx, ly, int(e.state)))
        self.frames.draw_cursor()

    def _on_press(self, e: tk.Event[Any]) -> str:
        self.canvas.focus_force()
        if self.input_allowed():
            m = self.frames.mapping
            assert m is not None
            lx, ly = self._canvas_point(e)
            self._last_move = m.to_remote(lx, ly)
            self._send_mouse(mouse_events("press", int(e.num), m, lx, ly, int(e.state)))
        return "break"

    def _on_release(self, e: tk.Event[Any]) -> str:
        if self.input_allowed():
            m = self.frames.mapping
            assert m is not None
            lx, ly = self._canvas_point(e)
            self._send_mouse(mouse_events("release", int(e.num), m, lx, ly, int(e.state)))
        return "break"

    def _on_mouse_wheel(self, e: tk.Event[Any]) -> str:
        # Windows and macOS Tk report the wheel as <MouseWheel> with a delta;
        # X11 uses buttons 4-7 (handled as presses).
        if self.input_allowed() and e.delta:
            assert self.conn.session is not None
            self.conn.session.send_mouse(encode_mask(MouseType.WHEEL), 0, wheel_step(e.delta))
        return "break"

    # -- keyboard ------------------------------------------------------------------

    def _on_key_press(self, e: tk.Event[Any]) -> str:
        if self.host_key.matches(e.keysym):
            self.open_menu()
            return "break"
        if not self.input_allowed():
            return "break"
        k = key_for_tk_event(e.keysym, e.char, int(e.keysym_num), int(e.state), down=True)
        if k is None:
            _log.debug("Key {keysym} has no RustDesk equivalent; not sent", keysym=e.keysym)
            return "break"
        self.held.down(int(e.keycode), k)
        assert self.conn.session is not None
        self.conn.session.send_key(to_key_event(k))
        return "break"

    def _on_key_release(self, e: tk.Event[Any]) -> str:
        up = self.held.up(int(e.keycode))
        s = self.conn.session
        if up is not None and s is not None and self.conn.connected:
            s.send_key(to_key_event(up))
        return "break"

    def release_held(self) -> None:
        ups = self.held.release_all()
        s = self.conn.session
        if s is not None and self.conn.connected:
            for k in ups:
                s.send_key(to_key_event(k))

    def _on_focus_out(self, e: tk.Event[Any]) -> None:
        # A key released while another window has the focus never reaches
        # us: release everything now rather than leave it held on the host.
        self.release_held()

    def send_host_key(self) -> None:
        if self.input_allowed():
            assert self.conn.session is not None
            self.conn.session.send_key(to_key_event(self.host_key.send_event()))

    def send_combo(self, combo: str) -> None:
        if self.input_allowed():
            assert self.conn.session is not None
            self.conn.session.send_key(combo_event(combo))
            _log.info("Sent {combo}", combo=combo)
        self.canvas.focus_force()
