"""The connect dialog: host id, password, server and key, recent and found hosts.

Shown when the viewer starts without an id or a password, and from the
Connection menu.  It is a non-modal Toplevel (a modal dialog would stall
the reactor, which shares Tk's thread).  "Browse" asks the server's
LiteDesk v1 discovery listener for registered hosts and broadcasts a LAN
discovery ping (L{litedesk.viewer.browse}); picking a host fills the id.
"""

from __future__ import annotations

import argparse
import tkinter as tk
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from litedesk.discovery.client import DISCOVERY_PORT
from litedesk.viewer.browse import FoundHost, lan_search, list_hosts
from litedesk.viewer.config import ViewerConfig
from litedesk.viewer.connection import is_direct
from litedesk.wire.address import parse_host_port

_log = Logger(namespace="litedesk.viewer.connect_dialog")

OnConnect = Callable[[str, str, str, str, bool], None]


class DialogOwner(Protocol):
    """What the dialog needs of the window that opens it."""

    reactor: Any
    root: tk.Tk
    args: argparse.Namespace
    cfg: ViewerConfig
    password: str

    @property
    def session(self) -> object | None:
        """The current session, if any (cancelling without one quits)."""

    def quit(self) -> None: ...


class ConnectDialog:
    """Ask for id, password, server and key; call C{on_connect} with them."""

    def __init__(self, app: DialogOwner, on_connect: OnConnect) -> None:
        self.app = app
        self.on_connect = on_connect
        cfg = app.cfg
        a = app.args
        top = self.top = tk.Toplevel(app.root)
        top.title("LiteDesk: connect")
        top.transient(app.root)
        top.protocol("WM_DELETE_WINDOW", self.cancel)
        frm = tk.Frame(top, padx=12, pady=10)
        frm.pack(fill="both", expand=True)

        self.id_var = tk.StringVar(top, a.target or "")
        self.pw_var = tk.StringVar(top, app.password or "")
        self.server_var = tk.StringVar(top, a.rendezvous or cfg.server)
        self.key_var = tk.StringVar(top, a.key or cfg.key)
        self.remember_var = tk.BooleanVar(top, cfg.remember)

        rows: list[tuple[str, tk.StringVar, dict[str, Any]]] = [
            ("Host id (or HOST:PORT)", self.id_var, {}),
            ("Password", self.pw_var, {"show": "•"}),
            ("Server", self.server_var, {}),
            ("Server key", self.key_var, {"width": 48}),
        ]
        self.entries: dict[str, tk.Entry] = {}
        for i, (label, var, kw) in enumerate(rows):
            tk.Label(frm, text=label, anchor="w").grid(row=i, column=0, sticky="w", pady=2)
            e = tk.Entry(frm, textvariable=var, width=kw.pop("width", 32), **kw)
            e.grid(row=i, column=1, sticky="ew", pady=2)
            e.bind("<Return>", lambda _e: self.submit())
            self.entries[label] = e
        tk.Checkbutton(
            frm, text="Remember server and key", variable=self.remember_var, anchor="w"
        ).grid(row=len(rows), column=1, sticky="w")
        frm.columnconfigure(1, weight=1)

        tk.Label(frm, text="Recent and found hosts (double-click to pick)", anchor="w").grid(
            row=len(rows) + 1, column=0, columnspan=2, sticky="w", pady=(10, 2)
        )
        self.hosts = tk.Listbox(frm, height=8, activestyle="dotbox")
        self.hosts.grid(row=len(rows) + 2, column=0, columnspan=2, sticky="nsew")
        frm.rowconfigure(len(rows) + 2, weight=1)
        self.hosts.bind("<<ListboxSelect>>", self._picked)
        self.hosts.bind("<Double-Button-1>", lambda _e: self._picked_connect())
        self._listed: list[str] = []
        self.browse_status = tk.Label(frm, text="", anchor="w", fg="#555555")
        self.browse_status.grid(row=len(rows) + 3, column=0, columnspan=2, sticky="w")

        buttons = tk.Frame(frm)
        buttons.grid(row=len(rows) + 4, column=0, columnspan=2, sticky="e", pady=(8, 0))
        tk.Button(buttons, text="Browse", command=self.browse).pack(side="left", padx=4)
        tk.Button(buttons, text="Cancel", command=self.cancel).pack(side="left", padx=4)
        tk.Button(buttons, text="Connect", default="active", command=self.submit).pack(
            side="left", padx=4
        )
        self._fill([])
        first = "Host id (or HOST:PORT)" if not self.id_var.get() else "Password"
        self.entries[first].focus_force()
        if self.server_var.get():
            self.browse()

    def alive(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False

    # -- host list ---------------------------------------------------------

    def _fill(self, found: list[FoundHost]) -> None:
        self.hosts.delete(0, "end")
        self._listed = []
        seen: set[str] = set()
        for r in self.app.cfg.recent:
            self.hosts.insert("end", f"{r.peer_id}   (recent)")
            self._listed.append(r.peer_id)
            seen.add(r.peer_id)
        for h in found:
            if h.peer_id in seen:
                continue
            seen.add(h.peer_id)
            where = "server list" if h.source == "server" else f"LAN {h.address}"
            name = f" {h.name}" if h.name else ""
            self.hosts.insert("end", f"{h.peer_id}{name}   ({where})")
            self._listed.append(h.peer_id)

    def _selected(self) -> str | None:
        sel = self.hosts.curselection()  # type: ignore[no-untyped-call]
        if not sel:
            return None
        i = int(sel[0])
        return self._listed[i] if 0 <= i < len(self._listed) else None

    def _picked(self, _e: object = None) -> None:
        pid = self._selected()
        if pid is not None:
            self.id_var.set(pid)
            self.entries["Password"].focus_set()

    def _picked_connect(self) -> None:
        self._picked()
        if self.pw_var.get():
            self.submit()

    def browse(self) -> None:
        """Fill the list from the server's discovery listener and the LAN."""
        self.browse_status.configure(text="Looking for hosts…")
        ensureDeferred(self._browse()).addErrback(
            lambda f: _log.failure("Browsing for hosts failed", f)
        )

    async def _browse(self) -> None:
        reactor = self.app.reactor
        found: list[FoundHost] = []
        notes: list[str] = []
        target = self.app.args.discovery or self.server_var.get().strip()
        if target:
            try:
                host, port = parse_host_port(target, DISCOVERY_PORT)
                if not self.app.args.discovery:
                    port = DISCOVERY_PORT  # the rendezvous port is not the discovery port
                listed = await list_hosts(reactor, host, port, timeout=3.0)
                found.extend(listed)
                notes.append(f"{len(listed)} on the server list")
            except (ConnectionError, ValueError) as e:
                notes.append(f"no server list ({e})")
        try:
            lan = await lan_search(reactor, wait=0.8)
            found.extend(lan)
            notes.append(f"{len(lan)} on the LAN")
        except OSError as e:
            notes.append(f"no LAN search ({e})")
        _log.info(
            "Browse found {n} host(s): {ids} ({notes})",
            n=len(found),
            ids=", ".join(f"{h.peer_id} [{h.source}]" for h in found) or "none",
            notes="; ".join(notes),
        )
        if not self.alive():
            return
        self._fill(found)
        self.browse_status.configure(text="; ".join(notes))

    # -- actions -------------------------------------------------------------

    def submit(self) -> None:
        target = self.id_var.get().strip()
        password = self.pw_var.get()
        server = self.server_var.get().strip()
        key = self.key_var.get().strip()
        if not target:
            self.browse_status.configure(text="Enter a host id, or pick one from the list.")
            return
        if not is_direct(target) and not (server and key):
            self.browse_status.configure(text="Connecting by id needs the server and its key.")
            return
        if not password:
            self.browse_status.configure(text="Enter the host's password.")
            self.entries["Password"].focus_set()
            return
        remember = bool(self.remember_var.get())
        self.top.destroy()
        self.on_connect(target, password, server, key, remember)

    def cancel(self) -> None:
        self.top.destroy()
        if self.app.session is None:
            self.app.quit()
