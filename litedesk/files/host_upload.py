"""The host's upload job: the viewer's files written below a destination.

L{UploadJob} follows hbb_common C{src/fs.rs} C{TransferJob::write} and
C{is_write_need_confirmation} as rustdesk C{src/ui_cm_interface.rs} runs
them for a host (docs/protocol.rst §12.4): per file the viewer's digest is
answered with C{send_confirm} (no such file, or resume after a partial of
the same source) or with the host's own digest (the viewer then decides:
blocks mean overwrite); the blocks go to a L{PartialFile}
(C{NAME.download} + C{NAME.digest}), renamed onto the target when the
empty block comes and the size is the one announced.  A write error (a
full disk) removes the partial and ends the job; a lost connection keeps
it for a resume.  Every target is opened through the
L{litedesk.files.root.FileRoot}, by descriptor.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

from litedesk.files.blocks import BlockError, decode_block
from litedesk.files.host_jobs import Job, Send, done_message, error_message, join_entry
from litedesk.files.partial import PartialError, PartialFile
from litedesk.files.root import NOT_EXISTS, FileRoot, PathRefused
from litedesk.proto import message_pb2 as pb

__all__ = ["UploadJob"]


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
        do (ui_cm_interface.rs C{CheckDigest}): a digest C{{is_upload,
        is_identical, transferred_size}} that the viewer answers with
        C{send_confirm{offset_blk}}: stock RustDesk apps get what a RustDesk
        host sends them.  Else with C{send_confirm{offset_blk}} at once, as
        docs/protocol.rst §12.4 describes it (LiteDesk viewers; a stock
        client would follow that too: io_loop.rs applies a host's confirm
        to its read job, fs.rs C{set_stream_offset}).
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
                self.root.lexical(join_entry(self.dest, f.name))
                self.root.resolve(join_entry(self.dest, f.name))
            except PathRefused as e:
                return i, e.reason
        return None

    def _target(self, num: int) -> str:
        return join_entry(self.dest, self.files[num].name)

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
            if e.reason != NOT_EXISTS:
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
