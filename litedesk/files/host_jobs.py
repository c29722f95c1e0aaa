"""The host's download and upload jobs: RustDesk's transfer state machines.

One job per transfer, keyed by the id the viewer chose (docs/protocol.rst
§12.3, §12.4).  L{DownloadJob} follows hbb_common C{src/fs.rs}
C{TransferJob::read}/C{confirm} as a host runs it (rustdesk
C{src/server/connection.rs}): per file a digest, the viewer's
C{send_confirm} (skip, or the byte offset to start at), the blocks, one
empty block; C{done} after the last file.  L{UploadJob} follows
C{TransferJob::write} and C{is_write_need_confirmation} as rustdesk
C{src/ui_cm_interface.rs} runs them: per file the viewer's digest is
answered with C{send_confirm} (no such file, or resume after a partial) or
with the host's own digest (the viewer decides to overwrite by sending
blocks); the blocks go to a L{PartialFile}, renamed onto the target when
the empty block comes and the size is right.

The jobs are sans-IO apart from the file system: they build messages and
hand them to C{send}; L{litedesk.files.host_service.HostFiles} routes the
viewer's messages to them and drives the downloads' blocks.  Nothing the
viewer sends raises out of a job: what makes no sense ends the job with an
C{error} for the viewer.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.files.blocks import BLOCK_SIZE, BlockError, decode_block, encode_block
from litedesk.files.partial import PartialError, PartialFile
from litedesk.files.root import FileRoot, PathRefused
from litedesk.proto import message_pb2 as pb

__all__ = ["DownloadJob", "Job", "Send", "UploadJob", "done_message", "error_message"]

_log = Logger(namespace="litedesk.files.host")

Send = Callable[[pb.Message], None]


def error_message(job_id: int, error: str, file_num: int) -> pb.Message:
    m = pb.Message()
    e = m.file_response.error
    e.id, e.error, e.file_num = job_id, error, file_num
    return m


def done_message(job_id: int, file_num: int) -> pb.Message:
    m = pb.Message()
    d = m.file_response.done
    d.id, d.file_num = job_id, file_num
    return m


def _join(base: str, name: str) -> str:
    """A list entry's path: the base itself for a file alone (name C{""})."""
    return os.path.join(base, name) if name else base


class Job:
    """What both kinds share: id, the files, accounting, the final log line.

    @ivar ended: the job is over (done, failed or cancelled); its messages
        are ignored from then on.
    """

    kind = "?"

    def __init__(self, job_id: int, path: str, send: Send, clock: IReactorTime) -> None:
        self.id = job_id
        self.path = path
        self.send = send
        self.clock = clock
        self.ended = False
        self.bytes = 0
        self.files_done = 0
        self._started = clock.seconds()
        self.on_end: Callable[[Job], None] = lambda job: None

    def end(self, result: str) -> None:
        """Finish the job (once) and log the transfer's one line."""
        if self.ended:
            return
        self.ended = True
        self.release()
        _log.info(
            "File {kind} {path}: {result}; {bytes} bytes, {files} files in {seconds:.1f} s",
            kind=self.kind,
            path=self.path,
            result=result,
            bytes=self.bytes,
            files=self.files_done,
            seconds=self.clock.seconds() - self._started,
            job=self.id,
            file_transfer=True,
        )
        self.on_end(self)

    def fail(self, error: str, file_num: int) -> None:
        """Tell the viewer C{error} and end the job."""
        if not self.ended:
            self.send(error_message(self.id, error, file_num))
            self.end(f"failed: {error}")

    def release(self) -> None:
        """Close what the job holds (files).  Never raises."""

    def cancel(self) -> None:
        self.end("cancelled")


