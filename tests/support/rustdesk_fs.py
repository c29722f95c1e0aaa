"""The disk side of a stock RustDesk client's file transfer, emulated for tests.

hbb_common ``src/fs.rs`` as RustDesk 1.4.9's client uses it: L{WriteJob} is a download
(``TransferJob::new_write``: ``<name>.download`` beside a ``<name>.digest`` JSON, renamed
into place with the host's mtime by ``modify_time``; ``confirm`` with an offset reopens
the partial file to resume), L{ReadJob} an upload (``new_read``/``read``: 128 KiB blocks,
zstd when shorter except for already compressed kinds, an empty block per file end),
L{write_need_confirmation} the overwrite check, L{transfer_name_error} the checks a host's
file list must pass, L{recursive_files} ``get_recursive_files``.  L{Transfer} is what one
job did.  The session that drives them is L{tests.support.rustdesk_files}.

Same independence rule as L{tests.support.rustdesk_client}: only the generated protobufs
and zstandard, never LiteDesk's own ``litedesk.files``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import zstandard

from litedesk.proto import message_pb2 as pb

from .rustdesk_client import EmulatorError

__all__ = [
    "BLOCK_SIZE",
    "COMPRESSED_EXTS",
    "ReadJob",
    "Transfer",
    "WriteJob",
    "compress",
    "decompress",
    "recursive_files",
    "transfer_name_error",
    "version_number",
    "write_need_confirmation",
]

#: fs.rs read: the buffer one block is read into.
BLOCK_SIZE = 128 * 1024
#: fs.rs is_compressed_file: extensions sent as they are.
COMPRESSED_EXTS = frozenset({"xz", "gz", "zip", "7z", "rar", "bz2", "tgz", "png", "jpg"})


def version_number(v: str) -> int:
    """hbb_common get_version_number: "1.1.10" -> 1001100 (last part times ten)."""
    parts = v.split("-")
    n = last = 0
    for x in parts[0].split("."):
        last = int(x) if x.isdigit() else 0
        n = n * 1000 + last
    n += last * 9
    if len(parts) > 1 and parts[1].isdigit():
        n += int(parts[1])
    return n


def compress(data: bytes) -> bytes:
    """hbb_common compress.rs: one zstd frame at COMPRESS_LEVEL 3."""
    return zstandard.ZstdCompressor(level=3).compress(data)


def decompress(data: bytes) -> bytes:
    """compress.rs decompress: zstd::decode_all, frames back to back.

    @raise zstandard.ZstdError: not zstd (RustDesk writes nothing then).
    """
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    with reader:
        return reader.read()


def _mtime(st: os.stat_result) -> int:
    return int(st.st_mtime)


def recursive_files(path: Path, include_hidden: bool) -> list[pb.FileEntry]:
    """fs.rs get_recursive_files: the files under C{path}, names relative with "/".

    A single file is one entry with an empty name; directory symlinks and special files
    are left out; hidden means a name starting with ".".

    @raise FileNotFoundError: "Not exists".
    """
    if path.is_file():
        st = path.stat()
        return [pb.FileEntry(entry_type=pb.File, size=st.st_size, modified_time=_mtime(st))]
    if not path.is_dir():
        raise FileNotFoundError("Not exists")
    out: list[pb.FileEntry] = []
    for child in sorted(path.iterdir()):
        if child.name.startswith(".") and not include_hidden:
            continue
        st = child.lstat()
        if stat.S_ISREG(st.st_mode):
            out.append(
                pb.FileEntry(
                    entry_type=pb.File,
                    name=child.name,
                    size=st.st_size,
                    modified_time=_mtime(st),
                )
            )
        elif stat.S_ISDIR(st.st_mode):
            for entry in recursive_files(child, include_hidden):
                entry.name = f"{child.name}/{entry.name}"
                out.append(entry)
    return out


def transfer_name_error(names: list[str]) -> str | None:
    """fs.rs validate_transfer_file_names: why a host's file list is unsafe, or None."""
    if len(names) == 1 and names[0] == "":
        return None
    for name in names:
        if not name:
            return "empty file name in multi-file transfer"
        if "\0" in name:
            return "file name contains null bytes"
        if ".." in name.split("/"):
            return "path traversal detected in file name"
        if name.startswith("/"):
            return "absolute path detected in file name"
    return None


