# -*- test-case-name: tests.test_viewer_window,tests.test_viewer_units -*-
"""The viewer window: C{litedesk-viewer ID} without C{--headless}.

Tk and Twisted share one thread: a LoopingCall handles Tk's pending events
every 5 ms (L{litedesk.viewer.tk_pump}: C{twisted.internet.tksupport}
without its XSync per call; docs/test-lab.rst section C measured this way
at 72-95 fps for a 720p stream, 32 fps at 1080p).  It is the
simplest of the three options measured there, needs no locking between the
network and the widgets, and keeps tests deterministic (one thread, a plain
C{reactor.run()}).  The price is that anything slow in a Tk callback delays
the network, so nothing here blocks: dialogs are non-modal Toplevels, frames
that arrive while one is being drawn replace each other (only the newest is
drawn), and the only blocking call is the "Save screenshot as" file dialog.

L{ViewerApp} assembles the parts, each in its own module: the connection
logic (L{litedesk.viewer.controller}, Tk-free, which uses
L{litedesk.viewer.connection} like the headless mode), the picture
(L{litedesk.viewer.frame_view}), keyboard and mouse
(L{litedesk.viewer.input_map}), the status bar, the menus, clipboard sync
and screenshots.  It owns the Tk variables and the config file, and plays
the controller's L{ConnectionView}.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tkinter as tk
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from litedesk.proto import message_pb2 as pb
from litedesk.screen.decode import DecodedFrame
from litedesk.session.viewer_session import ViewerSession
from litedesk.viewer import connection
from litedesk.viewer.clipboard_sync import ClipboardSync
from litedesk.viewer.config import ViewerConfig, load_config, save_config
from litedesk.viewer.connect_dialog import ConnectDialog
from litedesk.viewer.connection import FailureReason
from litedesk.viewer.controller import ConnectionController
from litedesk.viewer.dialogs import TITLE, ErrorDialog
from litedesk.viewer.frame_view import FrameView
from litedesk.viewer.input_map import InputMapper
from litedesk.viewer.keymap import HostKey
from litedesk.viewer.menus import build_menubar, build_popup, open_popup
from litedesk.viewer.screenshots import Screenshots, screenshot_dir
from litedesk.viewer.side_sessions import SideSessions
from litedesk.viewer.status_bar import StatusBar
from litedesk.viewer.tk_pump import pump_tk
from litedesk.viewer.window_session import WindowSession

_log = Logger(namespace="litedesk.viewer.window")

QUALITIES: dict[str, int] = {"speed": pb.Low, "balanced": pb.Balanced, "best": pb.Best}
TICK = 0.25
PING_INTERVAL = 2.0


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
        self.password = ""
        self._dialog: ConnectDialog | None = None
        self._error: ErrorDialog | None = None
        self._view_only_shown = False

        self.scale_var = tk.StringVar(root, args.scale or cfg.scale or "fit")
        self.quality_var = tk.StringVar(root, args.quality or cfg.quality or "balanced")
        self.fps_var = tk.IntVar(root, args.fps if args.fps is not None else cfg.fps)
        self.clip_var = tk.BooleanVar(root, cfg.clipboard_sync)
        self.view_only_var = tk.BooleanVar(root, False)
        self.display_var = tk.IntVar(root, 0)
        self.fullscreen_var = tk.BooleanVar(root, False)

        self.conn = ConnectionController(reactor, args, self, self._connector)
        root.title(TITLE)
        root.geometry(args.geometry or "1280x800")
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self.menubar = build_menubar(root, self)
        self.popup = build_popup(root, self)
        self.frames = FrameView(reactor, root, self.scale_var, self.conn, self._status_text)
        self.canvas = self.frames.canvas
        self.status = StatusBar(
            reactor, root, self.conn, self.frames, self.reconnect_now, self.cancel_reconnect
        )
        self.clipboard = ClipboardSync(root, self.conn, self.clip_var)
        self.input = InputMapper(
            reactor,
            self.conn,
            self.frames,
            self.host_key,
            self.view_only_var,
            self.open_popup,
            self.clipboard.push_local,
        )
        self.shots = Screenshots(
            root,
            lambda: screenshot_dir(self.args.screenshot_dir or self.cfg.screenshot_dir),
            self.status.flash,
            lambda title, detail: self.show_error(title, detail, final=False),
        )
        self.side = SideSessions(
            reactor, root, lambda: self.args, lambda: self.password, self.status.flash
        )
        self.apply_scale_mode()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(TICK, now=False)
        self._pinger = LoopingCall(self._ping)
        self._pinger.clock = reactor
        self._pinger.start(PING_INTERVAL, now=False)

    @property
    def session(self) -> ViewerSession | None:
        return self.conn.session

    def on_frame(self, frame: DecodedFrame) -> None:
        self.frames.on_frame(frame)

    def _status_text(self) -> str:
        return self.status.text()

    # -- starting and the connect dialog ----------------------------------------------

    def start(self) -> None:
        """Connect if the command line says to whom, else ask."""
        a = self.args
        by_id = bool(a.target) and not connection.is_direct(a.target)
        if not a.rendezvous and self.cfg.server and by_id:
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
        needs_server = by_id and not (a.rendezvous and a.key)
        if not a.target or not self.password or needs_server:
            self.show_connect_dialog()
            return
        self.conn.connect()

    def show_connect_dialog(self) -> None:
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
        self.conn.restart()

    # -- the controller's view --------------------------------------------------------

    async def _connector(self, session: ViewerSession, progress: Callable[[str], None]) -> str:
        return await connection.connect(self.reactor, self.args, session, progress)

    def make_session(self) -> ViewerSession:
        return WindowSession(
            self.reactor,
            self.args.target,
            self.password,
            codec=self.args.codec,
            image_quality=QUALITIES.get(self.quality_var.get(), pb.Balanced),
            custom_fps=int(self.fps_var.get()),
            on_frame=self.frames.on_frame,
            listener=self,
        )

    def attempt_started(self) -> None:
        self.root.title(f"{self.args.target} - {TITLE}")
        self.status.show_view_only(False)
        self._view_only_shown = False

    def status_changed(self) -> None:
        self.status.update()

    def logged_in(self, session: ViewerSession, info: pb.PeerInfo) -> None:
        a = self.args
        self.frames.new_session()
        self.status.new_session()
        self.display_var.set(session.display)
        self.cfg.add_recent(a.target)
        if self.cfg.remember and a.rendezvous and a.key:
            self.cfg.server, self.cfg.key = a.rendezvous, a.key
        self._save_config()
        self.canvas.focus_force()
        self.clipboard.push_local()
        self.status.update()

    def session_lost(self) -> None:
        self.input.session_lost()
        self.frames.draw_cursor()

    def failed(self, title: str, detail: str, reason: FailureReason) -> None:
        self.show_error(
            title, detail, final=reason.final, ask_password=reason is FailureReason.WRONG_PASSWORD
        )

    def reconnect_pending(self, pending: bool) -> None:
        self.status.show_reconnect(pending)

    def set_status(self, text: str) -> None:
        self.status.set(text)

    def ask_destination(self) -> None:
        self.show_connect_dialog()

    # -- the session's listener ---------------------------------------------------------

    def phase(self, what: str) -> None:
        self.conn.set_phase(what)

    def cursor_changed(self, shape: bool) -> None:
        self.frames.cursor_changed(shape)

    def remote_clipboard_changed(self) -> None:
        self.clipboard.remote_changed()

    def notice_changed(self) -> None:
        s = self.conn.session
        if s is not None and s.view_only_notice and not self._view_only_shown:
            self._view_only_shown = True
            self.status.show_view_only(True)
            self.status.flash(f"Host: {s.view_only_notice}")
            _log.info("View only: {notice}", notice=s.view_only_notice)

    # -- menu actions -----------------------------------------------------------------

    def monitors(self) -> Sequence[pb.DisplayInfo]:
        s = self.conn.session
        info = s.peer_info if s is not None else None
        return list(info.displays) if info is not None else []

    def reconnect_now(self) -> None:
        self.conn.reconnect_now()

    def cancel_reconnect(self) -> None:
        self.conn.cancel_reconnect()

    def disconnect(self) -> None:
        self.input.release_held()
        self.conn.disconnect()

    def quit(self) -> None:
        self.input.release_held()
        self.side.close_all()
        self.conn.shutdown()
        self._save_config()
        # Give the close message a moment to leave before the reactor stops.
        self.reactor.callLater(0.1, self.reactor.stop)

    def open_popup(self) -> None:
        self.input.release_held()
        open_popup(self.root, self.canvas, self.popup)

    def open_files(self) -> None:
        self.side.open_files()

    def open_forward(self) -> None:
        self.side.open_forward()

    def send_host_key(self) -> None:
        self.input.send_host_key()

    def send_combo(self, combo: str) -> None:
        self.input.send_combo(combo)

    def apply_scale_mode(self) -> None:
        self.cfg.scale = self.scale_var.get()
        self.frames.apply_scale_mode()

    def apply_fullscreen(self) -> None:
        with contextlib.suppress(tk.TclError):
            self.root.attributes("-fullscreen", self.fullscreen_var.get())

    def _live_session(self) -> ViewerSession | None:
        return self.conn.session if self.conn.connected else None

    def apply_quality(self) -> None:
        q = self.quality_var.get()
        self.cfg.quality = q
        s = self._live_session()
        if s is not None:
            s.set_option(image_quality=QUALITIES[q])
            _log.info("Quality set to {quality}", quality=q)
            self.status.flash(f"Quality: {q}")

    def apply_fps(self) -> None:
        fps = int(self.fps_var.get())
        self.cfg.fps = fps
        s = self._live_session()
        if s is not None and fps:
            s.set_option(custom_fps=fps)
            _log.info("Frame rate cap set to {fps}", fps=fps)
            self.status.flash(f"Frame rate cap: {fps} fps")

    def request_key_frame(self) -> None:
        s = self._live_session()
        if s is not None:
            s.refresh()
            _log.info("Key frame requested")
            self.status.flash("Key frame requested")

    def switch_display(self, index: int) -> None:
        s = self._live_session()
        if s is not None:
            s.switch_display(index)
            _log.info("Switching to monitor {index}", index=index)

    def clipboard_toggled(self) -> None:
        self.cfg.clipboard_sync = bool(self.clip_var.get())
        if self.clip_var.get():
            self.clipboard.push_local()

    def screenshot(self) -> Path | None:
        """Save the last full-resolution frame with a timestamped name."""
        s = self.conn.session
        frame = self.frames.shown or (s.latest if s is not None else None)
        return self.shots.save_auto(frame, self.args.target or "host")

    def screenshot_as(self) -> None:
        self.shots.save_as(self.frames.shown)

    # -- errors, config, timers -------------------------------------------------------

    def show_error(self, title: str, detail: str, final: bool, ask_password: bool = False) -> None:
        if self._error is not None:
            self._error.close()
        self.status.set(f"Not connected: {detail}")
        buttons: list[tuple[str, Callable[[], None]]] = [
            ("Connect to…", self.show_connect_dialog),
            ("Quit", self.quit),
        ]
        if not final:
            buttons.insert(0, ("Try again", self.reconnect_now))
        elif ask_password:
            buttons.insert(0, ("Enter password…", self.show_connect_dialog))
        self._error = ErrorDialog(self.root, title, detail, buttons)

    def _save_config(self) -> None:
        try:
            save_config(self.cfg, self.cfg_path)
        except OSError as e:
            _log.warn("Cannot save the viewer config: {error}", error=e)

    def _ping(self) -> None:
        s = self._live_session()
        if s is not None:
            s.ping()

    def _tick(self) -> None:
        try:
            self.status.update_rates()
            self.status.update()
            self.frames.tick()
        except tk.TclError:
            pass  # the window is going away


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
    from twisted.internet import reactor

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
    pump = pump_tk(reactor, root)
    reactor.callWhenRunning(app.start)
    reactor.run()
    try:
        if pump.running:
            pump.stop()
        root.destroy()
    except tk.TclError:
        pass
    return 0


__all__ = ["ViewerApp", "run_window"]
