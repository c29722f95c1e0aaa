"""The file root: every path a viewer names stays inside it (docs/protocol.rst §12.5).

A RustDesk viewer names host paths as absolute strings (the ones the host's
listings gave it) or, from LiteDesk's viewer, relative to the root.  RustDesk
itself reads and writes whatever the host's user can (hbb_common
C{src/fs.rs} uses the paths as given); LiteDesk confines a session to
C{--file-root}:

  - L{FileRoot.resolve} turns a remote path into a resolved absolute path
    inside the root, or raises L{PathRefused}: C{..} that leaves the root,
    absolute paths elsewhere, NUL bytes and symbolic links that lead out
    (in any component) give C{"outside the file root"}.
  - What is checked is not what is opened if the tree changes in between
    (a directory swapped for a symbolic link), so L{FileRoot.open_dir} and
    L{FileRoot.open_file} open with C{O_NOFOLLOW} and then check where the
    descriptor really is (C{/proc/self/fd}); L{FileRoot.open_parent} opens
    the directory a file is written in and creates missing directories one
    at a time relative to descriptors already checked, so writes follow no
    link at all.  Everything after that works on descriptors
    (C{dir_fd=...}), never on the path again.

Symbolic links that stay inside the root work as usual.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

__all__ = ["NOT_EXISTS", "OUTSIDE", "FileRoot", "PathRefused"]

OUTSIDE = "outside the file root"
# RustDesk's wording for a path that is not there (fs.rs read_dir_recursive).
NOT_EXISTS = "Not exists"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class PathRefused(Exception):
    """A remote path is refused; C{reason} is what the viewer is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


class FileRoot:
    """The directory a file-transfer session is confined to.

    @ivar path: the root, resolved (no symbolic links), as a string.
    """

    def __init__(self, root: Path | str) -> None:
        self.path = os.path.realpath(root)
        self._prefix = self.path.rstrip("/") + "/"

    def inside(self, resolved: str) -> bool:
        """Whether a resolved absolute path is the root or below it."""
        return resolved == self.path or resolved.startswith(self._prefix)

    def _check_text(self, remote: str) -> None:
        if "\x00" in remote:
            raise PathRefused(OUTSIDE)

    def lexical(self, remote: str) -> str:
        """C{remote} joined to the root and normalised, without touching the disk.

        @raise PathRefused: a NUL byte, or the result is outside the root.
        """
        self._check_text(remote)
        joined = os.path.normpath(os.path.join(self.path, remote))
        if joined.startswith("//"):
            joined = "/" + joined.lstrip("/")
        if not self.inside(joined):
            raise PathRefused(OUTSIDE)
        return joined

    def resolve(self, remote: str) -> str:
        """C{remote} as a resolved absolute path inside the root.

        An empty path is the root.  The path need not exist.
        @raise PathRefused: C{"outside the file root"}.
        """
        self._check_text(remote)
        resolved = os.path.realpath(os.path.join(self.path, remote))
        if not self.inside(resolved):
            raise PathRefused(OUTSIDE)
        return resolved

    def _verified(self, fd: int, expected: str | None = None) -> int:
        """C{fd} if it really is inside the root (and at C{expected}), else refuse."""
        try:
            where = _fd_path(fd)
        except OSError:
            where = ""
        if not self.inside(where) or (expected is not None and where != expected):
            os.close(fd)
            raise PathRefused(OUTSIDE)
        return fd

    def _open(self, resolved: str, flags: int) -> int:
        try:
            fd = os.open(resolved, flags)
        except FileNotFoundError:
            raise PathRefused(NOT_EXISTS) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                # A final component that became a link after resolve().
                raise PathRefused(OUTSIDE) from None
            raise PathRefused(e.strerror or str(e)) from None
        return self._verified(fd)

    def open_dir(self, remote: str) -> tuple[int, str]:
        """Open a directory for reading.

        @return: C{(fd, resolved path)}; the caller closes C{fd}.
        @raise PathRefused: outside, C{"Not exists"}, or the OS's reason.
        """
        resolved = self.resolve(remote)
        return self._open(resolved, _DIR_FLAGS), resolved

    def open_file(self, remote: str) -> tuple[int, str]:
        """Open a regular file for reading.

        @return: C{(fd, resolved path)}; the caller closes C{fd}.
        @raise PathRefused: outside, C{"Not exists"}, not a regular file, or
            the OS's reason.
        """
        resolved = self.resolve(remote)
        fd = self._open(resolved, _FILE_FLAGS)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise PathRefused("Not a file")
        os.set_blocking(fd, True)
        return fd, resolved

    def open_subdir(self, resolved: str) -> int:
        """Open a directory found by walking the tree, following no link at all.

        @param resolved: an absolute path inside the root with no symbolic
            link in it (a directory listing's child).
        @raise PathRefused: it is not that directory any more.
        """
        if not self.inside(resolved):
            raise PathRefused(OUTSIDE)
        try:
            fd = os.open(resolved, _DIR_FLAGS)
        except OSError as e:
            raise PathRefused(NOT_EXISTS if e.errno == errno.ENOENT else OUTSIDE) from None
        return self._verified(fd, expected=resolved)

    def open_parent(self, remote: str, create: bool = False) -> tuple[int, str, str]:
        """Open the directory that C{remote} is (to be) written in.

        @param create: make missing directories on the way, as RustDesk does
            for a received file (C{create_dir_all}).
        @return: C{(dir_fd, name, display)}: the directory's descriptor, the
            final component to use with C{dir_fd=}, and the path to show.
        @raise PathRefused: outside (a final symbolic link that leads out
            included), C{"Not exists"} without C{create}, or the OS's reason.
        """
        lexical = self.lexical(remote)
        if lexical == self.path:
            raise PathRefused("cannot write the file root itself")
        parent, name = os.path.split(lexical)
        real_parent = self.resolve(parent)
        missing: list[str] = []
        existing = real_parent
        while not os.path.lexists(existing):
            if not create:
                raise PathRefused(NOT_EXISTS)
            existing, part = os.path.split(existing)
            missing.insert(0, part)
        fd = self._open(existing, _DIR_FLAGS)
        try:
            for part in missing:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            self._check_final(fd, name)
        except OSError as e:
            os.close(fd)
            raise PathRefused(OUTSIDE if e.errno == errno.ELOOP else e.strerror or str(e)) from None
        except PathRefused:
            os.close(fd)
            raise
        return fd, name, os.path.join(real_parent, name)

    def _check_final(self, dir_fd: int, name: str) -> None:
        """A final component that is a link must not lead out of the root."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(os.path.join(_fd_path(dir_fd), name))
            if not self.inside(target):
                raise PathRefused(OUTSIDE)
