"""hbbs' per-source-IP limit on C{RegisterPk} (docs/protocol.rst §5.3).

Net effect, kept exactly: the 33rd C{RegisterPk} from one IP without a 60 s
pause is refused (the window is not refreshed by refusals, so it unblocks 60 s
after the last allowed one), and one IP may own about 300 distinct ids per day.
"""

from __future__ import annotations

BLOCK_WINDOW = 60.0
BLOCK_COUNT = 30
ID_WINDOW = 86400.0
ID_COUNT = 300


class _Entry:
    __slots__ = ("count", "ids", "t1", "t2")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.t1 = now
        # Created on first use: most IPs register one id, and an empty set
        # costs 216 bytes per IP for a day.
        self.ids: set[str] | None = None
        self.t2 = now


class IpBlocker:
    """Sans-IO: every call takes the current time."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def allow(self, ip: str, peer_id: str, now: float) -> bool:
        entry = self._entries.get(ip)
        if entry is None:
            # hbbs lets the first request through without counting it or
            # remembering its id; we keep that so the thresholds match.
            self._entries[ip] = _Entry(now)
            return True
        if now - entry.t1 > BLOCK_WINDOW:
            entry.count = 0
        elif entry.count > BLOCK_COUNT:
            return False
        entry.count += 1
        entry.t1 = now
        ids = entry.ids
        is_new = ids is None or peer_id not in ids
        if now - entry.t2 > ID_WINDOW:
            ids = entry.ids = None
        elif ids is not None and len(ids) > ID_COUNT:
            return not is_new
        if is_new:
            if ids is None:
                ids = entry.ids = set()
            ids.add(peer_id)
            entry.t2 = now
        return True

    def prune(self, now: float) -> int:
        """Forget IPs idle for a day (hbbs never does; memory must stay bounded)."""
        stale = [
            ip
            for ip, e in self._entries.items()
            if now - e.t1 > BLOCK_WINDOW and now - e.t2 > ID_WINDOW
        ]
        for ip in stale:
            del self._entries[ip]
        return len(stale)

    def __len__(self) -> int:
        return len(self._entries)
