# -*- test-case-name: tests.test_viewer_files_window -*-
"""F8 -> Forward a port...: what C{litedesk-viewer --forward LPORT:HOST:PORT} does, in a dialog.

The dialog asks for the local port and the target on the host's side
(default 127.0.0.1), starts the same local listener the command line
option starts (L{litedesk.viewer.forward}: one port-forward session per
accepted connection, docs/protocol.rst §13) and shows what it does:
"listening on 127.0.0.1:LPORT -> HOST:PORT", the connections and bytes so
far, and what went wrong: Start opens the first session before anything
listens, so the host's "forward not allowed" (or "forward target
unreachable") is shown at once, and a later connection's failure shows
up as it happens.  Non-modal; the counters are read four times a second.
"""

from __future__ import annotations

import argparse
import contextlib
import tkinter as tk
from tkinter import ttk
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from litedesk.viewer.connection import reason_phrase
from litedesk.viewer.dialogs import TITLE
from litedesk.viewer.forward_link import Forwarding, parse_port, start_forwarding

_log = Logger(namespace="litedesk.viewer.forward_dialog")

TICK = 0.25


class ForwardDialog:
    """The forward dialog and the listener it started, if any."""

    def __init__(
        self, root: tk.Misc, reactor: Any, args: argparse.Namespace, password: str
    ) -> None:
        self.reactor = reactor
        self.args = args
        self.password = password
        self.forwarding: Forwarding | None = None
        self._starting = False
        #: Fires when the last Stop has closed the port and the sessions.
        self.stopping: Deferred[Any] = succeed(None)
        self.top = tk.Toplevel(root)
        self.top.title(f"Forward a port: {args.target} - {TITLE}")
        self.top.resizable(False, False)
        self.top.protocol("WM_DELETE_WINDOW", self.close)
        form = ttk.Frame(self.top)
        form.pack(padx=12, pady=12, fill="x")
        self.lport_var = tk.StringVar(self.top, "")
        self.host_var = tk.StringVar(self.top, "127.0.0.1")
        self.rport_var = tk.StringVar(self.top, "")
        fields = (
            ("Local port (127.0.0.1)", self.lport_var),
            ("Remote host (on the host's side)", self.host_var),
            ("Remote port", self.rport_var),
        )
        self.entries: list[ttk.Entry] = []
        for row, (label, var) in enumerate(fields):
            ttk.Label(form, text=label).grid(row=row, column=0, sticky="w", pady=2)
            entry = ttk.Entry(form, textvariable=var, width=24)
            entry.grid(row=row, column=1, sticky="ew", padx=(8, 0), pady=2)
            entry.bind("<Return>", lambda _e: self.start())
            self.entries.append(entry)
        buttons = ttk.Frame(self.top)
        buttons.pack(padx=12, fill="x")
        self.start_button = ttk.Button(buttons, text="Start", command=self.start)
        self.start_button.pack(side="left")
        self.stop_button = ttk.Button(buttons, text="Stop", command=self.stop, state="disabled")
        self.stop_button.pack(side="left", padx=6)
        self.state_var = tk.StringVar(self.top, "Not forwarding")
        self.counts_var = tk.StringVar(self.top, "")
        self.error_var = tk.StringVar(self.top, "")
        for var, colour in ((self.state_var, ""), (self.counts_var, ""), (self.error_var, "red")):
            shown = ttk.Label(self.top, textvariable=var, anchor="w", wraplength=420)
            if colour:
                shown.configure(foreground=colour)
            shown.pack(padx=12, pady=(6, 0), fill="x")
        ttk.Frame(self.top, height=10).pack()
        self.entries[0].focus_set()
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(TICK, now=False)

    def start(self) -> None:
        """Open the first session to HOST:PORT, then listen on the local port."""
        if self.forwarding is not None or self._starting:
            return
        try:
            lport = parse_port(self.lport_var.get(), "local port")
            rport = parse_port(self.rport_var.get(), "remote port")
        except ValueError as e:
            self.error_var.set(str(e))
            return
        host = self.host_var.get().strip() or "127.0.0.1"
        self._starting = True
        self._set_running(True)
        self.error_var.set("")
        self.state_var.set(f"Asking {self.args.target} to reach {host}:{rport}…")
        d = ensureDeferred(
            start_forwarding(self.reactor, self.args, self.password, lport, host, rport)
        )
        d.addCallbacks(
            lambda f: self._started(f, lport, host, rport),
            lambda f: self._start_failed(f.value, lport),
        )

    def _started(self, f: Forwarding, lport: int, host: str, rport: int) -> None:
        self._starting = False
        if not self.alive():
            f.stop()  # closed while starting
            return
        self.forwarding = f
        self.state_var.set(f"listening on 127.0.0.1:{lport} -> {host}:{rport}")
        _log.info(
            "Forwarding 127.0.0.1:{lport} to {host}:{rport}", lport=lport, host=host, rport=rport
        )
        self._tick()

    def _start_failed(self, error: BaseException | None, lport: int) -> None:
        self._starting = False
        reason = reason_phrase(error) if error is not None else "failed"
        _log.warn("Cannot forward 127.0.0.1:{lport}: {reason}", lport=lport, reason=reason)
        with contextlib.suppress(tk.TclError):
            self.state_var.set("Not forwarding")
            self.error_var.set(reason)
            self._set_running(False)

    def stop(self) -> Deferred[Any]:
        """Stop listening and close the forwarded connections; fires when they are gone."""
        f, self.forwarding = self.forwarding, None
        if f is None:
            return succeed(None)
        gone = self.stopping = f.stop()
        self._tick(f)
        with contextlib.suppress(tk.TclError):
            self.state_var.set("Stopped")
            self._set_running(False)
        _log.info("Forwarding stopped")
        return gone

    def _set_running(self, running: bool) -> None:
        self.start_button.configure(state="disabled" if running else "normal")
        self.stop_button.configure(state="normal" if running else "disabled")
        for e in self.entries:
            e.configure(state="disabled" if running else "normal")

    def _tick(self, f: Forwarding | None = None) -> None:
        f = f or self.forwarding
        if f is None:
            return
        with contextlib.suppress(tk.TclError):  # the window is going away
            self.counts_var.set(
                f"{f.connections} connection(s), {f.bytes_out} bytes out, {f.bytes_in} bytes in"
            )
            if f.last_error:
                self.error_var.set(f.last_error)

    def alive(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False

    def close(self) -> Deferred[Any]:
        """Close the dialog and stop forwarding; fires when the sessions are gone."""
        gone = self.stop()
        if self._ticker.running:
            self._ticker.stop()
        with contextlib.suppress(tk.TclError):
            self.top.destroy()
        return gone
