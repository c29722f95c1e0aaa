"""A stock RustDesk client's file-transfer session, emulated for tests.

Written from RustDesk 1.4.9's client side (``src/client/io_loop.rs``: ``SendFiles``,
``SetConfirmOverrideFile``, the ``FileResponse`` and ``FileAction::SendConfirm`` arms;
``src/client.rs`` ``create_login_msg``) and hbb_common ``src/fs.rs`` (``TransferJob``
``write``/``read``/``confirm``/``modify_time``, ``is_write_need_confirmation``,
``get_recursive_files``, the file-name checks), with ``src/server/connection.rs`` read
for what the host does.  Same independence rule as L{tests.support.rustdesk_client}:
only the generated protobufs, zstandard and that module, never LiteDesk's own
``litedesk.files`` or ``litedesk.session``.

The session, in the order a stock client runs it (L{FileSession}):

- login with ``LoginRequest.file_transfer{dir, show_hidden}`` and no option; the host
  answers ``peer_info`` (its ``username`` must not be empty) and then sends the listing
  of ``dir`` on its own (connection.rs), read by L{FileSession.first_listing};
- L{FileSession.read_dir}: ``FileAction.read_dir{path, include_hidden}`` → ``dir``;
- L{FileSession.download}: ``send{id, path, include_hidden, file_num 0, Generic}`` →
  ``dir{id, entries}`` (names checked as fs.rs ``set_files`` does; an unsafe list is
  cancelled) → per file the host's ``digest`` → our ``send_confirm`` (``offset_blk`` 0
  for a new file, the ``.download``'s size to resume, ``skip`` to keep ours) → blocks
  (zstd frames when ``compressed``) written to ``<name>.download`` beside a
  ``<name>.digest`` JSON, one empty block per file end → ``done``, when the file is
  renamed into place and given the host's mtime;
- L{FileSession.upload}: ``receive{id, path, files, file_num 0, total_size}`` → per file
  our ``digest`` → the host's ``send_confirm`` (no such file there) or its
  ``digest{is_upload}`` (one exists: we decide, and tell the host only when the choice
  was remembered, as io_loop.rs does) → 128 KiB blocks, zstd when shorter except for
  already compressed kinds, an empty block per file end → our ``done`` → the host's.

The jobs' disk side (fs.rs ``TransferJob``) is in L{tests.support.rustdesk_fs}.  Job ids
start at 1 and count up (fs.rs ``get_next_job_id``).  Overwrite detection (the
digests) is on when the host's PeerInfo.version is 1.1.10 or later, resume when 1.4.2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import zstandard

from litedesk.proto import message_pb2 as pb

from .rustdesk_client import EmulatorError, LoginResult, RustDeskClient
from .rustdesk_fs import ReadJob, Transfer, WriteJob, version_number, write_need_confirmation

__all__ = ["NO_CONSOLE_USER", "FileSession", "file_login"]

#: ui_session_interface.rs handle_peer_info, for a file transfer with no user.
NO_CONSOLE_USER = "No active console user logged on, please connect and logon first."
#: How many unrelated messages a wait may skip (the host pings every second).
MESSAGE_LIMIT = 100_000


def file_login(
    client: RustDeskClient, password: str | None, dir: str = "", show_hidden: bool = False
) -> LoginResult:
    """The LoginRequest of a file-transfer session (client.rs create_login_msg)."""
    return client.login(password, kind=pb.FileTransfer(dir=dir, show_hidden=show_hidden))


def _file_response(msg: pb.Message, kinds: tuple[str, ...], job: int | None) -> bool:
    if msg.WhichOneof("union") != "file_response":
        return False
    which = msg.file_response.WhichOneof("union")
    if which not in kinds:
        return False
    return job is None or getattr(msg.file_response, which).id == job


Decide = Callable[[pb.FileTransferDigest], bool]


class FileSession:
    """A logged-in file-transfer session (see the module docstring for the sequence).

    C{overwrite} is the remembered overwrite choice (None: ask C{ask}, the dialog).

    @raise EmulatorError: the host's PeerInfo has no username (L{NO_CONSOLE_USER}).
    """

    def __init__(
        self,
        client: RustDeskClient,
        login: LoginResult,
        *,
        overwrite: bool | None = True,
        ask: Decide = lambda digest: True,
    ) -> None:
        info = login.response.peer_info
        if login.response.WhichOneof("union") != "peer_info":
            raise EmulatorError(f"login refused: {login.response.error!r}")
        # (Windows hosts may list sessions instead; LiteDesk's PeerInfo has no such field.)
        if not info.username:
            raise EmulatorError(NO_CONSOLE_USER)
        self.client = client
        version = version_number(info.version)
        self.overwrite_detection = version >= version_number("1.1.10")
        self.resume_supported = version >= version_number("1.4.2")
        self.overwrite = overwrite
        self.ask = ask
        self.next_id = 1
        self.unhandled: list[pb.Message] = []
        self._first: pb.FileResponse | None = None

    # -- messages

    def _wait(self, wanted: Callable[[pb.Message], bool], what: str) -> pb.Message:
        for _ in range(MESSAGE_LIMIT):
            msg = self.client.recv()
            if wanted(msg):
                return msg
            if msg.WhichOneof("union") != "test_delay":
                self.unhandled.append(msg)
        raise EmulatorError(f"no {what} from the host")

    def send_action(self, **fields: object) -> None:
        self.client.send(pb.Message(file_action=pb.FileAction(**fields)))  # type: ignore[arg-type]

    def send_response(self, **fields: object) -> None:
        self.client.send(pb.Message(file_response=pb.FileResponse(**fields)))  # type: ignore[arg-type]

    def _new_id(self) -> int:
        job, self.next_id = self.next_id, self.next_id + 1
        return job

    # -- browsing

    def first_listing(self) -> pb.FileResponse:
        """The listing the host sends unasked after the login (connection.rs), once."""
        if self._first is None:
            msg = self._wait(
                lambda m: _file_response(m, ("dir", "error"), None), "listing of the login dir"
            )
            self._first = msg.file_response
        return self._first

    def read_dir(self, path: str, include_hidden: bool = False) -> pb.FileResponse:
        """ReadDir; the host's C{dir} (or C{error}, which 1.4.9 hosts never send)."""
        self.first_listing()
        self.send_action(read_dir=pb.ReadDir(path=path, include_hidden=include_hidden))
        msg = self._wait(lambda m: _file_response(m, ("dir", "error"), None), "listing")
        return msg.file_response

    # -- download (host to client)

    def download(
        self, remote: str, local: Path, *, include_hidden: bool = False, resume: bool = False
    ) -> Transfer:
        """SendFiles with is_remote: C{remote} (file or directory) into C{local}."""
        t = Transfer(self._new_id())
        job = WriteJob(t, local, is_resume=resume)
        self.send_action(
            send=pb.FileTransferSendRequest(
                id=t.id, path=remote, include_hidden=include_hidden, file_num=0
            )
        )
        kinds = ("dir", "digest", "block", "done", "error")
        try:
            while t.done is None and t.error is None:
                msg = self._wait(lambda m: _file_response(m, kinds, t.id), f"reply to job {t.id}")
                self._download_step(job, msg.file_response)
        finally:
            job.close()
        return t

    def _download_step(self, job: WriteJob, fr: pb.FileResponse) -> None:
        t = job.t
        which = fr.WhichOneof("union")
        if which == "dir":
            error = job.set_files(list(fr.dir.entries))
            if error is not None:
                # io_loop.rs: "Rejected unsafe file list from remote peer".
                self.send_action(cancel=pb.FileTransferCancel(id=t.id))
                t.error = error
        elif which == "digest":
            self._download_digest(job, fr.digest)
        elif which == "block":
            t.blocks += 1
            t.compressed_blocks += fr.block.compressed
            try:
                job.write(fr.block)
            except (OSError, EmulatorError, zstandard.ZstdError) as e:
                t.problems.append(f"block {t.blocks} of file {fr.block.file_num}: {e}")
        elif which == "done":
            job.modify_time()
            t.done = fr.done
            if len(t.files) == 1 and job.skipped:
                t.error = "skipped"
        else:
            t.error = fr.error.error

    def _download_digest(self, job: WriteJob, digest: pb.FileTransferDigest) -> None:
        t = job.t
        t.digests.append(digest)
        if digest.file_num >= len(t.files):
            return
        job.digest = {"size": digest.file_size, "modified": digest.last_modified}
        path = job.path(digest.file_num)
        local = write_need_confirmation(self.resume_supported and job.is_resume, path, digest)
        req = pb.FileTransferSendConfirmRequest(id=t.id, file_num=digest.file_num)
        if local is None:
            req.offset_blk = 0
        elif local.is_identical and job.is_resume and local.transferred_size > 0:
            req.offset_blk = local.transferred_size
        else:
            overwrite = self.overwrite
            if overwrite is None:
                t.asked.append(local)
                overwrite = self.ask(local)
            if overwrite:
                req.offset_blk = 0
            else:
                req.skip = True
        # The job's file number moves only with the blocks (fs.rs write): a confirm for a
        # later file is sent but not applied here ("file num truncated, ignoring").
        job.confirm(req)
        self.send_action(send_confirm=req)

    # -- upload (client to host)

    def upload(self, local: Path, remote: str, *, include_hidden: bool = False) -> Transfer:
        """SendFiles without is_remote: C{local} (file or directory) to C{remote} on the
        host (for a single file, the destination file's path)."""
        t = Transfer(self._new_id())
        job = ReadJob(t, local, include_hidden)
        self.send_action(
            receive=pb.FileTransferReceiveRequest(
                id=t.id, path=remote, files=t.files, file_num=0, total_size=job.total_size
            )
        )
        try:
            self._upload_files(job)
        finally:
            job.close()
        if t.error is not None:
            return t
        if job.skipped and len(t.files) == 1:
            # fs.rs job_error: the only file was skipped.
            t.error = "skipped"
            self.send_response(
                error=pb.FileTransferError(id=t.id, error="skipped", file_num=job.file_num)
            )
            return t
        self.send_response(done=pb.FileTransferDone(id=t.id, file_num=job.file_num))
        kinds = ("done", "error")
        msg = self._wait(lambda m: _file_response(m, kinds, t.id), f"done of job {t.id}")
        self._upload_message(job, msg)
        return t

    def _upload_files(self, job: ReadJob) -> None:
        """handle_read_jobs, tick by tick, until the job ends or the host refuses it."""
        t = job.t
        while t.error is None:
            try:
                if job.open():
                    return
            except OSError as e:
                # fs.rs open_data_stream: the file is passed over, the host told why.
                job.file_num += 1
                self.send_response(
                    error=pb.FileTransferError(id=t.id, error=str(e), file_num=job.file_num)
                )
                continue
            if self.overwrite_detection and not job.confirmed:
                if not job.waiting:
                    self.send_response(digest=job.digest())
                msg = self._wait(lambda m: self._for_upload(m, t.id), f"confirm of job {t.id}")
                self._upload_message(job, msg)
                continue
            block = job.read()
            self.send_response(block=block)
            t.blocks += 1
            t.compressed_blocks += block.compressed
            for msg in self.client.recv_pending():
                if self._for_upload(msg, t.id):
                    self._upload_message(job, msg)
                elif msg.WhichOneof("union") != "test_delay":
                    self.unhandled.append(msg)

    @staticmethod
    def _for_upload(msg: pb.Message, job: int) -> bool:
        if msg.WhichOneof("union") == "file_action":
            fa = msg.file_action
            return fa.WhichOneof("union") == "send_confirm" and fa.send_confirm.id == job
        return _file_response(msg, ("digest", "error", "done"), job)

    def _upload_message(self, job: ReadJob, msg: pb.Message) -> None:
        t = job.t
        if msg.WhichOneof("union") == "file_action":
            job.confirm(msg.file_action.send_confirm)
            return
        fr = msg.file_response
        which = fr.WhichOneof("union")
        if which == "error":
            t.error = fr.error.error
        elif which == "done":
            t.done = fr.done
        elif fr.digest.is_upload:
            self._upload_digest(job, fr.digest)

    def _upload_digest(self, job: ReadJob, digest: pb.FileTransferDigest) -> None:
        """io_loop.rs: the host has the file; a remembered choice is sent to the host, a
        dialog's answer is only applied here (SetConfirmOverrideFile, is_upload)."""
        job.t.digests.append(digest)
        req = pb.FileTransferSendConfirmRequest(id=job.t.id, file_num=digest.file_num)
        overwrite, offset = self.overwrite, 0
        if digest.is_identical and job.is_resume and digest.transferred_size > 0:
            overwrite, offset = True, digest.transferred_size
        if overwrite is None:
            job.t.asked.append(digest)
            if self.ask(digest):
                req.offset_blk = 0
            else:
                req.skip = True
            job.confirm(req)
            return
        if overwrite:
            req.offset_blk = offset
        else:
            req.skip = True
        job.confirm(req)
        self.send_action(send_confirm=req)
