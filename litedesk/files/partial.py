"""A file being received: C{NAME.download} and C{NAME.digest} (docs/protocol.rst §12.5).

RustDesk writes a file it receives to C{NAME.download} beside its target,
with C{NAME.digest} holding the source's size and modification time as
JSON C{{"size": ..., "modified": ...}}; when the file is complete the
partial is renamed onto C{NAME} and given the source's modification time.
An interrupted transfer leaves both, and the next transfer of the same
source (same size and time) resumes after the bytes already written
(hbb_common C{src/fs.rs}: C{TransferJob::write}, C{modify_time},
C{is_write_need_confirmation}, C{set_stream_offset}).  The host (uploads)
and the viewer (downloads) both use L{PartialFile}:

  - L{PartialFile.resumable}C{(target, size, modified)}: bytes of a partial
    of that source waiting to be resumed (0: none);
  - L{PartialFile.open}C{(target, size, modified, offset=0)}: start (or, with
    C{offset}, resume) writing; L{PartialFile.write}C{(data)};
  - L{PartialFile.finish}C{()}: verify the size, rename onto the target, set
    its time; L{PartialFile.abort}C{(keep=False)}: close, and remove the
    partial and its digest unless C{keep} (kept for a later resume).

Every failure is a L{PartialError} whose C{str()} is what to tell the peer:
C{"No space left on device"} for ENOSPC and EDQUOT, else the OS's reason.

With C{dir_fd}, C{target} is a bare name inside that open directory and
every operation is relative to it without following a final symbolic link
(the host keeps writes inside its file root this way, whatever happens to
the path meanwhile); without it, C{target} is an ordinary path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from pathlib import Path

__all__ = ["DIGEST_SUFFIX", "DOWNLOAD_SUFFIX", "PartialError", "PartialFile", "os_reason"]

DOWNLOAD_SUFFIX = ".download"
DIGEST_SUFFIX = ".digest"
# A .digest is a few dozen bytes; a larger one is not RustDesk's.
_MAX_DIGEST = 4096
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class PartialError(Exception):
    """Writing a received file failed; C{str()} is the reason for the peer."""


def os_reason(e: OSError) -> str:
    """What to tell the peer about an C{OSError} (RustDesk's wording for a full disk)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "No space left on device"
    return e.strerror or str(e)


def _read_digest(text: str) -> tuple[int, int] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    size, modified = value.get("size"), value.get("modified")
    if type(size) is not int or type(modified) is not int:
        return None
    return size, modified


class PartialFile:
    """One file being written; see the module docstring.

    @ivar target: the final name (a bare name when C{dir_fd} is given).
    @ivar size: the size the source announced; L{finish} insists on it.
    @ivar modified: the source's modification time (unix seconds).
    @ivar written: bytes in the partial so far (the resume offset included).
    """

    def __init__(
        self,
        target: str | Path,
        size: int,
        modified: int,
        fd: int,
        written: int,
        dir_fd: int | None,
    ) -> None:
        self.target = str(target)
        self.size = size
        self.modified = modified
        self.written = written
        self._fd: int | None = fd
        self._dir_fd = dir_fd

    # -- names -------------------------------------------------------------

    @staticmethod
    def _names(target: str | Path) -> tuple[str, str]:
        t = str(target)
        return t + DOWNLOAD_SUFFIX, t + DIGEST_SUFFIX

    @classmethod
    def resumable(
        cls, target: str | Path, size: int, modified: int, dir_fd: int | None = None
    ) -> int:
        """Bytes of a partial of this source (same size and time) to resume after.

        @return: the partial's length when both C{.download} and a matching
            C{.digest} exist and the partial is not empty nor longer than
            C{size}, else 0.
        """
        download, digest = cls._names(target)
        try:
            fd = os.open(digest, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
            try:
                text = os.read(fd, _MAX_DIGEST).decode("utf-8", "replace")
            finally:
                os.close(fd)
            st = os.stat(download, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return 0
        if _read_digest(text) != (size, modified) or not stat.S_ISREG(st.st_mode):
            return 0
        return st.st_size if 0 < st.st_size <= size else 0

    @classmethod
    def open(
        cls,
        target: str | Path,
        size: int,
        modified: int,
        offset: int = 0,
        dir_fd: int | None = None,
    ) -> PartialFile:
        """Start writing C{target}'s partial, or resume it after C{offset} bytes.

        @param offset: bytes of an existing partial to keep (the peer resumes
            there); at most L{resumable}'s answer, a larger one is refused.
            0 starts afresh, replacing any partial and digest.
        @raise PartialError: the partial cannot be opened or the offset is
            beyond the partial.
        """
        download, digest = cls._names(target)
        try:
            if offset > 0:
                have = cls.resumable(target, size, modified, dir_fd)
                if offset > have:
                    raise PartialError(f"cannot resume at {offset}: {have} bytes received before")
                fd = os.open(download, os.O_WRONLY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
                try:
                    os.ftruncate(fd, offset)
                    os.lseek(fd, offset, os.SEEK_SET)
                except OSError:
                    os.close(fd)
                    raise
                return cls(target, size, modified, fd, offset, dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW | _CLOEXEC
            fd = os.open(download, flags, 0o644, dir_fd=dir_fd)
            self = cls(target, size, modified, fd, 0, dir_fd)
            try:
                self._write_digest(digest)
            except OSError:
                self.abort()
                raise
            return self
        except OSError as e:
            raise PartialError(os_reason(e)) from None

    def _write_digest(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(digest, dir_fd=self._dir_fd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        fd = os.open(digest, flags, 0o644, dir_fd=self._dir_fd)
        try:
            data = json.dumps({"size": self.size, "modified": self.modified}).encode()
            os.write(fd, data)
        finally:
            os.close(fd)

    # -- writing -----------------------------------------------------------

    @property
    def remaining(self) -> int:
        """Bytes the source still has to send (what the next block may hold)."""
        return max(0, self.size - self.written)

    def write(self, data: bytes | memoryview) -> None:
        """Append C{data} to the partial.

        @raise PartialError: more data than the announced size, or the write
            failed (the partial is left for L{abort} to remove).
        """
        if self._fd is None:
            raise PartialError("file already closed")
        if len(data) > self.remaining:
            raise PartialError(f"more data than the announced {self.size} bytes")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self.written += n
        except OSError as e:
            raise PartialError(os_reason(e)) from None

    def finish(self) -> None:
        """The source ended: verify the size, rename onto the target, set its time.

        @raise PartialError: the partial is not the announced size, or the
            rename failed; the partial stays (call L{abort}).
        """
        if self._fd is None:
            raise PartialError("file already closed")
        download, digest = self._names(self.target)
        try:
            st = os.fstat(self._fd)
            if st.st_size != self.size:
                raise PartialError(f"received {st.st_size} bytes, {self.size} announced")
            os.close(self._fd)
            self._fd = None
            os.replace(download, self.target, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            ns = self.modified * 1_000_000_000
            with contextlib.suppress(OSError):
                # A time the file system refuses is not worth failing for.
                os.utime(self.target, ns=(ns, ns), dir_fd=self._dir_fd, follow_symlinks=False)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(digest, dir_fd=self._dir_fd)
        except OSError as e:
            raise PartialError(os_reason(e)) from None

    def abort(self, keep: bool = False) -> None:
        """Close; unless C{keep}, remove the partial and its digest.  Never raises."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if keep:
            return
        for name in self._names(self.target):
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._dir_fd)

    @property
    def closed(self) -> bool:
        return self._fd is None