def _join(base: Path, name: str) -> Path:
    """TransferJob::join: an empty name is the base itself (a single-file job)."""
    return base / name if name else base


def _no_symlinks(base: Path, name: str) -> None:
    """fs.rs validate_no_symlink_components: no existing part of C{name} is a symlink."""
    current = base
    for part in Path(name).parts if name else ():
        current = current / part
        if current.is_symlink():
            raise EmulatorError("symlink path component is not allowed")


def write_need_confirmation(
    is_resume: bool, path: Path, digest: pb.FileTransferDigest
) -> pb.FileTransferDigest | None:
    """fs.rs is_write_need_confirmation: None when there is no such file, else the local
    digest to decide on (RustDesk never returns its IsSame case)."""
    digest_file = Path(f"{path}.digest")
    download = Path(f"{path}.download")
    if is_resume and digest_file.exists() and download.exists():
        try:
            local = json.loads(digest_file.read_text())
            same = local["modified"] == digest.last_modified and local["size"] == digest.file_size
        except (ValueError, KeyError, TypeError):
            same = False
        if same and download.stat().st_size > 0:
            return pb.FileTransferDigest(
                id=digest.id,
                file_num=digest.file_num,
                last_modified=digest.last_modified,
                file_size=digest.file_size,
                is_identical=True,
                transferred_size=download.stat().st_size,
            )
    if path.is_file():
        st = path.stat()
        # Rust compares Durations: the local mtime keeps its nanoseconds.
        identical = st.st_mtime_ns == digest.last_modified * 10**9 and st.st_size == (
            digest.file_size
        )
        return pb.FileTransferDigest(
            id=digest.id,
            file_num=digest.file_num,
            last_modified=_mtime(st),
            file_size=st.st_size,
            is_identical=identical,
        )
    return None


@dataclass
class Transfer:
    """What one job did, as the client's job list would show it."""

    id: int
    files: list[pb.FileEntry] = field(default_factory=list)
    done: pb.FileTransferDone | None = None
    error: str | None = None
    digests: list[pb.FileTransferDigest] = field(default_factory=list)
    """The host's digests: per file for a download, its is_upload answers for an upload."""
    confirms: list[pb.FileTransferSendConfirmRequest] = field(default_factory=list)
    """Our decisions, sent or (an upload's dialog answer) kept to ourselves."""
    asked: list[pb.FileTransferDigest] = field(default_factory=list)
    """The digests the user was asked about (no remembered overwrite choice)."""
    blocks: int = 0
    compressed_blocks: int = 0
    problems: list[str] = field(default_factory=list)
    """What went wrong writing (RustDesk ignores it: "to-do: add skip for writing job")."""


