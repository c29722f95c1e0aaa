"""The viewer's side of file transfer: L{FileClient} (docs/protocol.rst §12).

L{FileClient} drives a file-transfer session (a L{ViewerSession} opened
with C{file_transfer}) through RustDesk's messages, against a LiteDesk or a
stock RustDesk host alike, with a Deferred API that the headless CLI
(L{litedesk.viewer.file_actions}) and the window share:

  - L{FileClient.list_dir}: one level of a directory on the host;
  - L{FileClient.download} and L{FileClient.upload}: files and folders
    (recursive) both ways, scp-like targets, each a L{Transfer} whose
    C{done} fires with a L{TransferResult} or fails with
    L{FileTransferError}.

The transfer state machines are L{litedesk.files.client_download} and
L{litedesk.files.client_upload}; this module routes the host's messages to
them by job id, matches listings (which carry no id) to their requests, and
paces uploads: it is the transport's push producer, and reads the next
block only while the transport is not paused.
Every message from the host is handled without raising: unknown ids are
ignored, nonsense ends the job it names with a reason.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from litedesk.files.client_download import DownloadJob
from litedesk.files.client_jobs import (
    FileTransferError,
    Job,
    Progress,
    ProgressEvent,
    Transfer,
    TransferResult,
    host_reason,
)
from litedesk.files.client_upload import UploadJob, scan_sources
from litedesk.proto import message_pb2 as pb

__all__ = [
    "LIST_TIMEOUT",
    "FileClient",
    "FileTransferError",
    "ProgressEvent",
    "Transfer",
    "TransferResult",
]

#: How long a listing may go unanswered (RustDesk 1.4.9 sends nothing when
#: it cannot read a directory).
LIST_TIMEOUT = 15.0
#: Blocks an upload sends per reactor turn before letting others run.
PUMP_BLOCKS = 8
#: Listings and transfers one client keeps open at once.
MAX_PENDING = 64
_DIR_TYPES = (pb.Dir, pb.DirLink, pb.DirDrive)


def _norm(path: str) -> str:
    p = path.replace("\\", "/")
    return posixpath.normpath(p) if p else ""


def _answers(requested: str, answered: str) -> bool:
    """Whether a listing of C{answered} (the host's resolved path) can be the
    answer to a request for C{requested}."""
    req, ans = _norm(requested), _norm(answered)
    if req in ("", ".", "~"):
        return True
    if req.startswith("/"):
        return ans == req
    return ans == req or ans.endswith("/" + req)


class _Listing:
    def __init__(self, path: str, d: Deferred[pb.FileDirectory], timer: IDelayedCall) -> None:
        self.path = path
        self.d = d
        self.timer = timer


@implementer(IPushProducer)
class FileClient:
    """File transfer over one logged-in (or logging-in) file-transfer session.

    @ivar home: the listing the host sent unasked after the login (the
        login's directory), once it came.
    """

    _log = Logger()

    def __init__(self, session: Any, clock: IReactorTime | None = None) -> None:
        """
        @param session: a L{litedesk.session.viewer_session.ViewerSession}
            (or anything with C{send_message}, C{transport}, C{ended},
            C{error} and the C{on_file_response}/C{on_file_action} hooks).
        """
        self._session = session
        self._clock: IReactorTime = clock if clock is not None else session.clock
        session.on_file_response = self._on_response
        session.on_file_action = self._on_action
        self.home: pb.FileDirectory | None = None
        # The host lists the login's directory unasked right after the login
        # response: a client made later has most likely missed it.
        logged_in = getattr(session, "logged_in", None)
        self._expect_home = not (isinstance(logged_in, Deferred) and logged_in.called)
        self._listings: list[_Listing] = []
        self._jobs: dict[int, Job] = {}
        self._next_id = 1
        self._paused = False
        self._registered = False
        self._pump_call: IDelayedCall | None = None
        self._gone: str | None = None
        ended = getattr(session, "ended", None)
        if isinstance(ended, Deferred):
            ended.addBoth(self._session_ended)

    # -- the API ---------------------------------------------------------------

    def list_dir(self, remote: str, include_hidden: bool = False) -> Deferred[pb.FileDirectory]:
        """One level of C{remote} on the host (C{""}: the login's directory).

        Fails with L{FileTransferError} when the host refuses or does not
        answer within L{LIST_TIMEOUT}.
        """
        d: Deferred[pb.FileDirectory] = Deferred()
        if self._gone is not None:
            d.errback(FileTransferError(self._gone))
            return d
        if len(self._listings) >= MAX_PENDING:
            d.errback(FileTransferError("too many listings at once"))
            return d
        timer = self._clock.callLater(LIST_TIMEOUT, self._list_timed_out, d)
        self._listings.append(_Listing(remote, d, timer))
        self._send(
            pb.Message(
                file_action=pb.FileAction(
                    read_dir=pb.ReadDir(path=remote, include_hidden=include_hidden)
                )
            )
        )
        return d

    def download(
        self,
        remote: str,
        local: Path,
        *,
        overwrite: bool = False,
        include_hidden: bool = False,
        progress: Progress = None,
    ) -> Transfer:
        """Copy C{remote} (a file or a folder) from the host to C{local}, or into
        C{local} when that is an existing directory."""
        transfer, job_id = self._new_transfer()
        if transfer.done.called:
            return transfer
        job = DownloadJob(job_id, self, transfer, progress, remote, Path(local), overwrite)
        self._jobs[job_id] = job
        job.start(include_hidden)
        return transfer

    def upload(
        self,
        local: Path,
        remote: str,
        *,
        overwrite: bool = False,
        include_hidden: bool = False,
        progress: Progress = None,
    ) -> Transfer:
        """Copy C{local} (a file or a folder) to C{remote} on the host, or into
        C{remote} when that is an existing directory there (looked up first)."""
        transfer, job_id = self._new_transfer()
        if transfer.done.called:
            return transfer
        local = Path(local)
        try:
            sources = scan_sources(local, include_hidden)
        except FileTransferError as e:
            transfer.done.errback(e)
            return transfer
        d = self._destination(remote, local.name)

        def start(dest: str) -> None:
            if transfer.done.called:  # cancelled while looking
                return
            job = UploadJob(job_id, self, transfer, progress, sources, dest, overwrite, local.name)
            self._jobs[job_id] = job
            self._register()
            job.start()

        def failed(f: Any) -> None:
            if not transfer.done.called:
                transfer.done.errback(f)

        d.addCallbacks(start, failed)
        return transfer

    def _destination(self, remote: str, name: str) -> Deferred[str]:
        """Where an upload of C{name} to C{remote} goes: inside C{remote} when
        that is a directory on the host, else C{remote} itself."""
        norm = remote.replace("\\", "/")
        if norm in ("", ".", "/", "~") or norm.endswith("/"):
            return self.list_dir(remote).addCallback(lambda d: posixpath.join(d.path, name))
        parent, base = posixpath.split(norm.rstrip("/"))

        def decide(listing: pb.FileDirectory) -> str:
            for e in listing.entries:
                if e.name == base and e.entry_type in _DIR_TYPES:
                    return posixpath.join(remote, name)
            return remote

        def missing(f: Failure) -> str | Failure:
            # No such parent: the host creates it (RustDesk's writer makes the
            # parents of each file), or says why not.
            err = f.value
            if isinstance(err, FileTransferError) and err.reason.startswith("not found"):
                return remote
            return f

        return self.list_dir(parent, include_hidden=True).addCallbacks(decide, missing)

    def _new_transfer(self) -> tuple[Transfer, int]:
        job_id = self._next_id
        self._next_id += 1
        transfer = Transfer(job_id, self._cancel)
        if self._gone is not None:
            transfer.done.errback(FileTransferError(self._gone))
        elif len(self._jobs) >= MAX_PENDING:
            transfer.done.errback(FileTransferError("too many transfers at once"))
        return transfer, job_id

    def _cancel(self, transfer: Transfer) -> None:
        job = self._jobs.get(transfer.id)
        if job is not None:
            job.fail("cancelled", tell_host=True)
        elif not transfer.done.called:
            transfer.done.errback(FileTransferError("cancelled"))

    # -- JobLink ------------------------------------------------------------

    def send_action(self, action: pb.FileAction) -> None:
        self._send(pb.Message(file_action=action))

    def send_response(self, response: pb.FileResponse) -> None:
        self._send(pb.Message(file_response=response))

    def job_ended(self, job: Job) -> None:
        self._jobs.pop(job.id, None)
        if self._registered and not any(isinstance(j, UploadJob) for j in self._jobs.values()):
            self._registered = False
            transport = self._session.transport
            if transport is not None:
                transport.unregisterProducer()

    def wake(self) -> None:
        if self._pump_call is None and not self._paused:
            self._pump_call = self._clock.callLater(0, self._pump)

    def _send(self, msg: pb.Message) -> None:
        if self._gone is None:
            self._session.send_message(msg)

    # -- uploads: flow control ------------------------------------------------

    def _register(self) -> None:
        transport = self._session.transport
        if self._registered or transport is None:
            return
        try:
            transport.registerProducer(self, True)
        except RuntimeError as e:  # another producer holds the transport
            self._log.warn("Uploads run without flow control: {why}", why=str(e))
            return
        self._registered = True

    def _pump(self) -> None:
        self._pump_call = None
        sent = 0
        for job in list(self._jobs.values()):
            while job.sending and not self._paused and sent < PUMP_BLOCKS:
                job.send_block()
                sent += 1
        if not self._paused and any(j.sending for j in self._jobs.values()):
            self.wake()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self.wake()

    def stopProducing(self) -> None:
        self._paused = True

    # -- the host's messages ----------------------------------------------------

    def _on_response(self, resp: pb.FileResponse) -> None:
        try:
            self._dispatch_response(resp)
        except Exception:
            # A bug here must not take the session down with it.
            self._log.failure("Handling a FileResponse from the host failed")

    def _dispatch_response(self, resp: pb.FileResponse) -> None:
        which = resp.WhichOneof("union")
        if which is None or which == "empty_dirs":
            return
        job_id = getattr(resp, which).id
        if which == "dir" and job_id == 0:
            self._listed(resp.dir)
            return
        if which == "error" and job_id == 0 and self._listings:
            listing = self._listings.pop(0)
            listing.timer.cancel()
            listing.d.errback(FileTransferError(host_reason(resp.error.error, listing.path)))
            return
        job = self._jobs.get(job_id)
        if job is None:
            self._log.debug("Ignoring a {kind} for unknown job {id}", kind=which, id=job_id)
            return
        job.response(resp)

    def _on_action(self, action: pb.FileAction) -> None:
        try:
            which = action.WhichOneof("union")
            if which != "send_confirm":
                return  # the host asking the viewer for things: not served
            job = self._jobs.get(action.send_confirm.id)
            if job is not None:
                job.action(action)
        except Exception:
            self._log.failure("Handling a FileAction from the host failed")

    def _listed(self, d: pb.FileDirectory) -> None:
        listing = next((x for x in self._listings if _answers(x.path, d.path)), None)
        if listing is None:
            if self._expect_home or not self._listings:
                self._expect_home = False
                self.home = d
                return
            # A path the host resolved differently (a symbolic link): the
            # host answers in order.
            listing = self._listings[0]
        self._listings.remove(listing)
        listing.timer.cancel()
        listing.d.callback(d)

    def _list_timed_out(self, d: Deferred[pb.FileDirectory]) -> None:
        for i, listing in enumerate(self._listings):
            if listing.d is d:
                del self._listings[i]
                d.errback(FileTransferError(f"not found: {listing.path} (no answer from the host)"))
                return

    def _session_ended(self, result: object) -> object:
        err = getattr(self._session, "error", None)
        reason = getattr(err, "reason", None) or "disconnected"
        self._gone = str(reason)
        for listing in self._listings:
            listing.timer.cancel()
            listing.d.errback(FileTransferError(self._gone))
        self._listings.clear()
        for job in list(self._jobs.values()):
            job.fail(self._gone)
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        return result
