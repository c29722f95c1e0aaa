# -*- test-case-name: tests.test_pg_migrate -*-
"""Copying the SQLite peer table (hbbs' C{db_v2.sqlite3}) into PostgreSQL.

C{litedesk-admin --data-dir DIR migrate --to postgresql://...} runs
L{migrate}: every row of the SQLite C{peer} table, all nine of hbbs' columns,
is written to the PostgreSQL table L{litedesk.rendezvous.pg_store} uses
(created if missing), keeping its guid, so that hosts keep their ids and keys
when the server moves to C{--database}.

Re-running it is safe: a row already there under the same guid and id is
updated (or counted unchanged).  A target row that is a I{different} peer row
for a source row (the same id under another guid, or the same guid under
another id: the server on PostgreSQL has registered that id since) stops the
migration before anything is written, listing them, unless C{force} is
given; then the target's row is replaced by the source's.  Everything happens
in one transaction that holds a lock on the table, so a server running on the
same database sees the copy all at once or not at all.

Rows PostgreSQL cannot hold (an id longer than 100 characters or a note
longer than 300, which SQLite does not enforce; a NUL character in a text
column; an empty guid; an id or guid that only SQLite's typing kept apart
from an earlier row's) are skipped and named, not guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import astuple, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import psycopg

from litedesk.rendezvous.pg_schema import connect, create_schema
from litedesk.rendezvous.store import _as_bytes, _as_str

__all__ = ["MigrationConflict", "MigrationCounts", "PeerRow", "migrate", "read_sqlite"]

COLUMNS = 'guid, id, uuid, pk, created_at, "user", status, note, info'
SQLITE_COLUMNS = "guid, id, uuid, pk, created_at, user, status, note, info"

UPSERT_SQL = (
    f"INSERT INTO peer ({COLUMNS}) "
    "VALUES (%s, %s, %s, %s, COALESCE(%s, now() AT TIME ZONE 'utc'), %s, %s, %s, %s) "
    "ON CONFLICT (guid) DO UPDATE SET id = EXCLUDED.id, uuid = EXCLUDED.uuid, "
    'pk = EXCLUDED.pk, created_at = EXCLUDED.created_at, "user" = EXCLUDED."user", '
    "status = EXCLUDED.status, note = EXCLUDED.note, info = EXCLUDED.info"
)

# How many conflicts a refusal lists (the count is always given).
SHOW_CONFLICTS = 10


@dataclass(frozen=True, slots=True)
class PeerRow:
    """One row of hbbs' C{peer} table with every column, as PostgreSQL takes it."""

    guid: bytes
    id: str
    uuid: bytes
    pk: bytes
    created_at: datetime | None
    user: bytes | None
    status: int | None
    note: str | None
    info: str


@dataclass(slots=True)
class MigrationCounts:
    """What L{migrate} did: rows read, and each row's fate."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    replaced: int = 0
    skipped: int = 0

    def __str__(self) -> str:
        return (
            f"{self.read} rows read: {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged, {self.replaced} replaced, {self.skipped} skipped"
        )


class MigrationConflict(Exception):
    """The target holds other rows for some source rows; nothing was written.

    @ivar conflicts: C{(id, reason)} for each source row concerned.
    """

    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        shown = "; ".join(f"{i!r}: {why}" for i, why in conflicts[:SHOW_CONFLICTS])
        more = len(conflicts) - SHOW_CONFLICTS
        tail = f"; {more} more" if more > 0 else ""
        super().__init__(
            f"{len(conflicts)} rows differ in the target ({shown}{tail}); "
            "--force replaces them with the SQLite rows"
        )
        self.conflicts = conflicts


def _created_at(value: object) -> datetime | None:
    """SQLite's C{current_timestamp} text (UTC) as a naive UTC datetime."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _opt_int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -32768 <= value <= 32767:
        return value
    return None


def _why_unstorable(row: PeerRow) -> str:
    """Why PostgreSQL cannot hold C{row} as it is (C{""}: it can)."""
    if not row.guid:
        return "empty guid"
    if len(row.id) > 100:
        return "id longer than 100 characters"
    if row.note is not None and len(row.note) > 300:
        return "note longer than 300 characters"
    if any("\x00" in s for s in (row.id, row.note or "", row.info)):
        return "a NUL character in a text column"
    return ""


