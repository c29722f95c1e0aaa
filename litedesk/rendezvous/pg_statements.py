# -*- test-case-name: tests.test_pg_store -*-
"""The statements that write a batch of peer saves to PostgreSQL, in order.

L{write_all} runs inside the writer's transaction (L{litedesk.rendezvous.pg_store}).
A registration wave is nearly all never-saved peers: a run of those (with
distinct ids) is written by one C{INSERT ... SELECT FROM unnest(...)} whose
arrays are passed as array literals built with C{str.join} (psycopg's
pure-Python implementation costs ~70 us per row for a pipelined statement per
save, this ~15 us; bench/pg_store.py).  Any other save (an update by guid, an
ID change) is one statement each, sent pipelined in one C{executemany}.
Either way each save's guid comes back in the order of C{writes}, and the
outcome is what the SQLite store's step-by-step writes give
(L{litedesk.rendezvous.store}; tests/test_pg_store.py checks them against
each other).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import psycopg

from litedesk.rendezvous.sinks import IdTaken
from litedesk.rendezvous.store import _as_bytes, _Write
from litedesk.rendezvous.store_sql import new_guids

__all__ = ["INSERT_NEW_SQL", "SAVE_SQL", "STRICT_INSERT_NEW_SQL", "STRICT_SAVE_SQL", "write_all"]

# One statement per save, so that a whole batch is one pipelined executemany.
# It does what PeerStore._apply does in steps, in this order:
#   ren: an ID change: the row under the old id takes the new one;
#   upd: otherwise the row with the save's guid is updated (id included);
#   ins: otherwise a new row under that guid (a fresh one for a never-saved
#        record), or, when the id is already stored (two quick RegisterPk of a
#        new peer, a row from before), that row is updated and keeps its
#        guid and uuid, as hbbs does.  In a cluster (the STRICT_ variants) a
#        row of another device (uuid) is left alone and nothing is returned:
#        IdTaken (a node that had not heard of the row yet, docs/cluster.rst).
# Each later step runs only if the earlier ones touched nothing, so no row is
# modified twice in the statement.  The guid of the row written is returned.
SAVE_SQL = """
WITH ren AS (
    UPDATE peer SET id = %(id)s, pk = %(pk)s, info = %(info)s
    WHERE %(old)s::varchar <> '' AND id = %(old)s::varchar
    RETURNING guid
), upd AS (
    UPDATE peer SET id = %(id)s, pk = %(pk)s, info = %(info)s
    WHERE guid = %(guid)s AND NOT EXISTS (SELECT 1 FROM ren)
    RETURNING guid
), ins AS (
    INSERT INTO peer (guid, id, uuid, pk, info)
    SELECT %(guid)s, %(id)s::varchar, %(uuid)s, %(pk)s, %(info)s::text
    WHERE NOT EXISTS (SELECT 1 FROM ren) AND NOT EXISTS (SELECT 1 FROM upd)
    ON CONFLICT (id) DO UPDATE SET pk = EXCLUDED.pk, info = EXCLUDED.info
    RETURNING guid
)
SELECT guid FROM ren UNION ALL SELECT guid FROM upd UNION ALL SELECT guid FROM ins
"""


# A run of never-saved peers: new rows, or, for an id already stored (two
# quick RegisterPk of a new peer, a row from before), that row updated,
# keeping its guid and uuid.
INSERT_NEW_SQL = (
    "INSERT INTO peer (guid, id, uuid, pk, info) SELECT * FROM unnest("
    "%s::bytea[], %s::varchar[], %s::bytea[], %s::bytea[], %s::text[]) "
    "ON CONFLICT (id) DO UPDATE SET pk = EXCLUDED.pk, info = EXCLUDED.info "
    "RETURNING id, guid"
)

# With --cluster (strict): a row of another device is left alone, so that the
# first node to commit an id keeps it.
_SAME_DEVICE = "WHERE peer.uuid = EXCLUDED.uuid "
STRICT_SAVE_SQL = SAVE_SQL.replace(
    "info = EXCLUDED.info\n    RETURNING", "info = EXCLUDED.info\n    " + _SAME_DEVICE + "RETURNING"
)
STRICT_INSERT_NEW_SQL = INSERT_NEW_SQL.replace("RETURNING", _SAME_DEVICE + "RETURNING")


def _bytea_array(values: Iterable[bytes]) -> str:
    return "{" + ",".join('"\\\\x' + v.hex() + '"' for v in values) + "}"


def _text_array(values: Iterable[str]) -> str:
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


def _runs(writes: list[_Write]) -> Iterator[tuple[bool, list[_Write]]]:
    """C{writes} cut, in order, into runs: (True, never-saved peers with
    distinct ids) and (False, anything else)."""
    run: list[_Write] = []
    ids: set[str] = set()
    fast = False
    for w in writes:
        new = w.guid is None and not w.renamed_from
        if run and (new != fast or (new and w.id in ids)):
            yield fast, run
            run, ids = [], set()
        fast = new
        run.append(w)
        ids.add(w.id)
    if run:
        yield fast, run


def _insert_new(cur: psycopg.Cursor[Any], run: list[_Write], strict: bool) -> list[bytes]:
    cur.execute(
        STRICT_INSERT_NEW_SQL if strict else INSERT_NEW_SQL,
        (
            _bytea_array(new_guids(len(run))),
            _text_array(w.id for w in run),
            _bytea_array(w.uuid for w in run),
            _bytea_array(w.pk for w in run),
            _text_array(w.info for w in run),
        ),
    )
    written = {str(i): _as_bytes(g) for i, g in cur.fetchall()}
    try:
        return [written[w.id] for w in run]
    except KeyError as e:
        raise IdTaken(f"id {e.args[0]} is bound to another device") from None


def _save_each(cur: psycopg.Cursor[Any], run: list[_Write], strict: bool) -> list[bytes]:
    params = [
        {
            "old": w.renamed_from,
            "guid": w.guid if w.guid is not None else new_guids(1)[0],
            "id": w.id,
            "uuid": w.uuid,
            "pk": w.pk,
            "info": w.info,
        }
        for w in run
    ]
    guids: list[bytes] = []
    cur.executemany(STRICT_SAVE_SQL if strict else SAVE_SQL, params, returning=True)
    while True:
        row = cur.fetchone()
        if row is None:
            raise IdTaken(f"id {run[len(guids)].id} is bound to another device")
        guids.append(_as_bytes(row[0]))
        if not cur.nextset():
            break
    return guids


def write_all(cur: psycopg.Cursor[Any], writes: list[_Write], strict: bool = False) -> list[bytes]:
    """Write C{writes} in order in the current transaction; their guids.

    @param strict: never write over another device's row (C{--cluster}).
    @raise IdTaken: C{strict}, and a write's id is another device's.
    """
    guids: list[bytes] = []
    for fast, run in _runs(writes):
        guids.extend(_insert_new(cur, run, strict) if fast else _save_each(cur, run, strict))
    return guids
