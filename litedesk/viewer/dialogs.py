"""Small windows of the viewer: the error message with its choices.

Kept apart from the main window so that it can be shown from anywhere
(connection failures, a screenshot that cannot be saved) without the
caller knowing how the window is built.
"""

from __future__ import annotations

import contextlib
import tkinter as tk
from collections.abc import Callable

TITLE = "LiteDesk"


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
        with contextlib.suppress(tk.TclError):
            self.top.destroy()
