# -*- test-case-name: tests.test_cluster_node -*-
"""The cluster's tables in the shared PostgreSQL database, and their statements.

Beside hbbs' C{peer} table (L{litedesk.rendezvous.pg_schema}):

- C{litedesk_nodes}: one row per node, written every beat
  (L{litedesk.cluster.membership});
- C{litedesk_presence}: the node each host last came online on
  (L{litedesk.cluster.presence}), so a node that starts knows where the
  hosts are without waiting for each to arrive again;
- C{litedesk_cluster}: one row, the generation of the list of nodes handed
  to clients, bumped by whichever node finds the list changed.

Schema creation takes a transaction-scoped advisory lock: two nodes starting
at once would otherwise race in C{CREATE TABLE IF NOT EXISTS} (a unique
violation in PostgreSQL's catalogue).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from litedesk.cluster.membership import LISTED_FOR, NodeRow
from litedesk.rendezvous.pg_schema import SCHEMA_LOCK

__all__ = [
    "NODE_CHANNEL_PREFIX",
    "PEERS_CHANNEL",
    "PRESENCE_CHANNEL",
    "beat",
    "create_cluster_schema",
    "load_presence",
    "node_channel",
    "write_presence",
]

PEERS_CHANNEL = "litedesk_peers"
PRESENCE_CHANNEL = "litedesk_presence"
NODE_CHANNEL_PREFIX = "litedesk_node_"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS litedesk_nodes ("
    "node_id text PRIMARY KEY, "
    "rendezvous text NOT NULL, "
    "started timestamptz NOT NULL DEFAULT now(), "
    "seen timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS litedesk_presence ("
    "id varchar(100) PRIMARY KEY, "
    "node text NOT NULL, "
    "since timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE IF NOT EXISTS litedesk_cluster ("
    "one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "generation integer NOT NULL, "
    "servers text NOT NULL)",
)


def node_channel(node_id: str) -> str:
    """The NOTIFY channel of C{node_id}.

    Channel names are identifiers of at most 63 bytes; a node id is free
    text, so it is hex-encoded (and clipped: node ids are short names).
    """
    return NODE_CHANNEL_PREFIX + node_id.encode().hex()[:48]


def create_cluster_schema(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in _SCHEMA:
            conn.execute(statement)


def beat(conn: psycopg.Connection[Any], node_id: str, rendezvous: str) -> tuple[list[NodeRow], int]:
    """Write this node's row; read every row and the generation.

    If the list of addresses clients get has changed (a node joined, moved
    or was dropped after L{LISTED_FOR}), the generation is bumped, under the
    row's lock so that two nodes noticing at once bump it once.
    """
    with conn.transaction():
        conn.execute(
            "INSERT INTO litedesk_nodes (node_id, rendezvous) VALUES (%s, %s) "
            "ON CONFLICT (node_id) DO UPDATE SET rendezvous = EXCLUDED.rendezvous, "
            "seen = now()",
            (node_id, rendezvous),
        )
        rows = conn.execute(
            "SELECT node_id, rendezvous, extract(epoch FROM now() - seen)::float8 "
            "FROM litedesk_nodes"
        ).fetchall()
        listed = ",".join(sorted({r[1] for r in rows if r[1] and r[2] < LISTED_FOR}))
        current = conn.execute(
            "SELECT generation, servers FROM litedesk_cluster FOR UPDATE"
        ).fetchone()
        if current is None:
            conn.execute(
                "INSERT INTO litedesk_cluster (generation, servers) VALUES (1, %s) "
                "ON CONFLICT (one) DO NOTHING",
                (listed,),
            )
            generation = 1
        elif current[1] != listed:
            generation = int(current[0]) + 1
            conn.execute(
                "UPDATE litedesk_cluster SET generation = %s, servers = %s",
                (generation, listed),
            )
        else:
            generation = int(current[0])
    return [NodeRow(str(r[0]), str(r[1]), float(r[2])) for r in rows], generation


def load_presence(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    rows = conn.execute("SELECT id, node FROM litedesk_presence").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def write_presence(
    conn: psycopg.Connection[Any], node_id: str, peer_ids: list[str], payloads: Iterable[str]
) -> None:
    """Record C{peer_ids} as on C{node_id} and notify the others, in one transaction.

    The NOTIFY is delivered on commit, so no node hears of an arrival the
    table does not hold.
    """
    with conn.transaction(), conn.cursor() as cur:
        # One statement for the batch: a statement per row costs the client
        # (psycopg's pure-Python implementation) ~70 us each, as the peer
        # store found (litedesk/rendezvous/pg_statements.py).
        cur.execute(
            "INSERT INTO litedesk_presence (id, node) "
            "SELECT DISTINCT ON (i) i, %s FROM unnest(%s::varchar[]) AS i "
            "ON CONFLICT (id) DO UPDATE SET node = EXCLUDED.node, since = now()",
            (node_id, peer_ids),
        )
        cur.executemany(
            "SELECT pg_notify(%s, %s)", [(PRESENCE_CHANNEL, payload) for payload in payloads]
        )
