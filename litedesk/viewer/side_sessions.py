# -*- test-case-name: tests.test_viewer_files_window -*-
"""The viewer window's F8 -> Files... and Forward a port...: one of each at a time.

Each opens its own sessions to the host the window is connected to
(a file-transfer session; one port-forward session per forwarded
connection), with the window's password and the way it reached the host,
so the desktop session is left as it is.  Kept out of
L{litedesk.viewer.window} so that the window only gains two menu
commands; a second press of an entry brings the open window to the front.
"""

from __future__ import annotations

import argparse
import tkinter as tk
from collections.abc import Callable
from typing import Any

from litedesk.session.viewer_session import ViewerSession
from litedesk.viewer import connection
from litedesk.viewer.files_window import FilesWindow
from litedesk.viewer.forward_dialog import ForwardDialog


class SideSessions:
    """Opens (or raises) the Files window and the forward dialog."""

    def __init__(
        self,
        reactor: Any,
        root: tk.Misc,
        args: Callable[[], argparse.Namespace],
        password: Callable[[], str],
        flash: Callable[[str], None],
    ) -> None:
        """
        @param args: the window's current command-line arguments (the target
            and how to reach it; they change when another host is chosen).
        @param password: the password the window logged in with.
        @param flash: shows a passing note in the window's status bar.
        """
        self.reactor = reactor
        self.root = root
        self.args = args
        self.password = password
        self.flash = flash
        self.files: FilesWindow | None = None
        self.forward: ForwardDialog | None = None

    def _route(self) -> argparse.Namespace | None:
        a = self.args()
        if not a.target:
            self.flash("Connect to a host first")
            return None
        # A copy: the sessions keep going to this host even if the window
        # is pointed at another one meanwhile.
        return argparse.Namespace(**vars(a))

    def _opener(self, a: argparse.Namespace) -> Callable[[ViewerSession], Any]:
        return lambda session: connection.connect(self.reactor, a, session)

    def open_files(self) -> None:
        if self.files is not None and self.files.alive():
            self.files.top.lift()
            return
        a = self._route()
        if a is not None:
            self.files = FilesWindow(
                self.root, self.reactor, a.target, self.password(), self._opener(a)
            )

    def open_forward(self) -> None:
        if self.forward is not None and self.forward.alive():
            self.forward.top.lift()
            return
        a = self._route()
        if a is not None:
            self.forward = ForwardDialog(self.root, self.reactor, a, self.password())

    def close_all(self) -> None:
        """The viewer is closing: end the side sessions with it."""
        if self.files is not None:
            self.files.close()
        if self.forward is not None:
            self.forward.close()
