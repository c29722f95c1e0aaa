"""The host's file-transfer service: a session's C{FileAction}s and jobs.

L{HostFiles} answers what a logged-in file-transfer viewer asks
(docs/protocol.rst §12; rustdesk C{src/server/connection.rs} C{FileAction}
and C{FileResponse} handling, C{src/ui_cm_interface.rs} for the write side):
listings, directory and file operations, downloads and uploads
(L{litedesk.files.host_jobs}, L{litedesk.files.host_upload}).  It is
sans-IO: it sends through a callable, reads time from an injected clock,
and is the transport's push producer while a download runs, so it reads
a file no faster than the connection takes it (at most
L{BLOCKS_PER_TURN} blocks per reactor turn).

What a hostile viewer can make it hold is bounded: L{MAX_JOBS} jobs, lists
of L{litedesk.files.listing.MAX_FILES} files, one open file per job, blocks
decompressed to at most what the file still lacks.  No message raises out
of it: each failure is an C{error} for the viewer and a log line.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from litedesk.files.host_jobs import DownloadJob, Job, Send, done_message, error_message
from litedesk.files.host_upload import UploadJob
from litedesk.files.listing import (
    MAX_FILES,
    TooManyFiles,
    empty_dirs,
    read_dir,
    recursive_files,
)
from litedesk.files.root import NOT_EXISTS, FileRoot, PathRefused
from litedesk.proto import message_pb2 as pb

__all__ = ["BLOCKS_PER_TURN", "MAX_JOBS", "HostFiles"]

_log = Logger(namespace="litedesk.files.host")

MAX_JOBS = 8
# Blocks sent per reactor turn before yielding to other connections.
BLOCKS_PER_TURN = 8
# Unknown job ids logged per session (a cancelled job's blocks in flight
# are normal; a flood is not worth a line each).
_MAX_UNKNOWN_LOGGED = 20
# Ids of ended jobs remembered, so their late messages are dropped quietly.
_MAX_ENDED_REMEMBERED = 64


@implementer(IPushProducer)
class HostFiles:
    """One session's file service.

    @param send: sends a message to the viewer.
    @param register: C{register(producer)} on the transport (streaming), or
        None; C{unregister()} undoes it.
    @param digests: the viewer speaks RustDesk 1.1.10 or later (a digest
        and confirm per file).
    @param rustdesk_resume: offer upload resumes as RustDesk's hosts do
        (L{UploadJob}).
    """

    def __init__(
        self,
        root: FileRoot,
        send: Send,
        clock: IReactorTime,
        *,
        register: Callable[[IPushProducer], None] | None = None,
        unregister: Callable[[], None] | None = None,
        digests: bool = True,
        rustdesk_resume: bool = False,
    ) -> None:
        self.root = root
        self.send = send
        self.clock = clock
        self._register = register
        self._unregister = unregister
        self.digests = digests
        self.rustdesk_resume = rustdesk_resume
        self.jobs: dict[int, Job] = {}
        self._ended: list[int] = []
        self._unknown_logged = 0
        self._paused = False
        self._registered = False
        self._pump_call: IDelayedCall | None = None
        self.closed = False

    # -- the session's entry points ----------------------------------------

    def start(self, ft: pb.FileTransfer) -> None:
        """After the login: the listing of the login's C{dir} (C{""}: the root)."""
        self._read_dir(ft.dir, ft.show_hidden)

    def action(self, a: pb.FileAction) -> None:
        """A C{FileAction} from the viewer."""
        which = a.WhichOneof("union")
        handler = _ACTIONS.get(which or "")
        if handler is None:
            _log.info("Ignoring an empty or unknown file action")
            return
        try:
            handler(self, getattr(a, which or ""))
        except Exception:
            # A bug must not take the session down; the viewer may wait.
            _log.failure("File action {action} failed", action=which)

    def response(self, r: pb.FileResponse) -> None:
        """A C{FileResponse} from the viewer: an upload's digest, blocks, done or error."""
        which = r.WhichOneof("union")
        if which not in ("digest", "block", "done", "error"):
            _log.info("Ignoring a file response {which} from the viewer", which=which)
            return
        msg = getattr(r, which)
        job = self._job(msg.id, UploadJob, which)
        if job is None:
            return
        assert isinstance(job, UploadJob)
        try:
            getattr(job, "peer_error" if which == "error" else which)(msg)
        except Exception:
            _log.failure("Upload {id} failed on a {which}", id=msg.id, which=which)
            job.fail("internal error", getattr(msg, "file_num", 0))

    def close(self) -> None:
        """The connection is gone: end every job (uploads keep their partials)."""
        self.closed = True
        for job in list(self.jobs.values()):
            job.end("connection lost")
        self._stop_pump()

    def _job(self, job_id: int, kind: type[Job], what: str) -> Job | None:
        job = self.jobs.get(job_id)
        if isinstance(job, kind):
            return job
        if job_id in self._ended:
            return None  # a late message of a job that ended
        if self._unknown_logged < _MAX_UNKNOWN_LOGGED:
            self._unknown_logged += 1
            _log.info("File {what} for unknown job {id} ignored", what=what, id=job_id)
        if what in ("digest", "done", "send_confirm"):
            self.send(error_message(job_id, "unknown job", 0))
        return None

    # -- listings and file operations --------------------------------------

    def _read_dir(self, path: str, include_hidden: bool) -> None:
        try:
            d = read_dir(self.root, path, include_hidden)
        except PathRefused as e:
            _log.info("Listing {path!r} refused: {reason}", path=path[:200], reason=e.reason)
            self.send(error_message(0, e.reason, 0))
            return
        m = pb.Message()
        m.file_response.dir.CopyFrom(d)
        self.send(m)

    def _on_read_dir(self, rd: pb.ReadDir) -> None:
        self._read_dir(rd.path, rd.include_hidden)

    def _on_all_files(self, f: pb.ReadAllFiles) -> None:
        try:
            _, files = recursive_files(self.root, f.path, f.include_hidden)
        except PathRefused as e:
            self.send(error_message(f.id, e.reason, -1))
            return
        self.send(_dir_message(f.id, f.path, files))

    def _on_read_empty_dirs(self, rd: pb.ReadEmptyDirs) -> None:
        try:
            resp = empty_dirs(self.root, rd.path, rd.include_hidden)
        except PathRefused as e:
            self.send(error_message(0, e.reason, 0))
            return
        m = pb.Message()
        m.file_response.empty_dirs.CopyFrom(resp)
        self.send(m)

    def _answer(self, job_id: int, file_num: int, op: Callable[[], None]) -> None:
        """Run a file operation; C{done} or C{error} as RustDesk's handle_result."""
        try:
            op()
        except PathRefused as e:
            self.send(error_message(job_id, e.reason, file_num))
            return
        except OSError as e:
            self.send(error_message(job_id, e.strerror or str(e), file_num))
            return
        self.send(done_message(job_id, file_num))

    def _on_create(self, c: pb.FileDirCreate) -> None:
        def op() -> None:
            fd, name, _ = self.root.open_parent(c.path, create=True)
            try:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, dir_fd=fd)  # create_dir_all: existing is fine
            finally:
                os.close(fd)

        self._answer(c.id, 0, op)

    def _on_remove_file(self, f: pb.FileRemoveFile) -> None:
        def op() -> None:
            fd, name, _ = self.root.open_parent(f.path)
            try:
                os.unlink(name, dir_fd=fd)
            finally:
                os.close(fd)

        self._answer(f.id, f.file_num, op)

    def _on_remove_dir(self, d: pb.FileRemoveDir) -> None:
        def op() -> None:
            fd, name, _ = self.root.open_parent(d.path)
            try:
                if d.recursive:
                    _remove_empty_tree(fd, name)
                else:
                    os.rmdir(name, dir_fd=fd)
            finally:
                os.close(fd)

        self._answer(d.id, 0, op)

    def _on_rename(self, r: pb.FileRename) -> None:
        def op() -> None:
            if not r.new_name or "/" in r.new_name or r.new_name in (".", ".."):
                raise PathRefused("invalid new name")
            fd, name, _ = self.root.open_parent(r.path)
            try:
                os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                os.close(fd)
                raise PathRefused(NOT_EXISTS) from None
            try:
                self.root.lexical(r.new_name)
                os.rename(name, r.new_name, src_dir_fd=fd, dst_dir_fd=fd)
            finally:
                os.close(fd)

        self._answer(r.id, 0, op)

    # -- jobs ---------------------------------------------------------------

    def _room_for(self, job_id: int) -> bool:
        if job_id in self.jobs:
            self.send(error_message(job_id, "job id already in use", 0))
            return False
        if len(self.jobs) >= MAX_JOBS:
            _log.info("Job {id} refused: {n} jobs running", id=job_id, n=len(self.jobs))
            self.send(error_message(job_id, f"too many transfers (at most {MAX_JOBS})", 0))
            return False
        return True

    def _add(self, job: Job) -> None:
        self.jobs[job.id] = job
        job.on_end = self._job_ended

    def _job_ended(self, job: Job) -> None:
        if self.jobs.get(job.id) is job:
            del self.jobs[job.id]
        self._ended.append(job.id)
        del self._ended[:-_MAX_ENDED_REMEMBERED]
        if not any(isinstance(j, DownloadJob) for j in self.jobs.values()):
            self._stop_pump()

    def _on_send(self, s: pb.FileTransferSendRequest) -> None:
        if not self._room_for(s.id):
            return
        try:
            base, files = recursive_files(self.root, s.path, s.include_hidden)
        except PathRefused as e:
            _log.info("Download of {path!r} refused: {reason}", path=s.path[:200], reason=e.reason)
            # RustDesk: file_num 0 for a path it cannot read, -1 for too many files.
            self.send(error_message(s.id, e.reason, -1 if isinstance(e, TooManyFiles) else 0))
            return
        self.send(_dir_message(s.id, s.path, files))
        job = DownloadJob(s.id, base, self.root, base, files, self.send, self.clock, self.digests)
        self._add(job)
        self._start_pump()
        job.start(s.file_num)
        self._schedule()

    def _on_receive(self, r: pb.FileTransferReceiveRequest) -> None:
        if not self._room_for(r.id):
            return
        if len(r.files) > MAX_FILES:
            self.send(error_message(r.id, f"too many files (at most {MAX_FILES})", -1))
            return
        job = UploadJob(
            r.id, r.path, self.root, list(r.files), self.send, self.clock, self.rustdesk_resume
        )
        refused = job.refused_name()
        if refused is not None:
            _log.info("Upload to {path!r} refused: {reason}", path=r.path[:200], reason=refused[1])
            self.send(error_message(r.id, refused[1], refused[0]))
            return
        self._add(job)

    def _on_send_confirm(self, c: pb.FileTransferSendConfirmRequest) -> None:
        job = self.jobs.get(c.id)
        if job is None:
            self._job(c.id, Job, "send_confirm")
            return
        if isinstance(job, (DownloadJob, UploadJob)):
            job.confirm(c)
        self._schedule()

    def _on_cancel(self, c: pb.FileTransferCancel) -> None:
        job = self.jobs.get(c.id)
        if job is not None:
            job.cancel()

    # -- flow control: the transport's push producer -------------------------

    def _start_pump(self) -> None:
        if self._registered or self._register is None:
            return
        try:
            self._register(self)
        except RuntimeError:
            # Another producer holds the transport; blocks still go out,
            # only without the transport's back-pressure.
            _log.warn("Could not register the file producer on the transport")
            return
        self._registered = True

    def _stop_pump(self) -> None:
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        if self._registered:
            self._registered = False
            # A transport resumes only a producer it paused while registered:
            # the next registration must not start out paused, or its
            # download never sends a block (a download after a cancelled one).
            self._paused = False
            if self._unregister is not None:
                self._unregister()

    def _sending(self) -> DownloadJob | None:
        for job in self.jobs.values():
            if isinstance(job, DownloadJob) and job.sending:
                return job
        return None

    def _schedule(self) -> None:
        if self._paused or self.closed or self._pump_call is not None:
            return
        if self._sending() is not None:
            self._pump_call = self.clock.callLater(0, self._pump)

    def _pump(self) -> None:
        self._pump_call = None
        for _ in range(BLOCKS_PER_TURN):
            if self._paused or self.closed:
                return
            job = self._sending()
            if job is None:
                return
            try:
                job.send_block()
            except Exception:
                _log.failure("Download {id} failed", id=job.id)
                job.fail("internal error", job.file_num)
        self._schedule()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._schedule()

    def stopProducing(self) -> None:
        # The transport is going away and drops its producer itself:
        # unregistering from inside its connectionLost is not needed.
        self._registered = False
        self.close()