def read_sqlite(path: Path) -> list[PeerRow]:
    """Every row of the SQLite C{peer} table at C{path} (opened read-only)."""
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    # Text that is not UTF-8 (SQLite does not check) is read with U+FFFD
    # rather than failing the whole copy.
    conn.text_factory = lambda b: b.decode("utf-8", "replace")
    try:
        rows = conn.execute(f"SELECT {SQLITE_COLUMNS} FROM peer").fetchall()
    finally:
        conn.close()
    return [
        PeerRow(
            guid=_as_bytes(guid),
            id=_as_str(id_),
            uuid=_as_bytes(uuid),
            pk=_as_bytes(pk),
            created_at=_created_at(created),
            user=None if user is None else _as_bytes(user),
            status=_opt_int(status),
            note=None if note is None else _as_str(note),
            info=_as_str(info),
        )
        for guid, id_, uuid, pk, created, user, status, note, info in rows
    ]


def _read_target(cur: psycopg.Cursor[Any]) -> list[PeerRow]:
    cur.execute(f"SELECT {COLUMNS} FROM peer")
    return [
        PeerRow(
            guid=bytes(g),
            id=i,
            uuid=bytes(u),
            pk=bytes(p),
            created_at=c,
            user=None if us is None else bytes(us),
            status=s,
            note=n,
            info=inf,
        )
        for g, i, u, p, c, us, s, n, inf in cur.fetchall()
    ]


@dataclass(slots=True)
class _Plan:
    """The writes a migration makes, decided before any is made."""

    counts: MigrationCounts
    upserts: list[PeerRow]
    deletes: set[bytes]
    conflicts: list[tuple[str, str]]


def _plan(source: Iterable[PeerRow], target: list[PeerRow], out: TextIO) -> _Plan:
    by_id = {t.id: t for t in target}
    by_guid = {t.guid: t for t in target}
    plan = _Plan(MigrationCounts(), [], set(), [])
    seen_ids: set[str] = set()
    seen_guids: set[bytes] = set()
    for row in source:
        plan.counts.read += 1
        why = _why_unstorable(row)
        if not why and (row.id in seen_ids or row.guid in seen_guids):
            # Distinct in SQLite, the same once read (a text and a blob guid,
            # an id with bytes that are not UTF-8): the first one is kept.
            why = "the same id or guid as an earlier row"
        seen_ids.add(row.id)
        seen_guids.add(row.guid)
        if why:
            plan.counts.skipped += 1
            print(f"skipped id {row.id[:100]!r}: {why}", file=out)
            continue
        same_id, same_guid = by_id.get(row.id), by_guid.get(row.guid)
        if row.created_at is None and (same_id or same_guid):
            # An unreadable SQLite date: keep the one the target already has.
            row = replace(row, created_at=(same_id or same_guid).created_at)  # type: ignore[union-attr]
        if same_id is None and same_guid is None:
            plan.counts.inserted += 1
        elif same_id is not None and same_id is same_guid:
            if astuple(same_id) == astuple(row):
                plan.counts.unchanged += 1
                continue
            plan.counts.updated += 1
        else:
            reason = (
                "the target has this id under another guid"
                if same_id is not None
                else f"the target has this guid under id {same_guid.id if same_guid else ''!r}"
            )
            plan.conflicts.append((row.id, reason))
            plan.deletes.update(t.guid for t in (same_id, same_guid) if t is not None)
            plan.counts.replaced += 1
        plan.upserts.append(row)
    return plan


def migrate(sqlite_path: Path, url: str, *, force: bool = False, out: TextIO) -> MigrationCounts:
    """Copy the SQLite peer table at C{sqlite_path} into the database at C{url}.

    @param out: where skipped rows are named.
    @raise MigrationConflict: without C{force}, when target rows differ
        (nothing is written).
    @raise sqlite3.Error: the SQLite file cannot be read.
    @raise psycopg.Error: PostgreSQL refused (nothing is written).
    """
    source = read_sqlite(sqlite_path)
    with connect(url) as conn:
        create_schema(conn)
        with conn.transaction(), conn.cursor() as cur:
            # Servers on this database may save meanwhile: they wait for
            # the copy, and the rows compared are the rows overwritten.
            cur.execute("LOCK TABLE peer IN SHARE ROW EXCLUSIVE MODE")
            plan = _plan(source, _read_target(cur), out)
            if plan.conflicts and not force:
                raise MigrationConflict(plan.conflicts)
            if plan.deletes:
                cur.executemany("DELETE FROM peer WHERE guid = %s", [(g,) for g in plan.deletes])
            if plan.upserts:
                cur.executemany(UPSERT_SQL, [astuple(r) for r in plan.upserts])
    return plan.counts
