"""What the viewer's download and upload jobs share: results, errors, the job base.

One job per transfer, keyed by the job id the viewer chose; L{FileClient}
hands each job the host's C{FileResponse}s and C{FileAction}s that carry its
id (docs/protocol.rst §12.3, §12.4; rustdesk C{src/client/io_loop.rs},
hbb_common C{src/fs.rs} C{TransferJob}).  The jobs
(L{litedesk.files.client_download}, L{litedesk.files.client_upload}) are
sans-IO apart from the local file system: they send through a L{JobLink}
and finish their L{Transfer}.  Nothing the host sends raises out of a job:
a message that makes no sense ends the job with a reason.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.proto import message_pb2 as pb

__all__ = [
    "MAX_FILES",
    "FileTransferError",
    "Job",
    "JobLink",
    "Progress",
    "ProgressEvent",
    "Transfer",
    "TransferResult",
    "host_reason",
    "remote_basename",
    "safe_relative",
]

_log = Logger(namespace="litedesk.files.client")

#: The most files one transfer may list: what a host can make us hold.
MAX_FILES = 100_000
# Host errors that mean the path is not there (RustDesk: "Not exists";
# a Linux host's OS error).
_NOT_FOUND = ("not exists", "no such file", "not found")


class FileTransferError(Exception):
    """A listing or transfer failed; C{reason} is one user-facing line."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split())[:300] or "failed"
        super().__init__(reason)
        self.reason = reason


def host_reason(error: str, path: str) -> str:
    """The line to show for the host's C{FileTransferError.error} about C{path}."""
    text = " ".join(error.split())[:300]
    if text.lower().startswith(_NOT_FOUND):
        return f"not found: {path}"
    return text or "the host refused"


@dataclass(frozen=True)
class ProgressEvent:
    """How far a transfer is: the current file and the whole transfer, in bytes."""

    name: str
    file_done: int
    file_size: int
    total_done: int
    total_size: int


@dataclass
class TransferResult:
    """What a finished transfer did.

    @ivar files: files transferred (skipped ones not counted).
    @ivar bytes: file bytes moved by this transfer (a resumed partial's
        bytes not counted).
    @ivar skipped: names of files left alone because they exist on the
        receiving side (no overwrite).
    @ivar resumed: bytes partials already held when the transfer resumed them.
    @ivar target: where the files went: a local path (download) or a path on
        the host (upload).
    """

    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    resumed: int = 0
    target: str = ""


class Transfer:
    """One running download or upload.

    @ivar done: fires with a L{TransferResult}, or fails with
        L{FileTransferError}.
    """

    def __init__(self, job_id: int, on_cancel: Callable[[Transfer], None]) -> None:
        self.id = job_id
        self.done: Deferred[TransferResult] = Deferred()
        self._on_cancel = on_cancel

    def cancel(self) -> None:
        """Stop the transfer: the host is told, a partial download stays for
        a later resume, and L{done} fails with C{"cancelled"}."""
        if not self.done.called:
            self._on_cancel(self)


class JobLink(Protocol):
    """What a job needs from L{FileClient}."""

    def send_action(self, action: pb.FileAction) -> None: ...

    def send_response(self, response: pb.FileResponse) -> None: ...

    def job_ended(self, job: Job) -> None: ...

    def wake(self) -> None:
        """An upload has blocks to send: pump when not paused."""


Progress = Callable[[ProgressEvent], None] | None


class Job:
    """What downloads and uploads share: id, result, ending."""

    def __init__(self, job_id: int, link: JobLink, transfer: Transfer, progress: Progress) -> None:
        self.id = job_id
        self.link = link
        self.transfer = transfer
        self.progress = progress
        self.result = TransferResult()
        self.total_size = 0
        self.total_done = 0
        self.ended = False

    @property
    def sending(self) -> bool:
        """Whether the job has a block to send now (uploads only)."""
        return False

    def send_block(self) -> None:
        """Send the next block (uploads only)."""

    def response(self, resp: pb.FileResponse) -> None:
        raise NotImplementedError

    def action(self, action: pb.FileAction) -> None:
        """A C{FileAction} from the host with this job's id (ignored unless an upload)."""

    def release(self) -> None:
        """Close local files; keep partials for a later resume."""

    def _report(self, name: str, file_done: int, file_size: int) -> None:
        if self.progress is not None:
            self.progress(
                ProgressEvent(name, file_done, file_size, self.total_done, self.total_size)
            )

    def succeed(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.release()
        self.link.job_ended(self)
        self.transfer.done.callback(self.result)

    def fail(self, reason: str, *, tell_host: bool = False) -> None:
        """End the job with C{reason}; C{tell_host}: cancel it on the host too."""
        if self.ended:
            return
        self.ended = True
        _log.info("File transfer {id} failed: {reason}", id=self.id, reason=reason)
        if tell_host:
            self.link.send_action(pb.FileAction(cancel=pb.FileTransferCancel(id=self.id)))
        self.release()
        self.link.job_ended(self)
        self.transfer.done.errback(FileTransferError(reason))


def safe_relative(name: str) -> str | None:
    """A host-given relative name as a safe POSIX path, or C{None} when it would
    lead out of the target (absolute, C{..}, NUL)."""
    name = name.replace("\\", "/")
    if "\0" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def remote_basename(remote: str, answered: str = "") -> str:
    """The last component of a host path (either separator), else of
    C{answered} (the host's resolved path), else C{"download"}."""
    for p in (remote, answered):
        base = posixpath.basename(p.replace("\\", "/").rstrip("/"))
        if base and base not in (".", ".."):
            return base
    return "download"