class _Job:
    """The part of fs.rs TransferJob both directions share."""

    def __init__(self, transfer: Transfer, base: Path, is_resume: bool) -> None:
        self.t = transfer
        self.base = base
        self.is_resume = is_resume
        self.file_num = 0
        self.stream: BinaryIO | None = None

    @property
    def files(self) -> list[pb.FileEntry]:
        return self.t.files

    def path(self, file_num: int) -> Path:
        return _join(self.base, self.files[file_num].name)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class WriteJob(_Job):
    """fs.rs TransferJob::new_write: a download into C{base} (the destination file of a
    single-file job, else the directory the names are relative to)."""

    def __init__(self, transfer: Transfer, base: Path, is_resume: bool = False) -> None:
        super().__init__(transfer, base, is_resume)
        self.digest = {"size": 0, "modified": 0}
        self.skipped = False

    def set_files(self, entries: list[pb.FileEntry]) -> str | None:
        error = transfer_name_error([e.name for e in entries])
        if error is None:
            try:
                for e in entries:
                    _no_symlinks(self.base, e.name)
            except EmulatorError as e:
                error = str(e)
        if error is None:
            self.t.files = entries
        return error

    def confirm(self, req: pb.FileTransferSendConfirmRequest) -> None:
        """TransferJob::confirm: a skip moves on, an offset reopens the partial file."""
        self.t.confirms.append(req)
        if req.file_num != self.file_num:
            return
        if req.WhichOneof("union") == "skip" and req.skip:
            self.close()
            self.file_num += 1
            self.skipped = True
        elif req.WhichOneof("union") == "offset_blk" and req.offset_blk > 0:
            path = self.path(req.file_num)
            download = Path(f"{path}.download")
            f: BinaryIO
            if download.exists() and Path(f"{path}.digest").exists():
                f = open(download, "r+b")  # noqa: SIM115 - kept as the job's stream
            elif path.exists():
                # fs.rs opens the finished file read-only here: the next write fails.
                f = open(path, "rb")  # noqa: SIM115
            else:
                return
            f.seek(req.offset_blk)
            self.close()
            self.stream = f

    def write(self, block: pb.FileTransferBlock) -> None:
        """TransferJob::write; a new file number renames the previous file into place."""
        if block.file_num >= len(self.files):
            raise EmulatorError("Wrong file number")
        if block.file_num != self.file_num or self.stream is None:
            self.modify_time()
            self.close()
            self.file_num = block.file_num
            path = self.path(block.file_num)
            _no_symlinks(self.base, self.files[block.file_num].name)
            path.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{path}.digest").unlink(missing_ok=True)
            self.stream = open(f"{path}.download", "wb")  # noqa: SIM115
            Path(f"{path}.digest").write_text(json.dumps(self.digest))
        data = decompress(block.data) if block.compressed else block.data
        self.stream.write(data)

    def modify_time(self) -> None:
        """Rename C{<name>.download} into place, drop the digest, set the host's mtime."""
        if self.file_num >= len(self.files):
            return
        self.close()
        path = self.path(self.file_num)
        Path(f"{path}.digest").unlink(missing_ok=True)
        download = Path(f"{path}.download")
        if download.exists():
            download.replace(path)
        mtime = self.files[self.file_num].modified_time
        # filetime::set_file_mtime(...).ok(): a time the system cannot hold is let go.
        with contextlib.suppress(OSError, OverflowError, ValueError):
            os.utime(path, (mtime, mtime))


class ReadJob(_Job):
    """fs.rs TransferJob::new_read: an upload of C{base} (a file or a directory)."""

    def __init__(self, transfer: Transfer, base: Path, include_hidden: bool) -> None:
        super().__init__(transfer, base, False)
        transfer.files = recursive_files(base, include_hidden)
        self.confirmed = False
        self.waiting = False
        self.skipped = False

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def open(self) -> bool:
        """open_data_stream: True when every file is done."""
        if self.file_num >= len(self.files):
            self.close()
            return True
        if self.stream is None:
            self.confirmed = self.waiting = False
            self.stream = open(self.path(self.file_num), "rb")  # noqa: SIM115
        return False

    def digest(self) -> pb.FileTransferDigest:
        """send_current_digest: the open file's mtime (seconds) and size."""
        assert self.stream is not None
        st = os.fstat(self.stream.fileno())
        self.waiting = True
        return pb.FileTransferDigest(
            id=self.t.id,
            file_num=self.file_num,
            last_modified=_mtime(st),
            file_size=st.st_size,
            is_resume=self.is_resume,
        )

    def confirm(self, req: pb.FileTransferSendConfirmRequest) -> None:
        self.t.confirms.append(req)
        if req.file_num != self.file_num:
            return
        if req.WhichOneof("union") == "skip" and req.skip:
            self.close()
            self.confirmed = self.waiting = False
            self.file_num += 1
            self.skipped = True
            return
        self.confirmed = True
        self.skipped = False
        if req.WhichOneof("union") == "offset_blk" and req.offset_blk > 0 and self.stream:
            self.stream.seek(req.offset_blk)

    def read(self) -> pb.FileTransferBlock:
        """One block of at most 128 KiB; the empty one ends the file."""
        assert self.stream is not None
        name = self.files[self.file_num].name or self.base.name
        data = self.stream.read(BLOCK_SIZE)
        block = pb.FileTransferBlock(id=self.t.id, file_num=self.file_num)
        if not data:
            self.close()
            self.file_num += 1
            self.confirmed = self.waiting = False
            return block
        ext = name.rsplit(".", 1)[1] if "." in name else ""
        packed = data if ext in COMPRESSED_EXTS else compress(data)
        block.compressed = len(packed) < len(data)
        block.data = packed if block.compressed else data
        return block
