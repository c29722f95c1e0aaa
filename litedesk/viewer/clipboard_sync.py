"""Clipboard sync between the viewer's desktop and the host.

Text copied on the host is put on the local clipboard as it arrives; local
text goes to the host when the focus or the pointer comes back to the
window (Tk has no clipboard-change event, and that is when a person who
copied something elsewhere comes back to paste it).  What came from the
host is not sent back.
"""

from __future__ import annotations

import tkinter as tk

from twisted.logger import Logger

from litedesk.viewer.controller import ConnectionController

_log = Logger(namespace="litedesk.viewer.window")


class ClipboardSync:
    def __init__(self, root: tk.Misc, conn: ConnectionController, enabled: tk.BooleanVar) -> None:
        self.root = root
        self.conn = conn
        self.enabled = enabled
        self._last_local: str | None = None

    def remote_changed(self) -> None:
        s = self.conn.session
        if s is None or not self.enabled.get() or s.remote_clipboard is None:
            return
        text = s.remote_clipboard
        self._last_local = text  # do not echo it back
        self.root.clipboard_clear()
        self.root.clipboard_append(text)
        _log.info("Clipboard from the host ({n} characters)", n=len(text))

    def push_local(self) -> None:
        s = self.conn.session
        if s is None or not self.conn.connected or not self.enabled.get():
            return
        try:
            text = self.root.clipboard_get()
        except tk.TclError:
            return  # empty, or not text
        if text and text != self._last_local:
            self._last_local = text
            s.set_clipboard(text)
            _log.info("Clipboard sent to the host ({n} characters)", n=len(text))
