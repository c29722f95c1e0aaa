"""The host's transfer jobs: what they share, and the download's state machine.

One job per transfer, keyed by the id the viewer chose (docs/protocol.rst
§12.3, §12.4).  L{DownloadJob} follows hbb_common C{src/fs.rs}
C{TransferJob::read}/C{confirm} as a host runs it (rustdesk
C{src/server/connection.rs}): per file a digest, the viewer's
C{send_confirm} (skip, or the byte offset to start at), the blocks, one
empty block; C{done} after the last file.  The upload is
L{litedesk.files.host_upload.UploadJob}.

The jobs are sans-IO apart from the file system: they build messages and
hand them to C{send}; L{litedesk.files.host_service.HostFiles} routes the
viewer's messages to them and drives the downloads' blocks.  Nothing the
viewer sends raises out of a job: what makes no sense ends the job with an
C{error} for the viewer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from litedesk.files.blocks import BLOCK_SIZE, encode_block
from litedesk.files.root import FileRoot, PathRefused
from litedesk.proto import message_pb2 as pb

__all__ = ["DownloadJob", "Job", "Send", "done_message", "error_message", "join_entry"]

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


def join_entry(base: str, name: str) -> str:
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

    def start(self, first: int = 0) -> None:
        """After the list went out: file C{first} (a resumed job's
        C{FileTransferSendRequest.file_num}, as fs.rs C{new_read} starts there)."""
        self.file_num = min(max(0, first), len(self.files))
        self._next_file()

    def _next_file(self) -> None:
        """Open file C{file_num} and offer it, or finish after the last one."""
        while self.file_num < len(self.files):
            entry = self.files[self.file_num]
            try:
                self._fd, _ = self.root.open_file(join_entry(self.base, entry.name))
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
