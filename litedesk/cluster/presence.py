# -*- test-case-name: tests.test_cluster_node -*-
"""Which node each host was last seen arriving on, sans-IO.

A node announces a host when it comes online there (its first registration
after being offline, or its stream bound), not on every heartbeat: the
heartbeat path touches no database.  Every node keeps the announcements in
memory (L{Presence}), loaded from C{litedesk_presence} at start-up and then
kept current by the presence channel.  A host that goes offline keeps its
entry: a request for it goes to its last node, which answers "offline".
One entry per host that was ever online, the same order of memory as the
registry's peers.
"""

from __future__ import annotations

__all__ = ["Presence"]


class Presence:
    """Host id -> the node it last arrived on."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._where: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._where)

    def load(self, rows: list[tuple[str, str]]) -> None:
        """C{(peer_id, node)} rows from the table (start-up, or after a reconnect)."""
        self._where.update(rows)

    def arrived(self, peer_id: str, node: str) -> bool:
        """C{peer_id} came online on C{node}; True if that is news."""
        if self._where.get(peer_id) == node:
            return False
        self._where[peer_id] = node
        return True

    def forget(self, peer_id: str) -> None:
        self._where.pop(peer_id, None)

    def renamed(self, old_id: str, new_id: str) -> None:
        node = self._where.pop(old_id, None)
        if node is not None:
            self._where[new_id] = node

    def node_of(self, peer_id: str) -> str | None:
        """The node C{peer_id} last arrived on (possibly this one), or None."""
        return self._where.get(peer_id)
