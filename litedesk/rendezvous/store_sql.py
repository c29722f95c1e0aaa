# -*- test-case-name: tests.test_store -*-
"""The SQL of one write batch of the SQLite peer store (L{litedesk.rendezvous.store}).

L{apply_all} runs inside the writer thread's transaction: it inserts new
peers, updates known ones by guid and renames ids, in the order the saves
were queued, and returns the guid each one ended with.  Apart from the
store's queue and thread so that each can be read alone.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from litedesk.rendezvous.store import _Write

__all__ = ["apply_all", "as_bytes", "new_guids"]

#: Insert a peer, or update the row already holding its id (which keeps its
#: guid and uuid); either way the row's guid comes back.
_UPSERT_MANY = (
    "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET pk = excluded.pk, info = excluded.info"
)
_UPSERT = _UPSERT_MANY + " RETURNING guid"
#: Ids per C{SELECT ... WHERE id IN (...)} (SQLite allows 32766 variables).
_IDS_PER_LOOKUP = 500


def new_guids(n: int) -> list[bytes]:
    """C{n} fresh guids: UUIDv7 (RFC 9562), the Unix time in ms then random bits.

    hbbs uses random (v4) guids; any unique 16 bytes do for the C{peer}
    table, whose primary key the guid is.  Time-ordered ones go in at the
    right-hand edge of the table's B-tree and of the C{user} and C{status}
    indexes (whose entries end with the guid), so a batch of new peers
    dirties a few pages instead of one per row in each: the pages a commit
    writes to the WAL, and a checkpoint copies back, fall from several per
    row to about one per batch.  74 random bits per guid (the CSPRNG, in
    one read for the whole batch) keep guids unguessable and unique.
    """
    ms = (time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF
    head = ms << 80 | 0x7 << 76  # 48-bit time, version 7
    noise = os.urandom(10 * n)
    guids = []
    for k in range(0, 10 * n, 10):
        r = int.from_bytes(noise[k : k + 10], "big")
        # 12 bits of rand_a, the variant (0b10), 62 bits of rand_b.
        value = head | (r >> 68) << 64 | 0x2 << 62 | (r & 0x3FFF_FFFF_FFFF_FFFF)
        guids.append(value.to_bytes(16, "big"))
    return guids


def as_bytes(value: object) -> bytes:
    """A BLOB column's value as bytes (text as UTF-8, anything else empty)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return b""


def apply_all(conn: sqlite3.Connection, writes: list[_Write]) -> list[bytes]:
    """Apply C{writes} in order inside the current transaction; their guids.

    Runs of new peers (no guid yet, no rename), nearly all of a wave of
    registrations, go in one C{executemany} and one lookup of their
    guids: this thread then holds the GIL for a few microseconds per row
    instead of a statement's worth, and the reactor thread, on the same
    core, answers the next datagrams meanwhile.
    """
    guids: list[bytes] = []
    run: list[_Write] = []
    for w in writes:
        if w.guid is None and not w.renamed_from:
            run.append(w)
            continue
        if run:
            guids += _insert_new(conn, run)
            run = []
        guids.append(_apply(conn, w))
    if run:
        guids += _insert_new(conn, run)
    return guids


def _insert_new(conn: sqlite3.Connection, writes: list[_Write]) -> list[bytes]:
    """Never-saved peers: the upsert of L{_apply}, then the guid each id ended with."""
    conn.executemany(
        _UPSERT_MANY,
        [
            (guid, w.id, w.uuid, w.pk, w.info)
            for guid, w in zip(new_guids(len(writes)), writes, strict=True)
        ],
    )
    # The fresh guid, or that of the row which already held the id (and
    # for an id twice in the run, the first one's: the second updated it).
    ids = list({w.id: None for w in writes})
    stored: dict[object, object] = {}
    for lo in range(0, len(ids), _IDS_PER_LOOKUP):
        part = ids[lo : lo + _IDS_PER_LOOKUP]
        marks = ",".join("?" * len(part))
        stored.update(
            conn.execute(f"SELECT id, guid FROM peer WHERE id IN ({marks})", part).fetchall()
        )
    # A missing id (a trigger deleted it?) raises KeyError: the batch is
    # then retried write by write (L{apply_all} of one).
    return [as_bytes(stored[w.id]) for w in writes]


def _apply(conn: sqlite3.Connection, w: _Write) -> bytes:
    """Write one record inside the current transaction; returns its guid."""
    if w.renamed_from:
        # An ID change: the row under the old id takes the new one (by id,
        # not guid: the peer's first save may still be queued ahead of this
        # one, without a guid yet).  A row already holding the new id
        # fails the UNIQUE index, and with it this save.
        row = conn.execute("SELECT guid FROM peer WHERE id = ?", (w.renamed_from,)).fetchone()
        if row is not None:
            conn.execute(
                "UPDATE peer SET id = ?, pk = ?, info = ? WHERE guid = ?",
                (w.id, w.pk, w.info, row[0]),
            )
            return as_bytes(row[0])
        # Not stored under the old id (its first save failed, or an
        # operator removed the row): stored under the new id as any save.
    if w.guid is not None:
        cur = conn.execute(
            "UPDATE peer SET id = ?, pk = ?, info = ? WHERE guid = ?",
            (w.id, w.pk, w.info, w.guid),
        )
        if cur.rowcount > 0:
            return w.guid
        # The row is gone (deleted by an operator while we ran): write it
        # again under the same guid, as an insert below.
        guid = w.guid
    else:
        (guid,) = new_guids(1)
    # id is UNIQUE.  A new record can meet an existing row with its id when
    # two saves of a never-saved peer are queued before the first one has
    # returned its guid (two quick RegisterPk), or when the row was added
    # behind the server's back.  Failing would lose the registration, so,
    # like hbbs (which finds a known id's guid and updates by it), update
    # that row: it keeps its guid and uuid, and that guid is returned.
    # One statement (an upsert, SQLite 3.35+) where a lookup and a write
    # took two: the new peers of a restart's wave are most of the writes.
    # fetchall: the statement runs to its end, never left open at COMMIT.
    ((stored,),) = conn.execute(_UPSERT, (guid, w.id, w.uuid, w.pk, w.info)).fetchall()
    return as_bytes(stored)
