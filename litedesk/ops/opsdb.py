"""The operations database: users, tokens, device reports, address books, audit.

A second SQLite file beside the peer database (C{ops.sqlite3} in the data
directory), so that C{db_v2.sqlite3} stays exactly hbbs' (an operator can
swap the two programs over one data directory) and so that the peer store's
group-commit writer (L{litedesk.rendezvous.store}) never waits behind a slow
console query.

The server reaches it through one L{OpsDatabase}: an C{adbapi} pool with a
single connection on its own thread, so every query runs off the reactor
thread and queries never contend with each other for SQLite's write lock.
C{litedesk-admin} opens the same file directly (L{connect}); the server
notices those changes through SQLite's C{data_version}
(L{litedesk.ops.accounts}).

Each module that keeps tables here declares its own C{SCHEMA} (C{CREATE ...
IF NOT EXISTS} statements); L{ensure_schema} applies them at start-up.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred

__all__ = [
    "OPS_DB_FILE",
    "OpsDatabase",
    "chown_like_dir",
    "connect",
    "create_private",
    "ensure_schema",
]

OPS_DB_FILE = "ops.sqlite3"
BUSY_TIMEOUT_MS = 10_000

T = TypeVar("T")


def create_private(path: Path) -> None:
    """Create C{path} 0600 if missing (SQLite gives -wal/-shm the same mode).

    When root creates it (C{litedesk-admin} run with sudo) in a data
    directory owned by the service user, the file is handed to that user:
    otherwise the server, which runs as that user, could not write it.
    """
    if path.exists():
        return
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    owner = path.parent.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        os.chown(path, owner.st_uid, owner.st_gid)


def _setup(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # A token or a user change is acknowledged only once it is on disk.
    conn.execute("PRAGMA synchronous = FULL")


def connect(path: Path) -> sqlite3.Connection:
    """A plain connection (for C{litedesk-admin} and tests), file created 0600."""
    create_private(path)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000)
    _setup(conn)
    return conn


def ensure_schema(conn: sqlite3.Connection, statements: Iterable[str]) -> None:
    """Run C{CREATE ... IF NOT EXISTS} statements in one transaction."""
    with conn:
        for statement in statements:
            conn.execute(statement)


def chown_like_dir(path: Path) -> None:
    # The WAL and shared-memory files root's admin command creates must stay
    # writable by the service user too.
    owner = path.parent.stat()
    if os.geteuid() == 0 and owner.st_uid != 0:
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chown(str(path) + suffix, owner.st_uid, owner.st_gid)


class OpsDatabase:
    """The server's handle on the ops database: one connection on one thread.

    @param path: the database file (created 0600, schemas applied, here, on
        the calling thread: this happens once at start-up).
    @param reactor: the reactor whose thread results are delivered on.
    @param schema: every C{CREATE ... IF NOT EXISTS} statement of the modules
        keeping tables here.
    """

    def __init__(self, path: Path, reactor: Any, schema: Iterable[str]) -> None:
        self.path = path
        with contextlib.closing(connect(path)) as conn:
            ensure_schema(conn, schema)
        chown_like_dir(path)
        self._pool = adbapi.ConnectionPool(  # type: ignore[no-untyped-call]
            "sqlite3",
            str(path),
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=_setup,
            cp_reactor=reactor,
            cp_noisy=False,
        )

    def run(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """C{fn(connection, *args)} on the database thread, committed if it returns.

        If it raises, the transaction is rolled back and the Deferred fails.
        """
        return self._pool.runWithConnection(fn, *args)  # type: ignore[no-untyped-call,no-any-return]

    def close(self) -> None:
        """Stop the database thread (queued work is finished first)."""
        if self._pool.running:
            self._pool.close()  # type: ignore[no-untyped-call]
