# -*- test-case-name: tests.test_viewer_nat_cache -*-
"""The viewer's NAT type, kept for a while instead of tested on every connect.

The NAT test (docs/protocol.rst §7.4) costs two TCP connections and up to
L{litedesk.viewer.punch_link.NAT_TEST_TIMEOUT} before the request goes out.
A NAT does not change between two connects a minute apart, so the viewer
keeps the result for L{DEFAULT_TTL} seconds, per rendezvous server and per
local address towards it: a laptop on another network has another local
address, and asks again.  RustDesk keeps its NAT type in its config the
same way, and tests again in the background.

A result that turned out wrong (a punch that failed) is forgotten
(L{NatCache.forget}), so the next connect tests again.  The file is the
viewer's own (0600 in its cache directory); a damaged one is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from litedesk.nat.nattype import NAMES, UNKNOWN
from litedesk.nat.sockets import local_address_towards

__all__ = ["DEFAULT_TTL", "NatCache", "default_cache_file"]

#: Seconds a tested NAT type is used for.
DEFAULT_TTL = 600.0
#: Entries kept in the file (servers times networks); the oldest go first.
MAX_ENTRIES = 32


def default_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "litedesk" / "nat-type.json"


class NatCache:
    """NAT types by (server, local address), each with the time it was tested.

    @param now: the clock (seconds since the epoch), injected for tests.
    """

    def __init__(self, path: Path, ttl: float, now: Callable[[], float]) -> None:
        self.path = path
        self.ttl = ttl
        self._now = now

    def key(self, server: tuple[str, int]) -> str | None:
        """This network's key for C{server}, or None when there is no route."""
        try:
            local = local_address_towards(*server)
        except OSError:
            return None
        return f"{server[0]}:{server[1]}|{local}"

    def get(self, server: tuple[str, int]) -> int | None:
        """The NAT type tested less than C{ttl} ago on this network, or None."""
        if self.ttl <= 0:
            return None
        key = self.key(server)
        entry = self._load().get(key or "")
        if not isinstance(entry, dict):
            return None
        nat, at = entry.get("nat"), entry.get("at")
        if not isinstance(nat, int) or nat not in NAMES or nat == UNKNOWN:
            return None
        if not isinstance(at, int | float) or not 0 <= self._clock() - at < self.ttl:
            return None
        return nat

    def put(self, server: tuple[str, int], nat: int) -> None:
        """Remember a tested NAT type (UNKNOWN, a failed test, is not kept)."""
        if self.ttl <= 0 or nat == UNKNOWN:
            return
        key = self.key(server)
        if key is None:
            return
        entries = self._load()
        entries.pop(key, None)
        entries[key] = {"nat": nat, "at": self._clock()}
        while len(entries) > MAX_ENTRIES:
            entries.pop(next(iter(entries)))
        self._save(entries)

    def forget(self, server: tuple[str, int]) -> None:
        """The kept type led to a failed punch: test again next time."""
        key = self.key(server)
        entries = self._load()
        if key is not None and entries.pop(key, None) is not None:
            self._save(entries)

    def _clock(self) -> float:
        return float(self._now())

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, entries: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(entries, f)
            tmp.replace(self.path)
