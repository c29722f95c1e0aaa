# -*- test-case-name: tests.test_viewer_files_window -*-
"""F8 -> Files...: the viewer's files on the left, the host's on the right.

The window opens its own file-transfer session to the host (RustDesk's
conn type FILE_TRANSFER, docs/protocol.rst §12), beside the desktop
session, which stays as it is; closing the window closes only that
session.  Upload and Download copy the selected items one at a time with
the file client (L{litedesk.files.client}); Cancel stops the running one
and keeps its partial file, so pressing the same button again resumes it
(§12.5, hbb_common src/fs.rs).  Nothing here blocks: listings and
transfers are Deferreds, and the bars and status line are redrawn from a
L{TransferMeter} four times a second rather than on every block.
"""

from __future__ import annotations

import contextlib
import tkinter as tk
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from tkinter import ttk
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from litedesk.files.client import FileClient, Transfer, TransferResult
from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import ViewerSession
from litedesk.viewer.connection import LOGIN_TIMEOUT, reason_phrase, with_timeout
from litedesk.viewer.dialogs import TITLE, ErrorDialog
from litedesk.viewer.file_listing import (
    TransferJob,
    local_entries,
    plan_downloads,
    plan_uploads,
    remote_join,
    remote_parent,
)
from litedesk.viewer.file_pane import FilePane
from litedesk.viewer.transfer_progress import Progress, RunSummary, TransferMeter

_log = Logger(namespace="litedesk.viewer.files_window")

TICK = 0.25

#: Opens the stream of a new session (L{litedesk.viewer.connection.connect}).
SessionOpener = Callable[[ViewerSession], Awaitable[object]]


class LocalSide:
    """The viewer's own file system, for the left pane."""

    def list_dir(self, path: str) -> Deferred[tuple[str, list[pb.FileEntry]]]:
        try:
            where = Path(path).expanduser().resolve()
            return succeed((str(where), local_entries(where)))
        except OSError as e:
            return fail(OSError(e.strerror or str(e)))

    def parent(self, path: str) -> str | None:
        p = Path(path)
        return None if p.parent == p else str(p.parent)

    def join(self, directory: str, name: str) -> str:
        return str(Path(directory) / name)


class RemoteSide:
    """The host's files through the window's file session, for the right pane."""

    def __init__(self) -> None:
        self.client: FileClient | None = None
        self.root: str | None = None  # the host's file root, as its first listing names it

    def list_dir(self, path: str) -> Deferred[tuple[str, list[pb.FileEntry]]]:
        if self.client is None:
            return fail(ConnectionError("not connected to the host's files"))

        def got(d: pb.FileDirectory) -> tuple[str, list[pb.FileEntry]]:
            if self.root is None and not path:
                self.root = d.path
            return d.path, list(d.entries)

        return self.client.list_dir(path).addCallback(got)

    def parent(self, path: str) -> str | None:
        # Above the file root the host answers "outside the file root" anyway.
        if not path or path == self.root:
            return None
        return remote_parent(path)

    def join(self, directory: str, name: str) -> str:
        return remote_join(directory, name)


def _close(session: ViewerSession) -> None:
    if session.transport is not None:
        session.disconnect()


