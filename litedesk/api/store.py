# -*- test-case-name: tests.test_api_devices -*-
"""The API's tables in the ops database, and the plain functions on them.

Three kinds of rows, all written by the API and read by the console:

  - C{ops_sysinfo}: one row per device id, what its last C{/api/sysinfo}
    said (host name, user, OS, version, CPU, memory, and the whole report).
    Only devices whose uuid matches their registration get a row, so the
    table is as bounded as the peer table.
  - C{ops_ab}: each user's legacy address book (the app's whole book as one
    JSON string, at most L{litedesk.api.body.MAX_AB_BODY}).
  - C{ops_audit}: connection, file and alarm records the hosts post.  A
    connection's three posts (C{new}, then peer and type once authorised,
    then C{close}) are merged into one row keyed by (device id, conn_id).
    Each post carries a random C{nonce} and the app retries a post for up
    to two minutes (C{src/server/connection.rs}), so nonces are kept in
    C{ops_audit_nonce} (unique) for L{NONCE_KEEP_SECONDS} (an hour; the app
    stops retrying after two minutes) and a repeat is acknowledged without a
    second row.

Growth: the audit table keeps the newest L{MAX_AUDIT_ROWS} rows and the
nonce table the newest C{4 * MAX_AUDIT_ROWS} nonces younger than
L{NONCE_KEEP_SECONDS}; both are pruned every L{PRUNE_EVERY} inserts, in the
same transaction, so the file cannot grow without bound however much a
host posts.

Functions take a C{sqlite3.Connection} and do not commit (L{OpsDatabase.run}
commits when they return).
"""

from __future__ import annotations

import sqlite3
import uuid as uuidlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "API_TABLES",
    "AUDIT_KINDS",
    "MAX_AUDIT_ROWS",
    "NONCE_KEEP_SECONDS",
    "SYSINFO_FIELDS",
    "AuditRecord",
    "SysInfo",
    "active_connections",
    "get_ab",
    "put_ab",
    "recent_audit",
    "record_audit",
    "set_audit_note",
    "store_sysinfo",
    "sysinfo_for",
]

MAX_AUDIT_ROWS = 1_000_000
NONCE_KEEP_SECONDS = 3600.0
PRUNE_EVERY = 1000
AUDIT_KINDS: tuple[str, ...] = ("conn", "file", "alarm")
#: The report's fields kept in columns of their own (C{src/common.rs:get_sysinfo}).
SYSINFO_FIELDS: tuple[str, ...] = ("hostname", "username", "os", "version", "cpu", "memory")

API_TABLES: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS ops_sysinfo ("
    "id TEXT PRIMARY KEY NOT NULL, "
    "uuid TEXT NOT NULL DEFAULT '', "
    "hostname TEXT NOT NULL DEFAULT '', "
    "username TEXT NOT NULL DEFAULT '', "
    "os TEXT NOT NULL DEFAULT '', "
    "version TEXT NOT NULL DEFAULT '', "
    "cpu TEXT NOT NULL DEFAULT '', "
    "memory TEXT NOT NULL DEFAULT '', "
    "info TEXT NOT NULL DEFAULT '{}', "
    "updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ops_ab ("
    "user TEXT PRIMARY KEY NOT NULL COLLATE NOCASE, "
    "data TEXT NOT NULL, "
    "updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ops_audit ("
    "seq INTEGER PRIMARY KEY AUTOINCREMENT, "
    "guid TEXT NOT NULL UNIQUE, "
    "kind TEXT NOT NULL, "
    "device_id TEXT NOT NULL, "
    "conn_id INTEGER NOT NULL DEFAULT 0, "
    "session_id TEXT NOT NULL DEFAULT '', "
    "ip TEXT NOT NULL DEFAULT '', "
    "peer_id TEXT NOT NULL DEFAULT '', "
    "peer_name TEXT NOT NULL DEFAULT '', "
    "type INTEGER NOT NULL DEFAULT 0, "
    "path TEXT NOT NULL DEFAULT '', "
    "is_file INTEGER NOT NULL DEFAULT 0, "
    "info TEXT NOT NULL DEFAULT '', "
    "note TEXT NOT NULL DEFAULT '', "
    "created_at REAL NOT NULL, "
    "closed_at REAL)",
    "CREATE INDEX IF NOT EXISTS ops_audit_conn ON ops_audit (device_id, conn_id, kind)",
    "CREATE INDEX IF NOT EXISTS ops_audit_kind ON ops_audit (kind, seq)",
    "CREATE TABLE IF NOT EXISTS ops_audit_nonce (nonce TEXT NOT NULL, seen_at REAL NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS ops_audit_nonce_key ON ops_audit_nonce (nonce)",
    "CREATE INDEX IF NOT EXISTS ops_audit_nonce_age ON ops_audit_nonce (seen_at)",
)