def _dir_message(job_id: int, path: str, files: list[pb.FileEntry]) -> pb.Message:
    m = pb.Message()
    d = m.file_response.dir
    d.id, d.path = job_id, path
    d.entries.extend(files)
    return m


def _remove_empty_tree(parent_fd: int, name: str) -> None:
    """RustDesk's C{remove_all_empty_dir}: empty directories and links go, files stay.

    Walks by descriptor without following links; a directory that still
    holds files is left (and reported by the final C{rmdir}).
    """
    fd = os.open(
        name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd
    )
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False).st_mode) for e in it]
        for child, mode in entries:
            if stat.S_ISDIR(mode):
                with contextlib.suppress(OSError):
                    _remove_empty_tree(fd, child)
            elif stat.S_ISLNK(mode):
                with contextlib.suppress(OSError):
                    os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


_ACTIONS: dict[str, Callable[[HostFiles, Any], None]] = {
    "read_dir": lambda s, m: s._on_read_dir(m),
    "all_files": lambda s, m: s._on_all_files(m),
    "read_empty_dirs": lambda s, m: s._on_read_empty_dirs(m),
    "create": lambda s, m: s._on_create(m),
    "remove_dir": lambda s, m: s._on_remove_dir(m),
    "remove_file": lambda s, m: s._on_remove_file(m),
    "rename": lambda s, m: s._on_rename(m),
    "send": lambda s, m: s._on_send(m),
    "receive": lambda s, m: s._on_receive(m),
    "send_confirm": lambda s, m: s._on_send_confirm(m),
    "cancel": lambda s, m: s._on_cancel(m),
}
