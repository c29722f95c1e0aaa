"""The viewer's upload job: viewer to host (docs/protocol.rst §12.4).

RustDesk's sending side (rustdesk C{src/client/io_loop.rs}, hbb_common
C{src/fs.rs} C{TransferJob::read}): C{receive} with the file list, then per
file the viewer's digest and the host's answer -- C{send_confirm} (from
byte N) or its own digest of a file it has (then the viewer overwrites,
resumes or skips, and says so with a C{send_confirm}) -- blocks and one
empty block; the viewer's C{done}, answered by C{done}.  A block is read
only when L{FileClient} asks for one (its producer is not paused), so
memory stays flat whatever the file's size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from twisted.logger import Logger

from litedesk.files.blocks import BLOCK_SIZE, encode_block
from litedesk.files.client_jobs import (
    MAX_FILES,
    FileTransferError,
    Job,
    JobLink,
    Progress,
    Transfer,
    host_reason,
)
from litedesk.files.partial import os_reason
from litedesk.proto import message_pb2 as pb

__all__ = ["UploadJob", "scan_sources"]

_log = Logger(namespace="litedesk.files.client")


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
