# -*- test-case-name: tests.test_api_personal_ab -*-
"""Each user's personal address book in the ops database: peers and tags.

The RustDesk apps (C{flutter/lib/models/ab_model.dart}, class C{Ab}) edit a
personal book one change at a time: add a peer, update some of its fields,
delete peers; add, rename, recolour and delete tags.  A peer is kept as the
JSON object the app sent (only the fields the app's C{Peer.fromJson} reads,
each bounded), keyed by (user, id); a tag as (user, name, colour).  Renaming
or deleting a tag also changes the peers that carry it, as the app expects.

Bounds: L{MAX_PEERS} peers and L{MAX_TAGS} tags per user (the app is told
the first as C{max_peer_one_ab} and stops adding there).

The first time a user's app asks for its personal book, the user's legacy
book (C{ops_ab}, what older servers and LiteDesk before this kept) is
copied into it, once: the app switches to the personal book as soon as the
server offers one, and would otherwise show an empty book.

Functions take a C{sqlite3.Connection}; they raise L{AbError} with a
sentence for the app, and do not commit.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from litedesk.api import store

__all__ = [
    "AB_TABLES",
    "MAX_PEERS",
    "MAX_TAGS",
    "AbError",
    "add_peer",
    "add_tag",
    "check_peer",
    "delete_peers",
    "delete_tags",
    "list_peers",
    "list_tags",
    "open_personal",
    "rename_tag",
    "set_tag_color",
    "update_peer",
]

MAX_PEERS = 1000
MAX_TAGS = 200
MAX_TAG = 64
_MAX_TEXT = 1024
#: The fields of C{Peer.fromJson} (C{flutter/lib/models/peer_model.dart}).
PEER_TEXT_FIELDS = frozenset(
    {
        "hash",
        "password",
        "username",
        "hostname",
        "platform",
        "alias",
        "forceAlwaysRelay",
        "rdpPort",
        "rdpUsername",
        "loginName",
        "device_group_name",
        "note",
    }
)

AB_TABLES: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS ops_ab_personal ("
    "user TEXT PRIMARY KEY NOT NULL COLLATE NOCASE, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ops_ab_peer ("
    "user TEXT NOT NULL COLLATE NOCASE, id TEXT NOT NULL, data TEXT NOT NULL, "
    "PRIMARY KEY (user, id))",
    "CREATE TABLE IF NOT EXISTS ops_ab_tag ("
    "user TEXT NOT NULL COLLATE NOCASE, name TEXT NOT NULL, color INTEGER NOT NULL, "
    "PRIMARY KEY (user, name))",
)


class AbError(Exception):
    """A change the book refuses; the text is shown by the app."""


def check_peer(value: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """The fields of a peer the app sent, checked and bounded; unknown ones dropped.

    @param partial: an update (only C{id} is required) rather than a new peer.
    """
    peer_id = value.get("id")
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= 64:
        raise AbError("a peer needs an id of 1 to 64 characters")
    out: dict[str, Any] = {"id": peer_id}
    for key, item in value.items():
        if key in PEER_TEXT_FIELDS:
            if not isinstance(item, str) or len(item) > _MAX_TEXT:
                raise AbError(f"{key} must be text of at most {_MAX_TEXT} characters")
            out[key] = item
        elif key == "same_server":
            if item is not None and not isinstance(item, bool):
                raise AbError("same_server must be true or false")
            out[key] = item
        elif key == "tags":
            out[key] = _tag_list(item)
    if not partial:
        out.setdefault("tags", [])
    return out


def _tag_list(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise AbError(f"tags must be a list of at most {MAX_TAGS} names")
    for tag in value:
        if not isinstance(tag, str) or not 0 < len(tag) <= MAX_TAG:
            raise AbError(f"a tag is a name of 1 to {MAX_TAG} characters")
    return list(dict.fromkeys(value))


# -- the book ------------------------------------------------------------------------


def open_personal(conn: sqlite3.Connection, user: str, now: float) -> None:
    """Make sure C{user} has a personal book; the first time, copy the legacy book in."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO ops_ab_personal (user, created_at) VALUES (?, ?)", (user, now)
    )
    if cur.rowcount == 0:
        return
    legacy = store.get_ab(conn, user)
    if legacy is None:
        return
    try:
        book = json.loads(legacy)
    except ValueError:
        return
    _copy_legacy(conn, user, book if isinstance(book, dict) else {})


def _copy_legacy(conn: sqlite3.Connection, user: str, book: dict[str, Any]) -> None:
    colors: dict[str, Any] = {}
    try:
        colors = json.loads(book.get("tag_colors") or "{}")
    except (TypeError, ValueError):
        colors = {}
    for tag in (book.get("tags") or [])[:MAX_TAGS]:
        color = colors.get(tag) if isinstance(colors, dict) else None
        if isinstance(tag, str) and 0 < len(tag) <= MAX_TAG:
            add_tag(conn, user, tag, color if isinstance(color, int) else 0)
    for item in (book.get("peers") or [])[:MAX_PEERS]:
        try:
            add_peer(conn, user, check_peer(item, partial=False))
        except (AbError, AttributeError, TypeError):
            continue


