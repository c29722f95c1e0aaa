# -*- test-case-name: tests.test_cluster_membership -*-
"""Which nodes a cluster has and which of them are alive, sans-IO.

Every node writes its row in C{litedesk_nodes} every L{BEAT} seconds and reads
all rows back with the age of each as PostgreSQL sees it (so the nodes'
clocks need not agree).  A node whose row is older than L{DEAD_AFTER} is
dead: requests for its hosts are answered "offline" instead of being
forwarded into the void, and its hosts, which stop getting answers, move
to another node of the list they got in C{ConfigUpdate.rendezvous_servers}.

That list is every node seen within L{LISTED_FOR}, and its serial is the
cluster's generation (bumped by the node that changes the list,
L{litedesk.cluster.cluster_sql}) added to the configured C{--serial}:
every node computes the same serial, and it only grows, which is what a
client needs to take a new list (it is sent when the server's serial is
newer than the client's, docs/protocol.rst §5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BEAT", "DEAD_AFTER", "LISTED_FOR", "Membership", "NodeRow"]

#: Seconds between a node's writes of its own row.
BEAT = 2.0
#: A node not heard of for this long is dead (several missed beats, so one
#: slow transaction does not declare it dead).
DEAD_AFTER = 10.0
#: Nodes stay in the clients' list this long after they were last seen: a
#: node down for maintenance is still where its hosts come back.
LISTED_FOR = 7 * 86400.0
#: Clients take ConfigUpdate only from a serial above 3 (they send
#: max(stored, 3)), so the cluster's serials start above it.
MIN_SERIAL = 3


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One node as its row says: id, advertised rendezvous address, age in seconds."""

    node_id: str
    rendezvous: str
    age: float


class Membership:
    """The nodes of a cluster as last read, and the list clients are given.

    @param node_id: this node.
    @param base_serial: the configured C{--serial}.
    """

    def __init__(self, node_id: str, base_serial: int = 0) -> None:
        self.node_id = node_id
        self.base_serial = base_serial
        self._rows: dict[str, NodeRow] = {}
        self._read_at = float("-inf")
        self.generation = 0

    def update(self, rows: list[NodeRow], generation: int, now: float) -> list[str]:
        """The rows read at C{now}; returns the nodes alive at the last read and not now."""
        before = set(self.alive_nodes(self._read_at)) if self._rows else set()
        self._rows = {r.node_id: r for r in rows}
        self._read_at = now
        self.generation = max(self.generation, generation)
        return sorted(before - set(self.alive_nodes(now)))

    def _age(self, row: NodeRow, now: float) -> float:
        return row.age + max(0.0, now - self._read_at)

    def alive(self, node_id: str, now: float) -> bool:
        """Is C{node_id} alive?  This node always is.

        A node without a row here has joined since the last read (rows are
        never deleted, and a node writes its row before it announces any
        host): alive.
        """
        if node_id == self.node_id:
            return True
        row = self._rows.get(node_id)
        return row is None or self._age(row, now) < DEAD_AFTER

    def alive_nodes(self, now: float) -> list[str]:
        return sorted(n for n in self._rows if self.alive(n, now))

    def rows(self) -> list[NodeRow]:
        return sorted(self._rows.values(), key=lambda r: r.node_id)

    def rendezvous_servers(self) -> list[str]:
        """Every listed node's address: this node's first, then by node id."""
        listed = [r for r in self.rows() if r.age < LISTED_FOR and r.rendezvous]
        listed.sort(key=lambda r: (r.node_id != self.node_id, r.node_id))
        out: list[str] = []
        for r in listed:
            if r.rendezvous not in out:
                out.append(r.rendezvous)
        return out

    @property
    def serial(self) -> int:
        """The ConfigUpdate serial: grows with every change of the list."""
        return max(self.base_serial, MIN_SERIAL) + self.generation