@dataclass(frozen=True, slots=True)
class SysInfo:
    """What a device last reported through C{/api/sysinfo}."""

    id: str
    hostname: str
    username: str
    os: str
    version: str
    cpu: str
    memory: str
    info: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of C{ops_audit} (C{closed_at}: C{None} while a connection runs)."""

    seq: int
    guid: str
    kind: str
    device_id: str
    conn_id: int
    session_id: str
    ip: str
    peer_id: str
    peer_name: str
    type: int
    path: str
    is_file: bool
    info: str
    note: str
    created_at: float
    closed_at: float | None


# -- sysinfo -------------------------------------------------------------------


def store_sysinfo(conn: sqlite3.Connection, info: SysInfo, device_uuid: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO ops_sysinfo (id, uuid, hostname, username, os, version, cpu, "
        "memory, info, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            info.id,
            device_uuid,
            info.hostname,
            info.username,
            info.os,
            info.version,
            info.cpu,
            info.memory,
            info.info,
            info.updated_at,
        ),
    )


def sysinfo_for(conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, SysInfo]:
    """The stored reports of C{ids} (ids without one are left out)."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, SysInfo] = {}
    for start in range(0, len(wanted), 500):  # SQLite's bound-variable limit
        chunk = wanted[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT id, hostname, username, os, version, cpu, memory, info, updated_at "
            f"FROM ops_sysinfo WHERE id IN ({marks})",
            chunk,
        )
        for row in rows:
            out[row[0]] = SysInfo(*row)
    return out


# -- legacy address book ---------------------------------------------------------


def get_ab(conn: sqlite3.Connection, user: str) -> str | None:
    row = conn.execute("SELECT data FROM ops_ab WHERE user = ?", (user,)).fetchone()
    return None if row is None else str(row[0])


def put_ab(conn: sqlite3.Connection, user: str, data: str, now: float) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO ops_ab (user, data, updated_at) VALUES (?, ?, ?)",
        (user, data, now),
    )


# -- audit -------------------------------------------------------------------------


def _seen(conn: sqlite3.Connection, nonce: str, now: float) -> bool:
    """Record C{nonce}; whether it was already there (a retried post)."""
    if not nonce:
        return False
    try:
        conn.execute("INSERT INTO ops_audit_nonce (nonce, seen_at) VALUES (?, ?)", (nonce, now))
    except sqlite3.IntegrityError:
        return True
    return False


def record_audit(
    conn: sqlite3.Connection, kind: str, fields: dict[str, object], nonce: str, now: float
) -> bool:
    """Store one audit post; C{False} if its nonce was seen (nothing changes).

    C{conn} posts update the open row of the same (device id, conn_id) when
    there is one: C{action} C{new} opens a row, C{close} sets C{closed_at},
    a post with C{peer}/C{type} fills those in.
    """
    if _seen(conn, nonce, now):
        return False
    action = fields.pop("action", "")
    row = None
    if kind == "conn":
        row = conn.execute(
            "SELECT seq FROM ops_audit WHERE kind = 'conn' AND device_id = ? AND conn_id = ? "
            "AND closed_at IS NULL ORDER BY seq DESC LIMIT 1",
            (fields["device_id"], fields["conn_id"]),
        ).fetchone()
    if action == "new" or row is None:
        cols = ["guid", "kind", "created_at", *fields]
        conn.execute(
            f"INSERT INTO ops_audit ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            (str(uuidlib.uuid4()), kind, now, *fields.values()),
        )
        seq = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
    else:
        seq = int(row[0])
        updates = {k: v for k, v in fields.items() if v not in ("", 0, None)}
        if updates:
            sets = ", ".join(f"{k} = ?" for k in updates)
            conn.execute(f"UPDATE ops_audit SET {sets} WHERE seq = ?", (*updates.values(), seq))
    if action == "close":
        conn.execute("UPDATE ops_audit SET closed_at = ? WHERE seq = ?", (now, seq))
    if seq % PRUNE_EVERY == 0:
        prune_audit(conn, now)
    return True


def prune_audit(conn: sqlite3.Connection, now: float, keep: int = MAX_AUDIT_ROWS) -> None:
    """Drop all but the newest C{keep} audit rows, and nonces past their window."""
    conn.execute("DELETE FROM ops_audit WHERE seq <= (SELECT MAX(seq) FROM ops_audit) - ?", (keep,))
    conn.execute("DELETE FROM ops_audit_nonce WHERE seen_at < ?", (now - NONCE_KEEP_SECONDS,))
    conn.execute(
        "DELETE FROM ops_audit_nonce WHERE rowid <= (SELECT MAX(rowid) FROM ops_audit_nonce) - ?",
        (4 * keep,),
    )


def set_audit_note(conn: sqlite3.Connection, guid: str, note: str) -> bool:
    """Set the note of the record C{guid}; whether there is one."""
    cur = conn.execute("UPDATE ops_audit SET note = ? WHERE guid = ?", (note, guid))
    return cur.rowcount > 0


_AUDIT_COLUMNS = (
    "seq, guid, kind, device_id, conn_id, session_id, ip, peer_id, peer_name, type, path, "
    "is_file, info, note, created_at, closed_at"
)


def _record(row: tuple[object, ...]) -> AuditRecord:
    values = list(row)
    values[11] = bool(values[11])
    return AuditRecord(*values)  # type: ignore[arg-type]


def recent_audit(
    conn: sqlite3.Connection, kind: str, limit: int = 100, offset: int = 0
) -> list[AuditRecord]:
    """The newest C{kind} records first, C{limit} of them after skipping C{offset}."""
    rows = conn.execute(
        f"SELECT {_AUDIT_COLUMNS} FROM ops_audit WHERE kind = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
        (kind, max(0, limit), max(0, offset)),
    )
    return [_record(r) for r in rows]


def active_connections(conn: sqlite3.Connection, limit: int = 1000) -> list[AuditRecord]:
    """Connections the hosts reported opened and not (yet) closed, newest first."""
    rows = conn.execute(
        f"SELECT {_AUDIT_COLUMNS} FROM ops_audit WHERE kind = 'conn' AND closed_at IS NULL "
        "ORDER BY seq DESC LIMIT ?",
        (limit,),
    )
    return [_record(r) for r in rows]
