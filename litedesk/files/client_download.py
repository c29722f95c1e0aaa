"""The viewer's download job: host to viewer (docs/protocol.rst §12.3).

RustDesk's receiving side (rustdesk C{src/client/io_loop.rs}, hbb_common
C{src/fs.rs} C{TransferJob::write}): C{send}, the host's recursive listing,
then per file its digest, the viewer's confirm (a resume offset, or skip
when the file exists here and overwriting was not asked for), blocks and one
empty block; C{done} at the end.  Each file is written through
L{PartialFile} (C{NAME.download} and C{NAME.digest}), so a transfer that is
cancelled, cut off or killed leaves a partial that the next download of the
same source resumes.  Names from the host never lead outside the target.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.logger import Logger

from litedesk.files.blocks import MAX_BLOCK_PAYLOAD, BlockError, decode_block
from litedesk.files.client_jobs import (
    MAX_FILES,
    Job,
    JobLink,
    Progress,
    Transfer,
    host_reason,
    remote_basename,
    safe_relative,
)
from litedesk.files.partial import PartialError, PartialFile, os_reason
from litedesk.proto import message_pb2 as pb

__all__ = ["DownloadJob"]

_log = Logger(namespace="litedesk.files.client")
# send_confirm.offset_blk is a uint32 (hbb_common message.proto): a partial
# longer than that starts over instead of resuming.
_MAX_OFFSET = 2**32 - 1


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
        #: the resolved folder a folder download writes below (None: one file)
        self.root: Path | None = None

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
                self.root = root.resolve()
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
            # A symbolic link already in the target directory must not take
            # a name from the host elsewhere (checked before making parents).
            if self.root is not None and not target.parent.resolve().is_relative_to(self.root):
                raise PartialError(f"{name} leads outside {self.result.target}")
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