class FilesWindow:
    """The Files Toplevel and its file session."""

    def __init__(
        self,
        root: tk.Misc,
        reactor: Any,
        target: str,
        password: str,
        open_session: SessionOpener,
        local_dir: Path | None = None,
    ) -> None:
        self.reactor = reactor
        self.target = target
        self.password = password
        self.open_session = open_session
        self.session: ViewerSession | None = None
        self.remote_side = RemoteSide()
        self.transfer: Transfer | None = None
        self.jobs: deque[TransferJob] = deque()
        self.run = RunSummary()
        self.meter = TransferMeter(reactor)
        self._cancelling = False
        self._error: ErrorDialog | None = None
        self.top = tk.Toplevel(root)
        self.top.title(f"Files: {target} - {TITLE}")
        self.top.geometry("900x560")
        self.top.protocol("WM_DELETE_WINDOW", self.close)
        self._build(local_dir or Path.home())
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(TICK, now=False)
        self.connect()

    def _build(self, local_dir: Path) -> None:
        panes = ttk.Frame(self.top)
        panes.pack(fill="both", expand=True, padx=6, pady=6)
        self.local = FilePane(panes, "This computer", LocalSide(), self.show_status)
        self.remote = FilePane(panes, f"Host {self.target}", self.remote_side, self.show_status)
        middle = ttk.Frame(panes)
        self.local.frame.pack(side="left", fill="both", expand=True)
        middle.pack(side="left", fill="y", padx=6)
        self.remote.frame.pack(side="left", fill="both", expand=True)
        self.upload_button = ttk.Button(middle, text="Upload →", command=self.upload)
        self.upload_button.pack(pady=(80, 6))
        self.download_button = ttk.Button(middle, text="← Download", command=self.download)
        self.download_button.pack(pady=6)
        bottom = ttk.Frame(self.top)
        bottom.pack(fill="x", padx=6, pady=(0, 6))
        row = ttk.Frame(bottom)
        row.pack(fill="x")
        self.refresh_button = ttk.Button(row, text="Refresh", command=self.refresh)
        self.refresh_button.pack(side="left")
        self.cancel_button = ttk.Button(row, text="Cancel", command=self.cancel, state="disabled")
        self.cancel_button.pack(side="left", padx=6)
        self.overwrite_var = tk.BooleanVar(self.top, False)
        self.overwrite_box = ttk.Checkbutton(
            row, text="Overwrite existing", variable=self.overwrite_var
        )
        self.overwrite_box.pack(side="left", padx=6)
        self.file_var = tk.DoubleVar(self.top, 0.0)
        self.total_var = tk.DoubleVar(self.top, 0.0)
        for label, var in (("File", self.file_var), ("Total", self.total_var)):
            line = ttk.Frame(bottom)
            line.pack(fill="x", pady=(4, 0))
            ttk.Label(line, text=label, width=6).pack(side="left")
            bar = ttk.Progressbar(line, maximum=100.0, variable=var, mode="determinate")
            bar.pack(side="left", fill="x", expand=True)
        self.status_var = tk.StringVar(self.top, "")
        ttk.Label(bottom, textvariable=self.status_var, anchor="w").pack(fill="x", pady=(4, 0))
        self.local.go(str(local_dir))
        self.local.path_entry.focus_set()

    # -- the file session ------------------------------------------------------------

    def connect(self) -> None:
        """Open a new file session to the host and list its file root."""
        self.show_status(f"Connecting to {self.target} for files…")
        d = ensureDeferred(self._open())
        d.addErrback(lambda f: _log.failure("Opening the file session crashed", f))

    async def _open(self) -> None:
        session = ViewerSession(
            self.reactor, self.target, self.password, file_transfer=pb.FileTransfer(dir="")
        )
        self.session = session
        # Made before the login ends: the host sends a listing of the login's
        # directory unasked right after it, and a client made later could
        # take that listing for the answer to a request of its own.
        client = FileClient(session)
        try:
            await self.open_session(session)
            await with_timeout(self.reactor, session.logged_in, LOGIN_TIMEOUT, "the login")
        except Exception as e:
            if session is self.session:
                self._session_failed(e)
            _close(session)
            return
        if session is not self.session:
            _close(session)  # the window was closed or reconnected meanwhile
            return
        self.remote_side.client = client
        session.ended.addCallback(lambda _: self._session_ended(session))
        _log.info("File session with {target} open", target=self.target)
        self.show_status(f"Connected to {self.target}")
        self.remote.go(self.remote.path)

    def _session_failed(self, e: BaseException) -> None:
        reason = reason_phrase(e)
        _log.warn("File session with {target} failed: {reason}", target=self.target, reason=reason)
        self.session = None
        self.show_error("Cannot open the host's files", reason)

    def _session_ended(self, session: ViewerSession) -> None:
        if session is not self.session:
            return
        self.session = None
        self.remote_side.client = None
        reason = str(session.error) if session.error is not None else "disconnected"
        _log.warn("File session with {target} ended: {reason}", target=self.target, reason=reason)
        self.show_status(f"File session ended ({reason}); Refresh reconnects")

    # -- buttons ---------------------------------------------------------------------

    def refresh(self) -> None:
        """List both panes again; reconnect first when the file session is gone."""
        self.local.refresh()
        if self.session is None:
            self.connect()
        else:
            self.remote.refresh()

    def upload(self) -> None:
        names = self.local.selected()
        jobs = plan_uploads(Path(self.local.path), names, self.remote.path)
        self._start(jobs, "select files or folders on this computer to upload")

    def download(self) -> None:
        names = self.remote.selected()
        jobs = plan_downloads(self.remote.path, names, Path(self.local.path))
        self._start(jobs, "select files or folders on the host to download")

    def cancel(self) -> None:
        """Stop the running transfer (its partial file stays for resuming) and the rest."""
        self.jobs.clear()
        if self.transfer is not None:
            self._cancelling = True
            _log.info("Transfer of {name} cancelled", name=self.meter.name)
            self.transfer.cancel()

    def _start(self, jobs: list[TransferJob], nothing: str) -> None:
        if self.transfer is not None:
            self.show_status("A transfer is running: wait for it or Cancel it")
            return
        if self.remote_side.client is None:
            self.show_status("Not connected to the host's files (Refresh reconnects)")
            return
        if not jobs:
            self.show_status(nothing)
            return
        self.jobs = deque(jobs)
        self.run = RunSummary()
        self._cancelling = False
        self.cancel_button.configure(state="normal")
        self._next()

    # -- running the selected items, one at a time -------------------------------------

    def _next(self) -> None:
        client = self.remote_side.client
        if not self.jobs or client is None:
            self._run_ended()
            return
        job = self.jobs.popleft()
        self.meter.start(job.upload, job.name)
        overwrite = bool(self.overwrite_var.get())
        _log.info(
            "{verb} {source} to {dest}",
            verb=self.meter.verb,
            source=job.source,
            dest=job.dest,
            overwrite=overwrite,
        )
        try:
            if job.upload:
                t = client.upload(
                    Path(job.source), job.dest, overwrite=overwrite, progress=self._progress
                )
            else:
                t = client.download(
                    job.source, Path(job.dest), overwrite=overwrite, progress=self._progress
                )
        except Exception as e:  # a bad local path, a closed session
            self._job_failed(job, Failure(e))  # type: ignore[no-untyped-call]
            return
        self.transfer = t
        t.done.addCallbacks(lambda r: self._job_done(job, r), lambda f: self._job_failed(job, f))

    def _progress(self, ev: Progress) -> None:
        self.meter.update(ev)

    def _job_done(self, job: TransferJob, result: TransferResult) -> None:
        self.transfer = None
        files, skipped = result.files, result.skipped
        self.run.resumed += result.resumed
        if skipped:
            self.run.skipped.extend(skipped)
            _log.info("Skipped {n} existing file(s) of {name}", n=len(skipped), name=job.name)
        if files or not skipped:
            self.run.copied.append(job.name)
            _log.info(
                "Copied {name} ({files} file(s)) to {dest}",
                name=job.name,
                files=files,
                dest=job.dest,
            )
        self._next()

    def _job_failed(self, job: TransferJob, f: Failure) -> None:
        self.transfer = None
        if self._cancelling:
            self.run.cancelled = True
            self.jobs.clear()
        else:
            reason = reason_phrase(f.value) if f.value is not None else "failed"
            self.run.failed.append((job.name, reason))
            _log.warn("Transfer of {name} failed: {reason}", name=job.name, reason=reason)
        self._next()

    def _run_ended(self) -> None:
        self.transfer = None
        self._cancelling = False
        if not self.alive():
            return  # closed meanwhile
        self.cancel_button.configure(state="disabled")
        self._tick(final=True)
        text = self.run.text()
        _log.info("Transfers done: {summary}", summary=text)
        self.show_status(text)
        if self.run.failed:
            name, reason = self.run.failed[0]
            self.show_error("Transfer failed", f"{name}: {reason}")
        self.local.refresh()
        if self.remote_side.client is not None:
            self.remote.refresh()

    # -- showing -----------------------------------------------------------------------

    def _tick(self, final: bool = False) -> None:
        if self.transfer is None and not final:
            return
        try:
            self.file_var.set(self.meter.file_percent)
            self.total_var.set(self.meter.total_percent)
            self.status_var.set(self.meter.status_text())
        except tk.TclError:
            pass  # the window is going away

    def show_status(self, text: str) -> None:
        with contextlib.suppress(tk.TclError):  # the window is going away
            self.status_var.set(text)

    def show_error(self, title: str, reason: str) -> None:
        self.show_status(f"{title}: {reason}")
        if self._error is not None:
            self._error.close()
        self._error = ErrorDialog(self.top, title, reason, [("OK", lambda: None)])

    def busy(self) -> bool:
        """Whether a transfer is running or waiting."""
        return self.transfer is not None or bool(self.jobs)

    def alive(self) -> bool:
        try:
            return bool(self.top.winfo_exists())
        except tk.TclError:
            return False

    def close(self) -> Deferred[None]:
        """Close the window: cancel the transfer (its partial stays) and the file
        session; fires once that session's connection is gone."""
        self.cancel()
        if self._ticker.running:
            self._ticker.stop()
        s, self.session = self.session, None
        self.remote_side.client = None
        gone: Deferred[None] = succeed(None)
        if s is not None and s.transport is not None:
            gone = Deferred()
            s.ended.addBoth(lambda _: gone.callback(None))
            s.disconnect()
        if self._error is not None:
            self._error.close()
        with contextlib.suppress(tk.TclError):
            self.top.destroy()
        _log.info("Files window closed")
        return gone
