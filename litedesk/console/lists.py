"""The relay's address lists as the console edits them: check, read, save.

The relay re-reads C{blocklist.txt} (addresses refused at accept) and
C{blacklist.txt} (addresses throttled to --limit-speed) in the data
directory every second (L{litedesk.relay.service.RelayService.reload_lists})
and parses them with L{litedesk.relay.service.read_address_list}: one
address per line, the first word only, C{#} lines ignored, each address
passed through L{litedesk.wire.addrmangle.normalize_host} and compared as
text with the connecting peer's normalised address.

That parser accepts anything, so a typo (C{192.168.1.300}, a network
C{10.0.0.0/8}, which hbbr's lists do not support) silently blocks nobody.
L{check_list} reads a submitted text exactly as the relay will and names
every line whose first word can never match a peer; the console saves
nothing while any line is wrong.

Saving is atomic (L{save_list}: a 0600 temporary file in the same
directory, fsync, rename), so the relay's next poll sees either the old or
the new file, never half of one; the rename gives the file a new inode,
which is one of the things the relay's poll watches.  A submission larger
than L{MAX_LIST_BYTES} is refused, and the console shows at most that much
of a larger file (written by hand on the server) without offering to save
over it.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from litedesk.relay.service import BLACKLIST_FILE, BLOCKLIST_FILE
from litedesk.wire.addrmangle import normalize_host

__all__ = [
    "LISTS",
    "MAX_LIST_BYTES",
    "MAX_LIST_FORM_BYTES",
    "MAX_SHOWN_ERRORS",
    "AddressList",
    "LineError",
    "ListFile",
    "check_list",
    "digest",
    "read_list",
    "save_list",
    "submitted_text",
]

#: The largest list the console reads or accepts, in bytes: 256 KiB, some
#: 18,000 addresses.  URL-encoding can triple a text, and the listener keeps
#: at most 1 MiB of a request body (L{litedesk.api.body.MAX_REQUEST_BODY}).
MAX_LIST_BYTES = 256 * 1024
#: The list form's largest body: the text encoded, plus the other fields.
MAX_LIST_FORM_BYTES = 3 * MAX_LIST_BYTES + 4096
#: The wrong lines shown at most (the count says how many there were).
MAX_SHOWN_ERRORS = 100


@dataclass(frozen=True)
class AddressList:
    """One of the relay's lists: its form name, file and what it does."""

    name: str
    file: str
    title: str
    effect: str


#: The lists, by the name the form posts.
LISTS: dict[str, AddressList] = {
    "blocklist": AddressList(
        "blocklist",
        BLOCKLIST_FILE,
        "Block list",
        "The relay refuses connections from these addresses and closes theirs at once.",
    ),
    "blacklist": AddressList(
        "blacklist",
        BLACKLIST_FILE,
        "Black list",
        "The relay throttles sessions with these addresses to --limit-speed.",
    ),
}


@dataclass(frozen=True)
class LineError:
    """A line the relay would read but never match.

    @ivar number: 1-based line number, as an editor counts.
    @ivar text: the line (shortened for display by the caller).
    @ivar reason: what is wrong, in words.
    """

    number: int
    text: str
    reason: str


def _check_word(word: str) -> str | None:
    """Why the relay can never match C{word} with a peer's address, or C{None}."""
    if "/" in word:
        return "a network: the relay's lists take single addresses only"
    norm = normalize_host(word)
    try:
        ip = ipaddress.ip_address(norm)
    except ValueError:
        return "not an IP address"
    if str(ip) != norm:
        # normalize_host keeps dotted-digit text as it is (its fast path),
        # while peers' addresses come canonical from the kernel.
        return f"the relay compares addresses as text: write {ip}"
    return None


def check_list(text: str) -> list[LineError]:
    """Every line of C{text} the relay would parse into an address no peer has.

    Lines are split and read exactly as L{litedesk.relay.service.read_address_list}
    does (C{str.splitlines}, first word, C{#} comments), so the line numbers
    are the ones the relay sees.
    """
    errors = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        reason = _check_word(parts[0])
        if reason is not None:
            errors.append(LineError(number, line, reason))
    return errors


def submitted_text(raw: bytes) -> str:
    """The posted list as text (UTF-8, line ends as C{\\n}).

    @raise ValueError: too large, or not UTF-8 (the message says which).
    """
    if len(raw) > MAX_LIST_BYTES:
        raise ValueError(f"the list is larger than {MAX_LIST_BYTES // 1024} KiB; nothing was saved")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the list is not UTF-8 text; nothing was saved") from None
    return text.replace("\r\n", "\n")


def digest(data: bytes) -> str:
    """What the edit form carries to notice a file changed under it."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ListFile:
    """A list file as read: its text, digest, and whether it was too big to edit.

    @ivar text: the contents (undecodable bytes replaced, as the relay reads).
    @ivar digest: L{digest} of the bytes read (C{digest(b"")} for no file).
    @ivar too_big: the file exceeds L{MAX_LIST_BYTES}: C{text} is its start.
    """

    text: str
    digest: str
    too_big: bool


def read_list(path: Path) -> ListFile:
    """Read at most L{MAX_LIST_BYTES} (+1 to tell) of C{path}; a missing file is empty."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LIST_BYTES + 1)
    except FileNotFoundError:
        data = b""
    too_big = len(data) > MAX_LIST_BYTES
    data = data[:MAX_LIST_BYTES]
    return ListFile(data.decode("utf-8", "replace"), digest(data), too_big)


def save_list(path: Path, text: str) -> None:
    """Replace C{path} with C{text} atomically: 0600 temporary file, fsync, rename.

    Blocking (a few fsyncs): run it in a thread.  The temporary file lives in
    the same directory (a rename across file systems is not atomic) and is
    removed if anything fails.

    @raise OSError: the file could not be written; the old one is intact.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a crash too.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
