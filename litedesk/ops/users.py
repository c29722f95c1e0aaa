"""Users and tokens in the ops database: the tables and the plain functions on them.

These functions take a C{sqlite3.Connection} and do one change each; the
caller commits.  C{litedesk-admin} calls them directly; the running server
calls the same ones on its database thread (L{litedesk.ops.accounts}).

Tokens are random (32 bytes, URL-safe base64) and only their SHA-256 is
stored: a copy of the database does not let anyone sign in.  A token ends
when it expires, when its user signs out, is disabled or gets a new
password, and when the user has L{MAX_TOKENS_PER_USER} newer ones (so one
account signing in in a loop cannot grow the table without bound).
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass

from litedesk.ops.passwords import hash_password

__all__ = [
    "MAX_NAME",
    "MAX_TOKENS_PER_USER",
    "SCHEMA",
    "TokenRow",
    "User",
    "UserError",
    "add_user",
    "check_name",
    "delete_user",
    "insert_token",
    "list_users",
    "load_tokens",
    "new_token",
    "revoke_token",
    "revoke_user_tokens",
    "set_admin",
    "set_disabled",
    "set_password",
    "token_hash",
]

SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS ops_user ("
    "name TEXT PRIMARY KEY NOT NULL COLLATE NOCASE, "
    "password TEXT NOT NULL, "
    "is_admin INTEGER NOT NULL DEFAULT 0, "
    "disabled INTEGER NOT NULL DEFAULT 0, "
    "email TEXT NOT NULL DEFAULT '', "
    "note TEXT NOT NULL DEFAULT '', "
    "created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS ops_token ("
    "hash BLOB PRIMARY KEY NOT NULL, "
    "user TEXT NOT NULL COLLATE NOCASE, "
    "kind TEXT NOT NULL, "
    "created_at REAL NOT NULL, "
    "expires_at REAL NOT NULL, "
    "ip TEXT NOT NULL DEFAULT '', "
    "device_id TEXT NOT NULL DEFAULT '', "
    "device_uuid TEXT NOT NULL DEFAULT '', "
    "device_info TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX IF NOT EXISTS ops_token_user ON ops_token (user)",
)

MAX_NAME = 64
MAX_TOKENS_PER_USER = 64
_MAX_FIELD = 200


class UserError(Exception):
    """A user change that cannot be made; the text says why, for a person."""


@dataclass(frozen=True, slots=True)
class User:
    """One account.  C{password} is the stored hash (L{litedesk.ops.passwords})."""

    name: str
    password: str
    is_admin: bool
    disabled: bool
    email: str
    note: str
    created_at: float


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A live token as the server keeps it (the hash is its key)."""

    user: str
    kind: str
    created_at: float
    expires_at: float
    device_id: str


def check_name(name: str) -> str:
    """C{name} if it can be a user name, else L{UserError}."""
    if not name or len(name) > MAX_NAME or name != name.strip():
        raise UserError(f"a user name has 1 to {MAX_NAME} characters and no outer spaces")
    if not name.isprintable() or any(c in name for c in "/\\"):
        raise UserError("a user name has printable characters only, and no slashes")
    return name


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _user(row: tuple[object, ...]) -> User:
    name, password, is_admin, disabled, email, note, created = row
    return User(
        str(name),
        str(password),
        bool(is_admin),
        bool(disabled),
        str(email),
        str(note),
        float(created),  # type: ignore[arg-type]
    )


def list_users(conn: sqlite3.Connection) -> list[User]:
    rows = conn.execute(
        "SELECT name, password, is_admin, disabled, email, note, created_at "
        "FROM ops_user ORDER BY name"
    )
    return [_user(r) for r in rows]


def add_user(
    conn: sqlite3.Connection, name: str, password: str, *, admin: bool = False, now: float = 0.0
) -> None:
    """Add a user; L{UserError} if the name is taken or not allowed."""
    check_name(name)
    _check_password(password)
    try:
        conn.execute(
            "INSERT INTO ops_user (name, password, is_admin, created_at) VALUES (?, ?, ?, ?)",
            (name, hash_password(password), int(admin), now or time.time()),
        )
    except sqlite3.IntegrityError:
        raise UserError(f"user {name!r} exists") from None


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise UserError("a password has at least 8 characters")
    if len(password) > 1024:
        raise UserError("a password has at most 1024 characters")


def _update_user(conn: sqlite3.Connection, name: str, sql: str, *args: object) -> None:
    cur = conn.execute(f"UPDATE ops_user SET {sql} WHERE name = ?", (*args, name))
    if cur.rowcount == 0:
        raise UserError(f"no user {name!r}")


def set_password(conn: sqlite3.Connection, name: str, password: str) -> None:
    """A new password; the user's tokens end (every device signs in again)."""
    _check_password(password)
    _update_user(conn, name, "password = ?", hash_password(password))
    revoke_user_tokens(conn, name)


def set_disabled(conn: sqlite3.Connection, name: str, disabled: bool) -> None:
    """Disable (its tokens end at once) or enable a user."""
    _update_user(conn, name, "disabled = ?", int(disabled))
    if disabled:
        revoke_user_tokens(conn, name)


def set_admin(conn: sqlite3.Connection, name: str, admin: bool) -> None:
    _update_user(conn, name, "is_admin = ?", int(admin))


def delete_user(conn: sqlite3.Connection, name: str) -> None:
    revoke_user_tokens(conn, name)
    cur = conn.execute("DELETE FROM ops_user WHERE name = ?", (name,))
    if cur.rowcount == 0:
        raise UserError(f"no user {name!r}")


def insert_token(
    conn: sqlite3.Connection,
    token: str,
    user: str,
    kind: str,
    *,
    now: float,
    lifetime: float,
    ip: str = "",
    device_id: str = "",
    device_uuid: str = "",
    device_info: str = "",
) -> TokenRow:
    """Store C{token}'s hash for C{user}; the user's oldest tokens beyond the cap end."""
    conn.execute(
        "INSERT INTO ops_token (hash, user, kind, created_at, expires_at, ip, device_id, "
        "device_uuid, device_info) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token_hash(token),
            user,
            kind,
            now,
            now + lifetime,
            ip[:_MAX_FIELD],
            device_id[:_MAX_FIELD],
            device_uuid[:_MAX_FIELD],
            device_info[: _MAX_FIELD * 5],
        ),
    )
    conn.execute(
        "DELETE FROM ops_token WHERE user = ? AND hash NOT IN (SELECT hash FROM ops_token "
        "WHERE user = ? ORDER BY created_at DESC LIMIT ?)",
        (user, user, MAX_TOKENS_PER_USER),
    )
    return TokenRow(user, kind, now, now + lifetime, device_id[:_MAX_FIELD])


def revoke_token(conn: sqlite3.Connection, token: str) -> None:
    conn.execute("DELETE FROM ops_token WHERE hash = ?", (token_hash(token),))


def revoke_user_tokens(conn: sqlite3.Connection, name: str) -> int:
    """End every token of C{name}; how many there were."""
    return conn.execute("DELETE FROM ops_token WHERE user = ?", (name,)).rowcount


def load_tokens(conn: sqlite3.Connection, now: float) -> dict[bytes, TokenRow]:
    """Every unexpired token (expired ones are deleted on the way)."""
    conn.execute("DELETE FROM ops_token WHERE expires_at <= ?", (now,))
    rows = conn.execute(
        "SELECT hash, user, kind, created_at, expires_at, device_id FROM ops_token"
    ).fetchall()
    return {bytes(h): TokenRow(u, k, c, e, d) for h, u, k, c, e, d in rows}
