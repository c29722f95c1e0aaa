# -*- test-case-name: tests.test_pg_store -*-
"""Which peer store C{--database} names (its URL is shown by L{litedesk.rendezvous.db_url}).

The server opens its peer store here: the SQLite file in C{--data-dir}
(L{litedesk.rendezvous.store}, the default, hbbs' own file) or PostgreSQL
(L{litedesk.rendezvous.pg_store}).  This module does not import C{psycopg},
an optional dependency (C{litedesk[postgresql]}), unless PostgreSQL is asked
for, so that a server on SQLite needs nothing more.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from litedesk.rendezvous.db_url import is_postgres_url, redact_url
from litedesk.rendezvous.store import PeerRecord, PeerStore

__all__ = ["PeerStoreService", "describe", "is_postgres_url", "open_peer_store", "redact_url"]


class PeerStoreService(Protocol):
    """What the server needs of a peer store: both stores provide it."""

    def load_all(self) -> list[PeerRecord]: ...

    def save(self, record: PeerRecord) -> Deferred[bytes]: ...

    def close(self) -> Deferred[None]: ...


def describe(database: str, sqlite_path: Path) -> str:
    """The peer database as logs name it (a PostgreSQL URL without its password)."""
    return redact_url(database) if database else str(sqlite_path)


def open_peer_store(database: str, sqlite_path: Path, reactor: Any) -> PeerStoreService:
    """The store C{--database} names: SQLite at C{sqlite_path} when empty.

    @raise SystemExit: with the reason (and no password) when PostgreSQL
        cannot be reached or its driver is not installed.
    """
    if not database:
        if not sqlite_path.exists():
            # SQLite gives the -wal/-shm files the database's mode: keep all 0600.
            os.close(os.open(sqlite_path, os.O_CREAT | os.O_WRONLY, 0o600))
        return PeerStore(sqlite_path, reactor)
    try:
        import psycopg

        from litedesk.rendezvous.pg_store import PgPeerStore
    except ImportError as e:
        raise SystemExit(
            f"litedesk-relay: --database needs psycopg (pip install 'litedesk[postgresql]'): {e}"
        ) from None
    try:
        return PgPeerStore(database, reactor)
    except (psycopg.Error, OSError) as e:
        # libpq's messages name host, port and user, never the password.
        raise SystemExit(f"litedesk-relay: --database {redact_url(database)}: {e}") from None
