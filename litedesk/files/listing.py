"""Directory listings as RustDesk's C{FileDirectory} (docs/protocol.rst §12.2).

  - L{read_dir}: one level (C{read_dir}): each entry's basename, type
    (C{Dir}, C{DirLink}, C{File}, C{FileLink}), size (0 for directories and
    links), modification time in unix seconds and C{is_hidden} for
    dot-files, which are left out unless asked for (hbb_common C{src/fs.rs}
    C{read_dir}).
  - L{recursive_files}: every regular file below a path (C{all_files} and a
    download's list), names relative to it with C{/}; a file alone gives
    one entry named C{""}; links are not followed nor listed, as in
    RustDesk's C{read_dir_recursive}.  At most L{MAX_FILES} files, like
    RustDesk's C{check_file_count_limit}, and at most L{MAX_SCANNED}
    entries looked at, so a viewer cannot make the host walk a huge tree.
  - L{empty_dirs}: the directories below a path with nothing (visible) in
    them (C{read_empty_dirs}, C{get_empty_dirs_recursive}).

All of it goes through L{litedesk.files.root.FileRoot}: directories are
opened by descriptor and checked, and a walk opens each subdirectory
without following links.  Errors are L{PathRefused} with the reason for
the viewer.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from litedesk.files.root import NOT_EXISTS, FileRoot, PathRefused
from litedesk.proto import message_pb2 as pb

__all__ = ["MAX_FILES", "MAX_SCANNED", "TooManyFiles", "empty_dirs", "read_dir", "recursive_files"]

MAX_FILES = 10_000
# Entries (files, directories, anything) one walk may look at: ten times
# the files it may return leaves room for directories and skipped entries.
MAX_SCANNED = 100_000


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _entry(dir_fd: int, name: str, st: os.stat_result) -> pb.FileEntry:
    mode = st.st_mode
    size = 0
    if stat.S_ISLNK(mode):
        try:
            target_is_dir = stat.S_ISDIR(os.stat(name, dir_fd=dir_fd).st_mode)
        except OSError:
            target_is_dir = False  # a dangling link shows as a file link
        kind = pb.DirLink if target_is_dir else pb.FileLink
    elif stat.S_ISDIR(mode):
        kind = pb.Dir
    else:
        kind = pb.File
        size = st.st_size
    return pb.FileEntry(
        entry_type=kind,
        name=name,
        is_hidden=_hidden(name),
        size=size,
        modified_time=max(0, int(st.st_mtime)),
    )


def _scan(dir_fd: int) -> Iterator[tuple[str, os.stat_result]]:
    """A directory's entries with their lstat; ones that vanish are left out."""
    with os.scandir(dir_fd) as it:
        for e in it:
            try:
                yield e.name, e.stat(follow_symlinks=False)
            except OSError:
                continue


def read_dir(root: FileRoot, remote: str, include_hidden: bool) -> pb.FileDirectory:
    """One level of C{remote} (C{""}: the root), C{path} its resolved absolute path.

    @raise PathRefused: outside the root, C{"Not exists"}, not a directory.
    """
    fd, resolved = root.open_dir(remote)
    try:
        entries = [
            _entry(fd, name, st) for name, st in _scan(fd) if include_hidden or not _hidden(name)
        ]
    except OSError as e:
        raise PathRefused(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    return pb.FileDirectory(id=0, path=resolved, entries=entries)


class TooManyFiles(PathRefused):
    """A recursive list would be longer than L{MAX_FILES}."""

    def __init__(self) -> None:
        super().__init__(
            f"file transfer rejected: too many files (more than {MAX_FILES} files "
            f"exceeds limit of {MAX_FILES})"
        )


def recursive_files(
    root: FileRoot, remote: str, include_hidden: bool, max_files: int = MAX_FILES
) -> tuple[str, list[pb.FileEntry]]:
    """Every regular file below C{remote}, or C{remote} alone if it is a file.

    @return: C{(resolved path, entries)}; entry names relative to the path
        with C{/} (C{""} for a file alone).
    @raise PathRefused: outside, C{"Not exists"}, or L{TooManyFiles}.
    """
    resolved = root.resolve(remote)
    try:
        st = os.stat(resolved)
    except OSError:
        raise PathRefused(NOT_EXISTS) from None
    if stat.S_ISREG(st.st_mode):
        fd, resolved = root.open_file(remote)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return resolved, [
            pb.FileEntry(
                entry_type=pb.File, name="", size=st.st_size, modified_time=int(st.st_mtime)
            )
        ]
    fd, resolved = root.open_dir(remote)
    os.close(fd)
    files: list[pb.FileEntry] = []
    scanned = 0
    # Depth first with an explicit stack (a deep tree must not exhaust
    # Python's stack) and one descriptor open at a time.
    stack: list[str] = [""]
    while stack:
        prefix = stack.pop()
        dir_fd = root.open_subdir(os.path.join(resolved, prefix) if prefix else resolved)
        try:
            subdirs: list[str] = []
            for name, est in _scan(dir_fd):
                scanned += 1
                if scanned > MAX_SCANNED:
                    raise TooManyFiles()
                if _hidden(name) and not include_hidden:
                    continue
                rel = f"{prefix}/{name}" if prefix else name
                if stat.S_ISREG(est.st_mode):
                    if len(files) >= max_files:
                        raise TooManyFiles()
                    files.append(_entry(dir_fd, rel, est))
                    files[-1].name = rel
                elif stat.S_ISDIR(est.st_mode):
                    subdirs.append(rel)
            stack.extend(reversed(subdirs))
        finally:
            os.close(dir_fd)
    return resolved, files


def empty_dirs(root: FileRoot, remote: str, include_hidden: bool) -> pb.ReadEmptyDirsResponse:
    """The directories below (and including) C{remote} with no entries shown.

    Each is a C{FileDirectory} with its absolute path and no entries, as
    RustDesk's C{get_empty_dirs_recursive}; a file gives none.
    @raise PathRefused: outside, C{"Not exists"}, or too large a tree.
    """
    resolved = root.resolve(remote)
    if not os.path.lexists(resolved):
        raise PathRefused(NOT_EXISTS)
    found: list[pb.FileDirectory] = []
    if not os.path.isdir(resolved):
        return pb.ReadEmptyDirsResponse(path=remote, empty_dirs=found)
    fd, resolved = root.open_dir(remote)
    os.close(fd)
    scanned = 0
    stack = [resolved]
    while stack:
        path = stack.pop()
        dir_fd = root.open_subdir(path)
        try:
            shown = [
                (name, st) for name, st in _scan(dir_fd) if include_hidden or not _hidden(name)
            ]
        finally:
            os.close(dir_fd)
        scanned += len(shown) + 1
        if scanned > MAX_SCANNED or len(found) >= MAX_FILES:
            raise TooManyFiles()
        if not shown:
            found.append(pb.FileDirectory(path=path))
            continue
        stack.extend(
            os.path.join(path, name) for name, st in reversed(shown) if stat.S_ISDIR(st.st_mode)
        )
    return pb.ReadEmptyDirsResponse(path=remote, empty_dirs=found)
