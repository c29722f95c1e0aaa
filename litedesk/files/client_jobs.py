"""The viewer's download and upload jobs: RustDesk's transfer state machines.

One job per transfer, keyed by the job id the viewer chose; L{FileClient}
hands each job the host's C{FileResponse}s and C{FileAction}s that carry its
id (docs/protocol.rst §12.3, §12.4; rustdesk C{src/client/io_loop.rs},
hbb_common C{src/fs.rs} C{TransferJob}).  The jobs are sans-IO apart from
the local file system: they send through a L{JobLink} and finish their
L{Transfer}.

A download writes each file through L{PartialFile} (C{NAME.download} and
C{NAME.digest}), so a transfer that is cancelled, cut off or killed leaves
a partial that the next download of the same source resumes.  An upload
reads a block only when L{FileClient} asks for one (its producer is not
paused), so its memory stays flat whatever the file's size.

Nothing the host sends raises out of a job: a message that makes no sense
ends the job with a reason, and names from the host never lead outside the
download's target.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from litedesk.files.blocks import (
    BLOCK_SIZE,
    MAX_BLOCK_PAYLOAD,
    BlockError,
    decode_block,
    encode_block,
)
from litedesk.files.partial import PartialError, PartialFile, os_reason
from litedesk.proto import message_pb2 as pb

__all__ = [
    "MAX_FILES",
    "DownloadJob",
    "FileTransferError",
    "JobLink",
    "ProgressEvent",
    "Transfer",
    "TransferResult",
    "UploadJob",
    "host_reason",
]

_log = Logger(namespace="litedesk.files.client")

#: The most files one transfer may list: what a host can make us hold.
MAX_FILES = 100_000
# send_confirm.offset_blk is a uint32 (hbb_common message.proto): a partial
# longer than that starts over instead of resuming.
_MAX_OFFSET = 2**32 - 1
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


class DownloadJob(Job):
    """Host to viewer: C{send}, then per file digest, confirm, blocks, empty block; C{done}."""

    def __init__(
        self,
        job_id: int,
        link: JobLink,
        transfer: Transfer,
        progress: Progress,
        remote: str,
        local: Path,
        overwrite: bool,
    ) -> None:
        super().__init__(job_id, link, transfer, progress)
        self.remote = remote
        self.local = local
        self.overwrite = overwrite
        self.state = "list"
        self.targets: list[Path] = []
        self.names: list[str] = []
        self.next_file = 0
        self.current: PartialFile | None = None
        self.current_num = -1

    def start(self, include_hidden: bool) -> None:
        self.link.send_action(
            pb.FileAction(
                send=pb.FileTransferSendRequest(
                    id=self.id, path=self.remote, include_hidden=include_hidden
                )
            )
        )

    def response(self, resp: pb.FileResponse) -> None:
        which = resp.WhichOneof("union")
        if which == "dir":
            self._listed(resp.dir)
        elif which == "digest":
            self._digest(resp.digest)
        elif which == "block":
            self._block(resp.block)
        elif which == "done":
            self._done()
        elif which == "error":
            self._error(resp.error)

    def _listed(self, d: pb.FileDirectory) -> None:
        if self.state != "list":
            return
        if len(d.entries) > MAX_FILES:
            self.fail(f"{self.remote}: more than {MAX_FILES} files", tell_host=True)
            return
        base = remote_basename(self.remote, d.path)
        single = len(d.entries) == 1 and d.entries[0].name == ""
        root = self.local / base if self.local.is_dir() else self.local
        self.result.target = str(root)
        for e in d.entries:
            rel = "" if single else safe_relative(e.name)
            if rel is None or (not single and not rel):
                self.fail(f"the host sent an unsafe file name: {e.name[:100]!r}", tell_host=True)
                return
            self.targets.append(root / rel if rel else root)
            self.names.append(rel or base)
            self.total_size += e.size
        if not single:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self.fail(f"{root}: {os_reason(e)}", tell_host=True)
                return
        self.state = "confirm"

    def _digest(self, dg: pb.FileTransferDigest) -> None:
        i = dg.file_num
        if self.state != "confirm" or not self.next_file <= i < len(self.targets):
            self.fail("the host sent a digest out of turn", tell_host=True)
            return
        self.next_file = i + 1
        target, name = self.targets[i], self.names[i]
        if not self.overwrite and os.path.lexists(target):
            self.result.skipped.append(name)
            self._confirm(i, skip=True)
            return
        offset = PartialFile.resumable(target, dg.file_size, dg.last_modified)
        if offset > _MAX_OFFSET:
            offset = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise PartialError(f"{target} is a directory")
            self.current = PartialFile.open(target, dg.file_size, dg.last_modified, offset)
        except OSError as e:
            self.fail(f"{target}: {os_reason(e)}", tell_host=True)
            return
        except PartialError as e:
            self.fail(str(e), tell_host=True)
            return
        if offset:
            _log.info(
                "Resuming {name} after {offset} of {size} bytes",
                name=name,
                offset=offset,
                size=dg.file_size,
            )
            self.result.resumed += offset
            self.total_done += offset
        self.current_num = i
        self.state = "receive"
        self._confirm(i, offset=offset)
        self._report(name, offset, dg.file_size)

    def _confirm(self, i: int, *, skip: bool = False, offset: int = 0) -> None:
        c = pb.FileTransferSendConfirmRequest(id=self.id, file_num=i)
        if skip:
            c.skip = True
        else:
            c.offset_blk = offset
        self.link.send_action(pb.FileAction(send_confirm=c))

    def _block(self, b: pb.FileTransferBlock) -> None:
        partial = self.current
        if self.state != "receive" or partial is None or b.file_num != self.current_num:
            self.fail("the host sent a block out of turn", tell_host=True)
            return
        name = self.names[self.current_num]
        if not b.data:
            try:
                partial.finish()
            except PartialError as e:
                partial.abort()
                self.fail(f"{name}: {e}", tell_host=True)
                return
            self.current = None
            self.result.files += 1
            self.state = "confirm"
            return
        try:
            data = decode_block(b.data, b.compressed, min(partial.remaining, MAX_BLOCK_PAYLOAD))
        except BlockError as e:
            self.fail(f"{name}: {e}", tell_host=True)
            return
        try:
            partial.write(data)
        except PartialError as e:
            # A local write failure (a full disk): the partial is useless.
            partial.abort()
            self.current = None
            self.fail(str(e), tell_host=True)
            return
        self.result.bytes += len(data)
        self.total_done += len(data)
        self._report(name, partial.written, partial.size)

    def _done(self) -> None:
        if self.state == "receive":
            self.fail("the host ended the transfer in the middle of a file")
        elif self.state == "list":
            self.fail("the host ended the transfer before listing it")
        else:
            self.succeed()

    def _error(self, e: pb.FileTransferError) -> None:
        # RustDesk's host reports a job whose only file was skipped as the
        # error "skipped" (fs.rs job_error).
        if e.error == "skipped" and self.result.skipped and self.state == "confirm":
            self.succeed()
            return
        self.fail(host_reason(e.error, self.remote))

    def release(self) -> None:
        if self.current is not None:
            self.current.abort(keep=True)
            self.current = None


@dataclass
class _Source:
    path: Path
    name: str  # relative, "/"-separated; "" for a single file
    size: int
    modified: int


def scan_sources(local: Path, include_hidden: bool) -> list[_Source]:
    """The files to upload from C{local}: the file itself, or every regular file
    below the directory (symbolic links skipped, as RustDesk's
    C{read_dir_recursive} does).

    @raise FileTransferError: C{local} does not exist or has too many files.
    """
    try:
        st = local.stat()
    except OSError:
        raise FileTransferError(f"not found: {local}") from None
    if not local.is_dir():
        return [_Source(local, "", st.st_size, int(st.st_mtime))]
    found: list[_Source] = []
    for dirpath, dirnames, filenames in os.walk(local):
        if not include_hidden:
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        dirnames.sort()
        for f in sorted(filenames):
            if not include_hidden and f.startswith("."):
                continue
            p = Path(dirpath) / f
            try:
                fst = p.lstat()
            except OSError:
                continue
            if not p.is_file() or p.is_symlink():
                continue
            found.append(
                _Source(p, p.relative_to(local).as_posix(), fst.st_size, int(fst.st_mtime))
            )
            if len(found) > MAX_FILES:
                raise FileTransferError(f"{local}: more than {MAX_FILES} files")
    return found


class UploadJob(Job):
    """Viewer to host: C{receive}, then per file digest, the host's answer,
    blocks, empty block; the viewer's C{done}, answered by C{done}."""

    def __init__(
        self,
        job_id: int,
        link: JobLink,
        transfer: Transfer,
        progress: Progress,
        sources: list[_Source],
        remote: str,
        overwrite: bool,
        label: str,
    ) -> None:
        super().__init__(job_id, link, transfer, progress)
        self.sources = sources
        self.remote = remote
        self.overwrite = overwrite
        self.label = label
        self.file_num = 0
        self.state = "digest"
        self.reading: BinaryIO | None = None
        self.file_done = 0
        self.total_size = sum(s.size for s in sources)
        self.result.target = remote

    def start(self) -> None:
        files = [
            pb.FileEntry(entry_type=pb.File, name=s.name, size=s.size, modified_time=s.modified)
            for s in self.sources
        ]
        self.link.send_action(
            pb.FileAction(
                receive=pb.FileTransferReceiveRequest(
                    id=self.id, path=self.remote, files=files, total_size=self.total_size
                )
            )
        )
        self._next_digest()

    def _name(self) -> str:
        return self.sources[self.file_num].name or self.label

    def _next_digest(self) -> None:
        if self.file_num >= len(self.sources):
            self.state = "finishing"
            done = pb.FileTransferDone(id=self.id, file_num=len(self.sources))
            self.link.send_response(pb.FileResponse(done=done))
            return
        s = self.sources[self.file_num]
        self.state = "digest"
        dg = pb.FileTransferDigest(
            id=self.id,
            file_num=self.file_num,
            last_modified=s.modified,
            file_size=s.size,
            is_resume=True,
        )
        self.link.send_response(pb.FileResponse(digest=dg))

    def action(self, action: pb.FileAction) -> None:
        if action.WhichOneof("union") != "send_confirm":
            return
        c = action.send_confirm
        if self.state != "digest" or c.file_num != self.file_num:
            return  # RustDesk too ignores a confirm for another file (fs.rs confirm)
        if c.WhichOneof("union") == "skip" and c.skip:
            self._skip()
        else:
            self._begin(c.offset_blk)

    def response(self, resp: pb.FileResponse) -> None:
        which = resp.WhichOneof("union")
        if which == "digest":
            self._host_has(resp.digest)
        elif which == "error":
            self.fail(host_reason(resp.error.error, self.remote))
        elif which == "done":
            if self.state == "finishing":
                self.succeed()
            else:
                self.fail("the host ended the upload early")

    def _host_has(self, dg: pb.FileTransferDigest) -> None:
        """The host has a file (or partial) by this name (RustDesk's
        C{is_write_need_confirmation}); the viewer decides and tells it."""
        if self.state != "digest" or dg.file_num != self.file_num or not dg.is_upload:
            return
        size = self.sources[self.file_num].size
        resume = dg.is_identical and 0 < dg.transferred_size <= size
        if not (resume or self.overwrite):
            self._confirm(skip=True)
            self._skip()
            return
        offset = dg.transferred_size if resume else 0
        self._confirm(offset=offset)
        self._begin(offset)

    def _confirm(self, *, skip: bool = False, offset: int = 0) -> None:
        c = pb.FileTransferSendConfirmRequest(id=self.id, file_num=self.file_num)
        if skip:
            c.skip = True
        else:
            c.offset_blk = offset
        self.link.send_action(pb.FileAction(send_confirm=c))

    def _skip(self) -> None:
        self.result.skipped.append(self._name())
        self.file_num += 1
        self._next_digest()

    def _begin(self, offset: int) -> None:
        s = self.sources[self.file_num]
        if offset > s.size:
            self.fail(f"the host asked to resume {self._name()} after its end", tell_host=True)
            return
        try:
            f = s.path.open("rb")
            f.seek(offset)
        except OSError as e:
            self._read_failed(e)
            return
        self.reading = f
        self.file_done = offset
        if offset:
            _log.info("Host resumes {name} after {offset} bytes", name=self._name(), offset=offset)
            self.result.resumed += offset
            self.total_done += offset
        self.state = "send"
        self.link.wake()

    @property
    def sending(self) -> bool:
        return self.state == "send" and not self.ended

    def send_block(self) -> None:
        f = self.reading
        if f is None:
            return
        try:
            data = f.read(BLOCK_SIZE)
        except OSError as e:
            self._read_failed(e)
            return
        name = self._name()
        payload, compressed = encode_block(data, name) if data else (b"", False)
        block = pb.FileTransferBlock(
            id=self.id, file_num=self.file_num, data=payload, compressed=compressed
        )
        self.link.send_response(pb.FileResponse(block=block))
        if data:
            self.file_done += len(data)
            self.total_done += len(data)
            self.result.bytes += len(data)
            self._report(name, self.file_done, self.sources[self.file_num].size)
            return
        f.close()
        self.reading = None
        self.result.files += 1
        self.file_num += 1
        self._next_digest()

    def _read_failed(self, e: OSError) -> None:
        self.fail(f"{self.sources[self.file_num].path}: {os_reason(e)}", tell_host=True)

    def release(self) -> None:
        if self.reading is not None:
            self.reading.close()
            self.reading = None