class DownloadJob(Job):
    """The host sends C{files} (a recursive list below C{base}) to the viewer.

    States per file: C{"digest"} (file opened, digest sent, waiting for the
    viewer's confirm), C{"send"} (blocks go out while the producer runs).
    @param digests: send a digest per file and wait for the confirm (peers
        of RustDesk 1.1.10 or later); else the blocks go at once.
    """

    kind = "download"

    def __init__(
        self,
        job_id: int,
        path: str,
        root: FileRoot,
        base: str,
        files: list[pb.FileEntry],
        send: Send,
        clock: IReactorTime,
        digests: bool = True,
    ) -> None:
        super().__init__(job_id, path, send, clock)
        self.root = root
        self.base = base
        self.files = files
        self.digests = digests
        self.file_num = 0
        self.state = "idle"
        self._fd: int | None = None
        self._name = ""
        self._skipped_last = False

    @property
    def sending(self) -> bool:
        """Whether the job has a block to send now."""
        return self.state == "send" and not self.ended

    def start(self) -> None:
        """After the list went out: the first file."""
        self._next_file()

    def _next_file(self) -> None:
        """Open file C{file_num} and offer it, or finish after the last one."""
        while self.file_num < len(self.files):
            entry = self.files[self.file_num]
            try:
                self._fd, _ = self.root.open_file(_join(self.base, entry.name))
            except PathRefused as e:
                # RustDesk reports the file and goes on with the next one.
                self.send(error_message(self.id, e.reason, self.file_num))
                self.file_num += 1
                continue
            self._name = entry.name or os.path.basename(self.base)
            self._skipped_last = False
            if not self.digests:
                self.state = "send"
                return
            st = os.fstat(self._fd)
            m = pb.Message()
            d = m.file_response.digest
            d.id, d.file_num = self.id, self.file_num
            d.last_modified = max(0, int(st.st_mtime))
            d.file_size = st.st_size
            self.state = "digest"
            self.send(m)
            return
        if self._skipped_last and len(self.files) == 1:
            self.fail("skipped", self.file_num)  # RustDesk's job_error
            return
        self.send(done_message(self.id, len(self.files)))
        self.end("done")

    def confirm(self, c: pb.FileTransferSendConfirmRequest) -> None:
        """The viewer's answer to a digest: skip, or start at C{offset_blk}."""
        if self.state != "digest" or c.file_num != self.file_num:
            _log.debug("Ignoring a confirm for file {n} of job {id}", n=c.file_num, id=self.id)
            return
        which = c.WhichOneof("union")
        if which == "skip" and c.skip:
            self._close()
            self.file_num += 1
            self._skipped_last = True
            self._next_file()
        elif which is not None:
            offset = c.offset_blk if which == "offset_blk" else 0
            if offset and self._fd is not None:
                os.lseek(self._fd, offset, os.SEEK_SET)
            self.state = "send"

    def send_block(self) -> None:
        """Read and send the next block (the empty one at the end of a file)."""
        fd = self._fd
        if fd is None or not self.sending:
            return
        try:
            data = os.read(fd, BLOCK_SIZE)
        except OSError as e:
            self.send(error_message(self.id, e.strerror or str(e), self.file_num))
            self._close()
            self.file_num += 1
            self._next_file()
            return
        m = pb.Message()
        b = m.file_response.block
        b.id, b.file_num = self.id, self.file_num
        if data:
            payload, compressed = encode_block(data, self._name)
            b.data, b.compressed = payload, compressed
            self.bytes += len(data)
            self.send(m)
            return
        self.send(m)  # the empty block: this file is complete
        self._close()
        self.files_done += 1
        self.file_num += 1
        self._next_file()

    def _close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self.state = "idle"

    def release(self) -> None:
        self._close()


@dataclass
class _Incoming:
    """What the host knows of the upload's current file."""

    num: int
    size: int  # the size the viewer announced (its digest, else the list)
    modified: int
    # "confirmed" (blocks expected from offset), "asked" (the host showed its
    # own file: blocks mean overwrite), "skipped" (the viewer skipped it).
    state: str
    offset: int = 0
    partial: PartialFile | None = None
    dir_fd: int | None = None
    name: str = ""