def list_peers(
    conn: sqlite3.Connection, user: str, offset: int, limit: int
) -> tuple[int, list[dict[str, Any]]]:
    """How many peers C{user}'s book holds, and C{limit} of them from C{offset}, by id."""
    total = conn.execute("SELECT COUNT(*) FROM ops_ab_peer WHERE user = ?", (user,)).fetchone()[0]
    rows = conn.execute(
        "SELECT data FROM ops_ab_peer WHERE user = ? ORDER BY id LIMIT ? OFFSET ?",
        (user, limit, offset),
    )
    return int(total), [json.loads(r[0]) for r in rows]


def add_peer(conn: sqlite3.Connection, user: str, peer: dict[str, Any]) -> None:
    count = conn.execute("SELECT COUNT(*) FROM ops_ab_peer WHERE user = ?", (user,)).fetchone()[0]
    if count >= MAX_PEERS:
        raise AbError(f"The address book holds {MAX_PEERS} peers, the most it can")
    try:
        conn.execute(
            "INSERT INTO ops_ab_peer (user, id, data) VALUES (?, ?, ?)",
            (user, peer["id"], json.dumps(peer, ensure_ascii=False)),
        )
    except sqlite3.IntegrityError:
        raise AbError(f"Peer {peer['id']} is in the address book already") from None


def update_peer(conn: sqlite3.Connection, user: str, changes: dict[str, Any]) -> None:
    row = conn.execute(
        "SELECT data FROM ops_ab_peer WHERE user = ? AND id = ?", (user, changes["id"])
    ).fetchone()
    if row is None:
        raise AbError(f"Peer {changes['id']} is not in the address book")
    peer = {**json.loads(row[0]), **changes}
    _save(conn, user, peer)


def _save(conn: sqlite3.Connection, user: str, peer: dict[str, Any]) -> None:
    conn.execute(
        "UPDATE ops_ab_peer SET data = ? WHERE user = ? AND id = ?",
        (json.dumps(peer, ensure_ascii=False), user, peer["id"]),
    )


def delete_peers(conn: sqlite3.Connection, user: str, ids: list[str]) -> None:
    conn.executemany("DELETE FROM ops_ab_peer WHERE user = ? AND id = ?", [(user, i) for i in ids])


# -- tags ------------------------------------------------------------------------------


def list_tags(conn: sqlite3.Connection, user: str) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT name, color FROM ops_ab_tag WHERE user = ? ORDER BY rowid", (user,))
    return [{"name": name, "color": color} for name, color in rows]


def add_tag(conn: sqlite3.Connection, user: str, name: str, color: int) -> None:
    count = conn.execute("SELECT COUNT(*) FROM ops_ab_tag WHERE user = ?", (user,)).fetchone()[0]
    if count >= MAX_TAGS:
        raise AbError(f"The address book holds {MAX_TAGS} tags, the most it can")
    conn.execute(
        "INSERT OR IGNORE INTO ops_ab_tag (user, name, color) VALUES (?, ?, ?)",
        (user, name, color),
    )


def set_tag_color(conn: sqlite3.Connection, user: str, name: str, color: int) -> None:
    cur = conn.execute(
        "UPDATE ops_ab_tag SET color = ? WHERE user = ? AND name = ?", (color, user, name)
    )
    if cur.rowcount == 0:
        raise AbError(f"There is no tag {name}")


def _retag(conn: sqlite3.Connection, user: str, change: dict[str, str | None]) -> None:
    """Rename (to a name) or drop (to C{None}) tags on every peer carrying them."""
    rows = conn.execute("SELECT data FROM ops_ab_peer WHERE user = ?", (user,)).fetchall()
    for (data,) in rows:
        peer = json.loads(data)
        tags = peer.get("tags") or []
        if not any(t in change for t in tags):
            continue
        renamed = [change.get(t, t) for t in tags]  # None: the tag goes
        peer["tags"] = list(dict.fromkeys(t for t in renamed if t is not None))
        _save(conn, user, peer)


def rename_tag(conn: sqlite3.Connection, user: str, old: str, new: str) -> None:
    try:
        cur = conn.execute(
            "UPDATE ops_ab_tag SET name = ? WHERE user = ? AND name = ?", (new, user, old)
        )
    except sqlite3.IntegrityError:
        raise AbError(f"Tag {new} already exists") from None
    if cur.rowcount == 0:
        raise AbError(f"There is no tag {old}")
    _retag(conn, user, {old: new})


def delete_tags(conn: sqlite3.Connection, user: str, names: list[str]) -> None:
    conn.executemany(
        "DELETE FROM ops_ab_tag WHERE user = ? AND name = ?", [(user, n) for n in names]
    )
    _retag(conn, user, dict.fromkeys(names))
