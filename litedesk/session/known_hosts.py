"""Trust-on-first-use host keys for direct C{host:port} sessions.

A viewer that reaches a host without a rendezvous server has no signed key
to pin; the known-hosts file gives it one after the first session.  It is
separate from the pinning (L{litedesk.session.pinning}), which it only uses.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from twisted.logger import Logger

from litedesk.session.host_key import HOST_KEY_LENGTH, HostKeyMismatch, key_b64
from litedesk.session.pinning import PinnedHostCreator, viewer_context_factory

__all__ = ["KnownHosts"]

# Key refusals and trust-on-first-use stay under the namespace they always
# had, so that log filters written for TLS events keep matching.
_log = Logger(namespace="litedesk.session.tls")


class KnownHosts:
    """Trust-on-first-use host keys for direct C{host:port} sessions.

    The file holds one line per host, C{ADDRESS ed25519 BASE64KEY}; C{#}
    starts a comment.  It is created with mode 0600 (in a 0700 directory if
    that has to be created too), because it says which machines this user
    controls.

    @ivar path: the file.
    """

    KEY_TYPE = "ed25519"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def normalize(address: str) -> str:
        """Canonical form of an address: stripped, lower case.

        @raise ValueError: empty, or containing whitespace or C{#}.
        """
        address = address.strip().lower()
        if not address or any(c.isspace() for c in address) or "#" in address:
            raise ValueError(f"not a usable known-hosts address: {address!r}")
        return address

    def entries(self, address: str) -> list[tuple[bytes, int]]:
        """Every key recorded for C{address}, with its 1-based line number."""
        address = self.normalize(address)
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        found: list[tuple[bytes, int]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            if len(fields) != 3 or fields[1] != self.KEY_TYPE:
                _log.warn(
                    "Ignoring malformed line {lineno} of {path}",
                    lineno=lineno,
                    path=str(self.path),
                )
                continue
            if fields[0].lower() != address:
                continue
            try:
                key = base64.b64decode(fields[2], validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != HOST_KEY_LENGTH:
                _log.warn(
                    "Ignoring malformed key on line {lineno} of {path}",
                    lineno=lineno,
                    path=str(self.path),
                )
                continue
            found.append((key, lineno))
        return found

    def lookup(self, address: str) -> tuple[bytes, int] | None:
        """The first key recorded for C{address} and its line, or None."""
        found = self.entries(address)
        return found[0] if found else None

    def add(self, address: str, key: bytes) -> None:
        """Append an entry for C{address} (mode 0600, fsynced)."""
        address = self.normalize(address)
        if len(key) != HOST_KEY_LENGTH:
            raise ValueError(f"a host key is {HOST_KEY_LENGTH} bytes, not {len(key)}")
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{address} {self.KEY_TYPE} {key_b64(key)}\n".encode("ascii")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _mismatch_detail(self, address: str, lineno: int) -> str:
        return (
            f"{self.path} line {lineno} holds another key for {address}; if the "
            f"host's key really changed, remove line {lineno} from {self.path}"
        )

    def context_factory(self, address: str) -> PinnedHostCreator:
        """The viewer's TLS creator for a direct session with C{address}.

        A known address pins its recorded key; a changed key fails with
        L{HostKeyMismatch} naming the line to remove.  An unknown address
        accepts the host's key and records it once the handshake has proven
        the host holds it.
        """
        address = self.normalize(address)
        known = self.lookup(address)
        if known is not None:
            key, lineno = known
            return viewer_context_factory(key, detail=self._mismatch_detail(address, lineno))

        def remember(key: bytes) -> None:
            # Another session may have recorded a key meanwhile.
            recorded = self.entries(address)
            if recorded:
                if all(known_key != key for known_key, _ in recorded):
                    raise HostKeyMismatch(
                        recorded[0][0], key, self._mismatch_detail(address, recorded[0][1])
                    )
                return
            self.add(address, key)
            _log.info(
                "Trusting {address} on first use: host key {key} saved in {path}",
                address=address,
                key=key_b64(key),
                path=str(self.path),
            )

        return viewer_context_factory(None, remember)
