"""The viewer's menus: the menu bar and the popup behind the host key (F8).

Both are filled by the same functions, so an entry exists in both or in
neither.  The popup's entries have one-letter underlines, so that F8 then a
letter works without the mouse.  What an entry does is the window's
business (L{MenuActions}); this module only lays the entries out.
"""

from __future__ import annotations

import functools
import tkinter as tk
from collections.abc import Sequence
from typing import Protocol

from litedesk.proto import message_pb2 as pb
from litedesk.viewer.keymap import SEND_KEYS, HostKey

FPS_CAPS = (0, 5, 10, 15, 20, 30, 60)


class MenuActions(Protocol):
    """The variables and commands the menu entries are bound to."""

    host_key: HostKey
    quality_var: tk.StringVar
    fps_var: tk.IntVar
    clip_var: tk.BooleanVar
    view_only_var: tk.BooleanVar
    scale_var: tk.StringVar
    fullscreen_var: tk.BooleanVar
    display_var: tk.IntVar

    def monitors(self) -> Sequence[pb.DisplayInfo]: ...
    def show_connect_dialog(self) -> None: ...
    def reconnect_now(self) -> None: ...
    def disconnect(self) -> None: ...
    def quit(self) -> None: ...
    def apply_quality(self) -> None: ...
    def apply_fps(self) -> None: ...
    def request_key_frame(self) -> None: ...
    def clipboard_toggled(self) -> None: ...
    def screenshot(self) -> object: ...
    def screenshot_as(self) -> None: ...
    def send_combo(self, combo: str) -> None: ...
    def send_host_key(self) -> None: ...
    def apply_scale_mode(self) -> None: ...
    def apply_fullscreen(self) -> None: ...
    def switch_display(self, index: int) -> None: ...
    def open_files(self) -> None: ...
    def open_forward(self) -> None: ...


def build_menubar(root: tk.Tk, a: MenuActions) -> tk.Menu:
    menubar = tk.Menu(root)
    root.config(menu=menubar)
    conn = tk.Menu(menubar, tearoff=False)
    conn.add_command(label="Connect…", underline=0, command=a.show_connect_dialog)
    conn.add_command(label="Reconnect", underline=0, command=a.reconnect_now)
    conn.add_command(label="Disconnect", underline=0, command=a.disconnect)
    conn.add_separator()
    conn.add_command(label="Quit", underline=0, command=a.quit)
    menubar.add_cascade(label="Connection", underline=0, menu=conn)
    session = tk.Menu(menubar, tearoff=False)
    fill_session_menu(session, a)
    menubar.add_cascade(label="Session", underline=0, menu=session)
    keys = tk.Menu(menubar, tearoff=False)
    fill_keys_menu(keys, a)
    menubar.add_cascade(label="Keys", underline=0, menu=keys)
    view = tk.Menu(menubar, tearoff=False)
    fill_view_menu(view, a)
    menubar.add_cascade(label="View", underline=0, menu=view)
    return menubar


def build_popup(root: tk.Tk, a: MenuActions) -> tk.Menu:
    """Everything, behind the host key."""
    popup = tk.Menu(root, tearoff=False)
    fill_session_menu(popup, a)
    popup.add_separator()
    pk = tk.Menu(popup, tearoff=False)
    fill_keys_menu(pk, a)
    popup.add_cascade(label="Send keys", underline=5, menu=pk)
    keysym = a.host_key.keysym
    popup.add_command(
        # Underline the key's last character: "Send F8" -> "8".
        label=f"Send {keysym}",
        underline=len("Send ") + len(keysym) - 1,
        command=a.send_host_key,
    )
    pv = tk.Menu(popup, tearoff=False)
    fill_view_menu(pv, a)
    popup.add_cascade(label="View", underline=0, menu=pv)
    popup.add_separator()
    popup.add_command(label="Disconnect", underline=0, command=a.disconnect)
    popup.add_command(label="Exit viewer", underline=1, command=a.quit)
    return popup


def open_popup(root: tk.Tk, canvas: tk.Canvas, popup: tk.Menu) -> None:
    """Show the popup at the pointer (inside the window) or near the picture's corner."""
    x = root.winfo_pointerx()
    y = root.winfo_pointery()
    if not (
        root.winfo_rootx() <= x < root.winfo_rootx() + root.winfo_width()
        and root.winfo_rooty() <= y < root.winfo_rooty() + root.winfo_height()
    ):
        x, y = canvas.winfo_rootx() + 40, canvas.winfo_rooty() + 40
    # On X11 tk_popup returns at once and the menu keeps a grab and the
    # focus until it is dismissed: keys typed meanwhile work the menu.
    popup.tk_popup(x, y, 0)


def fill_session_menu(m: tk.Menu, a: MenuActions) -> None:
    mon = tk.Menu(m, tearoff=False, postcommand=lambda: fill_monitors(mon, a))
    m.add_cascade(label="Monitor", underline=0, menu=mon)
    q = tk.Menu(m, tearoff=False)
    choices = (("Speed", "speed", 0), ("Balanced", "balanced", 0), ("Best", "best", 3))
    for label, value, u in choices:
        q.add_radiobutton(
            label=label,
            underline=u,
            value=value,
            variable=a.quality_var,
            command=a.apply_quality,
        )
    m.add_cascade(label="Quality", underline=0, menu=q)
    f = tk.Menu(m, tearoff=False)
    for fps in FPS_CAPS:
        f.add_radiobutton(
            label="Host default" if fps == 0 else f"{fps} fps",
            value=fps,
            variable=a.fps_var,
            command=a.apply_fps,
        )
    m.add_cascade(label="Frame rate cap", underline=6, menu=f)
    m.add_command(label="Request key frame", underline=12, command=a.request_key_frame)
    m.add_checkbutton(
        label="Clipboard sync",
        underline=0,
        variable=a.clip_var,
        command=a.clipboard_toggled,
    )
    m.add_checkbutton(label="View only (send no input)", underline=5, variable=a.view_only_var)
    m.add_command(label="Screenshot", underline=0, command=a.screenshot)
    m.add_command(label="Screenshot as…", underline=11, command=a.screenshot_as)
    m.add_separator()
    # Each opens its own session to the host beside this one (docs/protocol.rst §12, §13).
    m.add_command(label="Files…", underline=1, command=a.open_files)
    m.add_command(label="Forward a port…", underline=10, command=a.open_forward)


def fill_keys_menu(m: tk.Menu, a: MenuActions) -> None:
    for label, combo in SEND_KEYS:
        m.add_command(label=label, command=functools.partial(a.send_combo, combo))


def fill_view_menu(m: tk.Menu, a: MenuActions) -> None:
    m.add_radiobutton(
        label="Scale to fit",
        underline=0,
        value="fit",
        variable=a.scale_var,
        command=a.apply_scale_mode,
    )
    m.add_radiobutton(
        label="1:1 (scroll)",
        underline=0,
        value="1:1",
        variable=a.scale_var,
        command=a.apply_scale_mode,
    )
    m.add_checkbutton(
        label="Full screen",
        underline=0,
        variable=a.fullscreen_var,
        command=a.apply_fullscreen,
    )


def fill_monitors(m: tk.Menu, a: MenuActions) -> None:
    m.delete(0, "end")
    monitors = a.monitors()
    if not monitors:
        m.add_command(label="(not connected)", state="disabled")
        return
    for i, d in enumerate(monitors):
        m.add_radiobutton(
            label=f"{i + 1}: {d.name or 'monitor'} {d.width}×{d.height}",
            underline=0,
            value=i,
            variable=a.display_var,
            command=functools.partial(a.switch_display, i),
        )
