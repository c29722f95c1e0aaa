# -*- test-case-name: tests.test_viewer_files_window -*-
"""One pane of the Files window: a path entry, "Up" and a Treeview of one directory.

The pane does not know whose files it shows: a L{FileSide} does the
reading and path arithmetic, the local file system for one pane and the
host's file session for the other.  Listing is asynchronous so that a slow host never
blocks the Tk loop, which also runs the reactor (see
L{litedesk.viewer.window}); an answer that arrives after the person moved
on to another directory is dropped.
"""

from __future__ import annotations

import contextlib
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.proto import message_pb2 as pb
from litedesk.viewer.connection import reason_phrase
from litedesk.viewer.file_listing import fmt_modified, fmt_size, is_dir, sorted_entries

_log = Logger(namespace="litedesk.viewer.file_pane")


class FileSide(Protocol):
    """Whose files a pane shows: the viewer's own, or the host's."""

    def list_dir(self, path: str) -> Deferred[tuple[str, list[pb.FileEntry]]]:
        """The directory's absolute path (as that side writes it) and its entries."""

    def parent(self, path: str) -> str | None:
        """The directory above C{path}, or C{None} when C{path} is the top."""

    def join(self, directory: str, name: str) -> str:
        """C{name} inside C{directory}."""


class FilePane:
    """A labelled frame with a path entry, an Up button and the listing."""

    def __init__(
        self,
        parent: tk.Misc,
        title: str,
        side: FileSide,
        on_error: Callable[[str], None],
    ) -> None:
        self.side = side
        self.on_error = on_error
        self.path = ""
        self.entries: dict[str, pb.FileEntry] = {}  # by name
        self._names: dict[str, str] = {}  # Treeview item id -> name
        self._asked = 0  # the newest listing asked for; older answers are dropped
        self.frame = ttk.LabelFrame(parent, text=title)
        top = ttk.Frame(self.frame)
        top.pack(fill="x", padx=4, pady=4)
        self.path_var = tk.StringVar(self.frame, "")
        self.path_entry = ttk.Entry(top, textvariable=self.path_var)
        self.path_entry.pack(side="left", fill="x", expand=True)
        self.path_entry.bind("<Return>", lambda _e: self.go(self.path_var.get()))
        ttk.Button(top, text="Up", width=4, command=self.go_up).pack(side="left", padx=(4, 0))
        body = ttk.Frame(self.frame)
        body.pack(fill="both", expand=True, padx=4, pady=(0, 4))
        self.tree = ttk.Treeview(body, columns=("size", "modified"), selectmode="extended")
        self.tree.heading("#0", text="Name")
        self.tree.heading("size", text="Size")
        self.tree.heading("modified", text="Modified")
        self.tree.column("#0", width=220)
        self.tree.column("size", width=80, anchor="e")
        self.tree.column("modified", width=130)
        scroll = ttk.Scrollbar(body, orient="vertical", command=self.tree.yview)
        self.tree.configure(yscrollcommand=scroll.set)
        self.tree.pack(side="left", fill="both", expand=True)
        scroll.pack(side="left", fill="y")
        self.tree.bind("<Double-1>", self._double_click)
        self.tree.bind("<Return>", lambda _e: self.enter_focused())

    # -- navigation ------------------------------------------------------------------

    def go(self, path: str) -> Deferred[None]:
        """List C{path}; the pane shows it once the answer comes."""
        self._asked += 1
        asked = self._asked
        d = self.side.list_dir(path)
        return d.addCallbacks(
            lambda listing: self._show(asked, *listing),
            lambda f: self._failed(asked, path, f.value),
        )

    def refresh(self) -> Deferred[None]:
        return self.go(self.path)

    def go_up(self) -> None:
        parent = self.side.parent(self.path)
        if parent is None:
            self.on_error(f"{self.path} is the top")
            return
        self.go(parent)

    def enter_focused(self) -> None:
        iid = self.tree.focus()
        if iid in self._names:
            self.enter(self._names[iid])

    def enter(self, name: str) -> None:
        """Open the directory C{name} of the listing (files are not opened)."""
        entry = self.entries.get(name)
        if entry is not None and is_dir(entry):
            self.go(self.side.join(self.path, name))

    def _double_click(self, event: tk.Event[ttk.Treeview]) -> None:
        iid = self.tree.identify_row(event.y)
        if iid in self._names:
            self.enter(self._names[iid])

    # -- the listing -----------------------------------------------------------------

    def _show(self, asked: int, path: str, entries: list[pb.FileEntry]) -> None:
        if asked != self._asked:
            return  # the person has asked for another directory since
        with contextlib.suppress(tk.TclError):  # the window closed meanwhile
            self._fill(path, entries)
        _log.info("Listed {n} entries of {path}", n=len(self.entries), path=path)

    def _fill(self, path: str, entries: list[pb.FileEntry]) -> None:
        # A refresh keeps what was selected, so that the same action can be
        # pressed again (to resume, or to overwrite after all).
        keep = set(self.selected()) if path == self.path else set()
        self.path = path
        self.path_var.set(path)
        self.clear()
        for e in sorted_entries(entries):
            if not e.name or e.name in self.entries:
                continue  # a host may send anything; one row per name
            self.entries[e.name] = e
            # Own item ids: a name is any string and Tk would read some as options.
            iid = f"e{len(self._names)}"
            self._names[iid] = e.name
            directory = is_dir(e)
            self.tree.insert(
                "",
                "end",
                iid=iid,
                text=f"{e.name}/" if directory else e.name,
                values=("" if directory else fmt_size(e.size), fmt_modified(e.modified_time)),
            )
        self.select(sorted(keep))

    def _failed(self, asked: int, path: str, error: BaseException) -> None:
        if asked != self._asked:
            return
        with contextlib.suppress(tk.TclError):
            self.path_var.set(self.path)  # back to what is shown
        reason = reason_phrase(error)
        _log.warn("Cannot list {path}: {reason}", path=path, reason=reason)
        self.on_error(f"cannot list {path or 'the file root'}: {reason}")

    def selected(self) -> list[str]:
        """The names selected in the listing, in the order shown."""
        chosen = set(self.tree.selection())
        return [self._names[i] for i in self.tree.get_children() if i in chosen]

    def select(self, names: list[str]) -> None:
        """Select these names of the listing (what a click does)."""
        by_name = {n: i for i, n in self._names.items()}
        self.tree.selection_set([by_name[n] for n in names if n in by_name])

    def clear(self) -> None:
        """Show nothing (the listing's source went away)."""
        self.entries = {}
        self._names = {}
        self.tree.delete(*self.tree.get_children())
