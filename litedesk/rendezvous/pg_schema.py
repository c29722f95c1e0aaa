# -*- test-case-name: tests.test_pg_store -*-
"""hbbs' peer table in PostgreSQL, and how LiteDesk connects to PostgreSQL.

Shared by the server's store (L{litedesk.rendezvous.pg_store}) and
C{litedesk-admin migrate} (L{litedesk.rendezvous.pg_migrate}): the table
and indexes (created when missing), the session settings every connection
gets (C{synchronous_commit = on}: a commit returns only once PostgreSQL has
flushed its WAL, which is what an acknowledged registration promises), and
psycopg's own log routed into the server's.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from twisted.logger import Logger, LogLevel

__all__ = [
    "CONNECT_TIMEOUT",
    "PG_SCHEMA",
    "configure",
    "connect",
    "create_schema",
    "route_psycopg_log",
]

# hbbs' table (litedesk/rendezvous/store.py SCHEMA) in PostgreSQL's types:
# BLOB -> bytea, TINYINT -> smallint, DATETIME -> timestamp (hbbs stores UTC
# without a zone).  "user" is a reserved word in PostgreSQL and is quoted.
PG_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS peer ("
    "guid bytea PRIMARY KEY NOT NULL, "
    "id varchar(100) NOT NULL, "
    "uuid bytea NOT NULL, "
    "pk bytea NOT NULL, "
    "created_at timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'), "
    '"user" bytea, '
    "status smallint, "
    "note varchar(300), "
    "info text NOT NULL"
    ")",
    "CREATE UNIQUE INDEX IF NOT EXISTS index_peer_id ON peer (id)",
    'CREATE INDEX IF NOT EXISTS index_peer_user ON peer ("user")',
    "CREATE INDEX IF NOT EXISTS index_peer_created_at ON peer (created_at)",
    "CREATE INDEX IF NOT EXISTS index_peer_status ON peer (status)",
)

CONNECT_TIMEOUT = 10.0
#: The advisory lock every LiteDesk schema change takes (peer table and the
#: cluster's tables): any 64-bit number no other application uses.
SCHEMA_LOCK = 0x4C44_434C_5354


class _ToTwistedLog(logging.Handler):
    """psycopg's stdlib log records (the pool's reconnection attempts) into
    the server's log, where the operator reads, rather than stderr."""

    _log = Logger(namespace="psycopg")

    def emit(self, record: logging.LogRecord) -> None:
        level = LogLevel.warn if record.levelno >= logging.WARNING else LogLevel.info
        self._log.emit(level, "PostgreSQL client: {message}", message=record.getMessage())


def route_psycopg_log() -> None:
    """Send psycopg's log records to the Twisted log (idempotent)."""
    logger = logging.getLogger("psycopg")
    if not any(isinstance(h, _ToTwistedLog) for h in logger.handlers):
        logger.addHandler(_ToTwistedLog(logging.INFO))
        logger.propagate = False


def configure(conn: psycopg.Connection[Any]) -> None:
    # Durability is what an acknowledged RegisterPk promises: a commit returns
    # only once PostgreSQL has flushed its WAL, whatever the server's default.
    conn.execute("SET synchronous_commit = on")


def create_schema(conn: psycopg.Connection[Any]) -> str:
    """Create the table and indexes if missing; returns C{synchronous_commit}."""
    with conn.transaction():
        # Two servers starting at once on a new database (a cluster's nodes)
        # would race in CREATE TABLE IF NOT EXISTS: PostgreSQL checks
        # "exists" before it inserts into its catalogue, and the loser fails
        # with a unique violation.  The lock makes them take turns.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in PG_SCHEMA:
            conn.execute(statement)
    row = conn.execute("SHOW synchronous_commit").fetchone()
    return str(row[0]) if row else ""


def connect(url: str) -> psycopg.Connection[Any]:
    """One autocommit connection with the store's settings (start-up, migration)."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT))
    configure(conn)
    return conn