class UploadJob(Job):
    """The viewer sends C{files} to be written below C{dest} on the host.

    @param rustdesk_resume: offer a resumable partial as RustDesk's hosts
        do, with a digest C{{is_upload, is_identical, transferred_size}} the
        viewer answers with C{send_confirm{offset_blk}} (stock RustDesk
        apps); else with C{send_confirm{offset_blk}} at once (docs/
        protocol.rst §12.4, LiteDesk viewers).
    """

    kind = "upload"

    def __init__(
        self,
        job_id: int,
        dest: str,
        root: FileRoot,
        files: list[pb.FileEntry],
        send: Send,
        clock: IReactorTime,
        rustdesk_resume: bool = False,
    ) -> None:
        super().__init__(job_id, dest, send, clock)
        self.root = root
        self.dest = dest
        self.files = files
        self.rustdesk_resume = rustdesk_resume
        self.current: _Incoming | None = None

    def refused_name(self) -> tuple[int, str] | None:
        """C{(index, reason)} of the first target outside the root, or None."""
        for i, f in enumerate(self.files):
            try:
                self.root.lexical(_join(self.dest, f.name))
                self.root.resolve(_join(self.dest, f.name))
            except PathRefused as e:
                return i, e.reason
        return None

    def _target(self, num: int) -> str:
        return _join(self.dest, self.files[num].name)

    # -- the viewer's digest: does the host have it? -----------------------

    def digest(self, dg: pb.FileTransferDigest) -> None:
        num = dg.file_num
        if not 0 <= num < len(self.files):
            self.fail("Wrong file number", num)
            return
        self._leave_current(keep=True)
        cur = _Incoming(num, dg.file_size, self.files[num].modified_time, "confirmed")
        self.current = cur
        try:
            cur.dir_fd, cur.name, _ = self.root.open_parent(self._target(num))
        except PathRefused as e:
            if e.reason != "Not exists":
                self.fail(e.reason, num)
                return
            self._send_confirm(num, 0)  # no parent directory: no such file
            return
        resumed = 0
        if dg.is_resume:
            resumed = PartialFile.resumable(cur.name, dg.file_size, dg.last_modified, cur.dir_fd)
        if resumed:
            if self.rustdesk_resume:
                cur.state, cur.offset = "asked", resumed
                self._send_digest(num, dg.last_modified, dg.file_size, True, resumed)
            else:
                cur.offset = resumed
                self._send_confirm(num, resumed)
            return
        try:
            st = os.stat(cur.name, dir_fd=cur.dir_fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            self._send_confirm(num, 0)
            return
        cur.state = "asked"
        mtime = max(0, int(st.st_mtime))
        same = mtime == dg.last_modified and st.st_size == dg.file_size
        self._send_digest(num, mtime, st.st_size, same, 0)

    def _send_confirm(self, num: int, offset: int) -> None:
        m = pb.Message()
        c = m.file_action.send_confirm
        c.id, c.file_num, c.offset_blk = self.id, num, offset
        self.send(m)

    def _send_digest(self, num: int, mtime: int, size: int, same: bool, have: int) -> None:
        m = pb.Message()
        d = m.file_response.digest
        d.id, d.file_num, d.last_modified, d.file_size = self.id, num, mtime, size
        d.is_upload, d.is_identical, d.transferred_size = True, same, have
        self.send(m)

    # -- the viewer's choice, blocks and end -------------------------------

    def confirm(self, c: pb.FileTransferSendConfirmRequest) -> None:
        """A stock RustDesk viewer's choice after the host's digest."""
        cur = self.current
        if cur is None or c.file_num != cur.num or cur.partial is not None:
            return
        which = c.WhichOneof("union")
        if which == "skip" and c.skip:
            cur.state = "skipped"
        elif which == "offset_blk":
            # Only the partial the host offered may be resumed; any other
            # offset is an overwrite from the start.
            cur.offset = c.offset_blk if c.offset_blk == cur.offset else 0
            cur.state = "confirmed"

    def block(self, b: pb.FileTransferBlock) -> None:
        cur = self.current
        if cur is None or b.file_num != cur.num:
            # RustDesk's writer opens the block's file when none was offered.
            if not 0 <= b.file_num < len(self.files):
                self.fail("Wrong file number", b.file_num)
                return
            self._leave_current(keep=True)
            entry = self.files[b.file_num]
            cur = _Incoming(b.file_num, entry.size, entry.modified_time, "confirmed")
            self.current = cur
        if cur.state == "skipped":
            return
        if cur.partial is None and not self._open(cur):
            return
        partial = cur.partial
        assert partial is not None
        try:
            data = decode_block(b.data, b.compressed, partial.remaining)
        except BlockError as e:
            self._abandon(cur, str(e))
            return
        if not b.data:
            self._finish(cur)
            return
        try:
            partial.write(data)
        except PartialError as e:
            self._abandon(cur, str(e))
            return
        self.bytes += len(data)

    def _open(self, cur: _Incoming) -> bool:
        """Blocks arrived for C{cur}: open (create) its partial."""
        if cur.state == "asked":
            # Blocks right after the host's digest: the viewer overwrites.
            cur.offset = 0
            cur.state = "confirmed"
        try:
            if cur.dir_fd is None:
                cur.dir_fd, cur.name, _ = self.root.open_parent(self._target(cur.num), create=True)
            cur.partial = PartialFile.open(
                cur.name, cur.size, cur.modified, cur.offset, dir_fd=cur.dir_fd
            )
        except PathRefused as e:
            self.fail(e.reason, cur.num)
            return False
        except PartialError as e:
            if cur.offset:
                # The partial changed meanwhile: start the file over.
                cur.offset = 0
                return self._open(cur)
            self.fail(str(e), cur.num)
            return False
        return True

    def _finish(self, cur: _Incoming) -> None:
        partial = cur.partial
        assert partial is not None
        if cur.modified:
            partial.modified = cur.modified
        try:
            partial.finish()
        except PartialError as e:
            self._abandon(cur, str(e))
            return
        self.files_done += 1
        self._leave_current(keep=False)

    def _abandon(self, cur: _Incoming, error: str) -> None:
        """A write failed: remove the partial, tell the viewer, end the job."""
        if cur.partial is not None:
            cur.partial.abort(keep=False)
        self.fail(error, cur.num)

    def done(self, d: pb.FileTransferDone) -> None:
        """The viewer's end of the upload."""
        cur = self.current
        if cur is not None and cur.partial is not None and not cur.partial.closed:
            # No empty block for the last file: finish it as RustDesk's
            # WriteDone does, but only if it is complete.
            self._finish(cur)
            if self.ended:
                return
        self.send(done_message(self.id, d.file_num))
        self.end("done")

    def peer_error(self, e: pb.FileTransferError) -> None:
        """The viewer gave up: keep the partial for a resume, echo as RustDesk."""
        self.send(error_message(self.id, e.error, e.file_num))
        self.end(f"viewer error: {e.error[:200]}")

    def cancel(self) -> None:
        # RustDesk removes a cancelled upload's partial (remove_download_file).
        self._leave_current(keep=False)
        super().cancel()

    def _leave_current(self, keep: bool) -> None:
        cur = self.current
        if cur is None:
            return
        self.current = None
        if cur.partial is not None and not cur.partial.closed:
            cur.partial.abort(keep=keep)
        if cur.dir_fd is not None:
            with contextlib.suppress(OSError):
                os.close(cur.dir_fd)

    def release(self) -> None:
        # A connection lost mid-file keeps the partial for the next attempt.
        self._leave_current(keep=True)
