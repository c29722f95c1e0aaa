# -*- test-case-name: tests.test_viewer_files_window -*-
"""What the Files window's two panes show, without Tk: listings, paths, sizes.

The local pane lists the viewer's own file system into the same
C{pb.FileEntry} the host sends for the remote pane (hbb_common
src/fs.rs C{read_dir}), so one Treeview code path shows both.  Remote
paths are the host's strings: a Windows host (a RustDesk app) uses
backslashes and drive letters, so the path helpers go by the separator the
path itself uses instead of C{os.path}.  Everything here is a plain
function of its arguments, tested without a display.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from litedesk.proto import message_pb2 as pb

#: Entry types that can be entered (hbb_common FileType: Dir, DirLink, DirDrive).
DIR_TYPES = frozenset({pb.Dir, pb.DirLink, pb.DirDrive})

#: A local directory with more entries than this is shown cut off, so that
#: opening a huge directory cannot stall the window (and the network with it).
MAX_LOCAL_ENTRIES = 20_000


def is_dir(entry: pb.FileEntry) -> bool:
    return entry.entry_type in DIR_TYPES


def sorted_entries(entries: list[pb.FileEntry]) -> list[pb.FileEntry]:
    """Directories first, then files, each by name ignoring case (as a file manager)."""
    return sorted(entries, key=lambda e: (not is_dir(e), e.name.casefold(), e.name))


def fmt_size(n: int) -> str:
    """A size as a person reads it: C{"512 B"}, C{"1.5 KB"}, C{"3.2 MB"}."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def fmt_modified(ts: int) -> str:
    """Unix seconds as local date and time; C{""} for 0 (unknown)."""
    if ts <= 0:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    except (OverflowError, OSError, ValueError):
        return ""  # a host may send any u64


def _sep(path: str) -> str:
    return "\\" if "\\" in path and "/" not in path else "/"


def remote_join(directory: str, name: str) -> str:
    """C{name} inside the host directory C{directory}, with that path's separator."""
    sep = _sep(directory)
    if not directory:
        return name
    return directory + name if directory.endswith(sep) else f"{directory}{sep}{name}"


def remote_parent(path: str) -> str:
    """The host directory above C{path}; C{path} itself at a root (C{/}, C{C:\\})."""
    sep = _sep(path)
    trimmed = path.rstrip(sep)
    if not trimmed:
        return path or sep
    head = trimmed.rsplit(sep, 1)[0] if sep in trimmed else ""
    if not head:
        return sep if path.startswith(sep) else path
    if sep == "\\" and head.endswith(":"):
        return head + sep  # C:\Users -> C:\
    return head


def local_entries(directory: Path, include_hidden: bool = False) -> list[pb.FileEntry]:
    """One level of a local directory as C{FileEntry}s (hbb_common src/fs.rs read_dir).

    Entries that vanish or cannot be looked at while listing are left out;
    symbolic links are shown by what they point to (C{DirLink},
    C{FileLink}) and a dangling one as a file of size 0.

    @raise OSError: the directory itself cannot be read.
    """
    out: list[pb.FileEntry] = []
    with os.scandir(directory) as it:
        for d in it:
            hidden = d.name.startswith(".")
            if hidden and not include_hidden:
                continue
            entry = _local_entry(d, hidden)
            if entry is not None:
                out.append(entry)
            if len(out) >= MAX_LOCAL_ENTRIES:
                break
    return out


def _local_entry(d: os.DirEntry[str], hidden: bool) -> pb.FileEntry | None:
    try:
        link = d.is_symlink()
        st = d.stat(follow_symlinks=True)
    except FileNotFoundError:
        if link:
            return pb.FileEntry(entry_type=pb.FileLink, name=d.name, is_hidden=hidden)
        return None
    except OSError:
        return None
    directory = stat.S_ISDIR(st.st_mode)
    kinds = (pb.DirLink, pb.Dir) if directory else (pb.FileLink, pb.File)
    kind = kinds[0] if link else kinds[1]
    return pb.FileEntry(
        entry_type=kind,
        name=d.name,
        is_hidden=hidden,
        size=0 if directory else st.st_size,
        modified_time=max(0, int(st.st_mtime)),
    )


@dataclass(frozen=True)
class TransferJob:
    """One selected item to copy: a file or a whole folder.

    @ivar upload: viewer to host (else host to viewer).
    @ivar source: the path on the sending side.
    @ivar dest: the directory on the other side that the item goes into
        under its own name.  The file client is given the directory, not
        the item's new path: it puts an item into an existing directory,
        so naming the item's path would nest a folder copied a second time
        (to resume it) inside its first copy.  A host directory ends with
        its separator, which makes the client list it rather than its
        parent (the parent of the file root is outside it).
    """

    upload: bool
    name: str
    source: str
    dest: str


def plan_uploads(local_dir: Path, names: list[str], remote_dir: str) -> list[TransferJob]:
    """The selected local items, each into C{remote_dir} under its own name."""
    into = remote_join(remote_dir, "") if remote_dir else remote_dir
    return [TransferJob(True, n, str(local_dir / n), into) for n in names]


def plan_downloads(remote_dir: str, names: list[str], local_dir: Path) -> list[TransferJob]:
    """The selected host items, each into C{local_dir} under its own name.

    A name the host sent that is not a plain single name (C{..}, a path, a
    NUL) is left out: it would write outside the chosen local directory.
    """
    return [
        TransferJob(False, n, remote_join(remote_dir, n), str(local_dir))
        for n in names
        if safe_local_name(n)
    ]


def safe_local_name(name: str) -> bool:
    """Whether a host-supplied name is one plain component here."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")
