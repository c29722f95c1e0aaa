# -*- test-case-name: tests.test_ops_accounts -*-
"""The running server's view of users and tokens: sign-in, token checks, changes.

Token checks happen on hot paths (every API call, every console page, and
with C{--require-login} every punch and relay request), so they must not
wait for the database: L{Accounts} keeps every user and every live token in
memory and answers L{Accounts.user_for_token} from there.  Changes the
server makes itself (a sign-in, a sign-out, a console edit) update the copy
once the database has committed them.  Changes made by C{litedesk-admin} in
another process are noticed within L{REFRESH_SECONDS}: the server compares
SQLite's C{data_version} (which moves only when another connection
commits) and reloads when it moved.

Password checks cost tens of milliseconds of CPU and 32 MiB each
(L{litedesk.ops.passwords}); they run on the reactor's thread pool, at most
L{HASH_CONCURRENCY} at once, so a burst of sign-ins can neither block the
reactor nor make the process hold unbounded memory.  Callers rate-limit
sign-ins per source address on top (L{SignInGuard}).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from litedesk.ops import users as u
from litedesk.ops.opsdb import OpsDatabase
from litedesk.ops.passwords import verify_password
from litedesk.rendezvous.floodguard import FloodGuard

__all__ = [
    "HASH_CONCURRENCY",
    "REFRESH_SECONDS",
    "Accounts",
    "SignIn",
    "SignInGuard",
]

REFRESH_SECONDS = 2.0
HASH_CONCURRENCY = 2
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of L{Accounts.sign_in}.

    @ivar outcome: C{ok}, C{bad_password}, C{unknown_user} or C{disabled}
        (the metric and event-log label; a client is told only "wrong user
        name or password" or "account disabled").
    """

    outcome: str
    user: u.User | None = None
    token: str | None = None


class SignInGuard:
    """Sign-in attempts per source address: 5 at once, then one every 6 s.

    A separate bucket per address, in a L{FloodGuard} (bounded, pruned).
    """

    def __init__(self, rate: float = 10 / 60, burst: float = 5.0) -> None:
        self._guard = FloodGuard(rate, burst)

    def allow(self, ip: str, now: float) -> bool:
        return self._guard.allow(ip, now)


class Accounts(Service):
    """Users and live tokens of one server, kept in step with the ops database.

    @param db: the ops database (its schema includes L{users.SCHEMA}).
    @param clock: the reactor: time, and the thread pool for password hashes.
    @param token_lifetime: seconds a new token stays valid.
    """

    _log = Logger()

    def __init__(self, db: OpsDatabase, clock: Any, *, token_lifetime: float) -> None:
        self._db = db
        self._clock = clock
        self.token_lifetime = token_lifetime
        self._users: dict[str, u.User] = {}
        self._tokens: dict[bytes, u.TokenRow] = {}
        self._data_version = -1
        self._hashing = DeferredSemaphore(HASH_CONCURRENCY)
        self._loop: LoopingCall | None = None
        self.loaded: Deferred[None] = Deferred()

    # -- service -------------------------------------------------------------

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(REFRESH_SECONDS, now=True).addErrback(
            lambda f: self._log.failure("Account refresh stopped", f)
        )

    def stopService(self) -> Deferred[None] | None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()  # type: ignore[no-untyped-call,no-any-return]

    def refresh(self) -> Deferred[None]:
        """Reload users and tokens if another process changed the database."""

        def check(conn: sqlite3.Connection) -> tuple[int, Any] | None:
            version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if version == self._data_version:
                return None
            now = self._clock.seconds()
            return version, (u.list_users(conn), u.load_tokens(conn, now))

        def apply(result: tuple[int, Any] | None) -> None:
            if result is not None:
                self._data_version, (users, tokens) = result
                self._users = {x.name.casefold(): x for x in users}
                self._tokens = tokens
            if not self.loaded.called:
                self.loaded.callback(None)

        def failed(f: Any) -> None:
            self._log.failure("Could not read users and tokens", f)

        return self._db.run(check).addCallback(apply).addErrback(failed)

    # -- reads (synchronous, from memory) -------------------------------------

    def users(self) -> list[u.User]:
        return sorted(self._users.values(), key=lambda x: x.name.casefold())

    def get(self, name: str) -> u.User | None:
        return self._users.get(name.casefold())

    def user_for_token(self, token: str, kind: str | None = None) -> u.User | None:
        """The enabled user C{token} belongs to, if it is live; else C{None}.

        @param kind: accept only tokens issued for this way in (the console
            takes no token a RustDesk app holds, and the reverse).
        """
        if not token or len(token) > 200:
            return None
        row = self._tokens.get(u.token_hash(token))
        if row is None or row.expires_at <= self._clock.seconds():
            return None
        if kind is not None and row.kind != kind:
            return None
        user = self._users.get(row.user.casefold())
        if user is None or user.disabled:
            return None
        return user

    def token_count(self) -> int:
        return len(self._tokens)

    # -- changes (database first, then memory) --------------------------------

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """Run a change, then reload from the database (on the same thread)."""

        def change(conn: sqlite3.Connection) -> tuple[T, list[u.User], dict[bytes, u.TokenRow]]:
            result = fn(conn, *args, **kwargs)
            conn.commit()
            now = self._clock.seconds()
            return result, u.list_users(conn), u.load_tokens(conn, now)

        def apply(out: tuple[T, list[u.User], dict[bytes, u.TokenRow]]) -> T:
            result, users, tokens = out
            self._users = {x.name.casefold(): x for x in users}
            self._tokens = tokens
            return result

        return self._db.run(change).addCallback(apply)

    def sign_in(
        self, name: str, password: str, *, kind: str, ip: str, **device: str
    ) -> Deferred[SignIn]:
        """Check a password (off the reactor) and, when right, issue a token.

        @param kind: C{api} (a RustDesk app) or C{console}.
        @param device: C{device_id}, C{device_uuid}, C{device_info} to keep
            with an API token.
        """
        user = self.get(name) if len(name) <= u.MAX_NAME else None
        stored = user.password if user is not None else None
        pool = self._clock.getThreadPool()
        check = self._hashing.run(
            deferToThreadPool, self._clock, pool, verify_password, password[:1024], stored
        )

        def checked(ok: bool) -> SignIn | Deferred[SignIn]:
            if user is None:
                return SignIn("unknown_user")
            if not ok:
                return SignIn("bad_password", user)
            if user.disabled:
                return SignIn("disabled", user)
            token = u.new_token()
            d = self._write(
                u.insert_token,
                token,
                user.name,
                kind,
                now=self._clock.seconds(),
                lifetime=self.token_lifetime,
                ip=ip,
                **device,
            )
            return d.addCallback(lambda _: SignIn("ok", user, token))

        return check.addCallback(checked)

    def sign_out(self, token: str) -> Deferred[None]:
        return self._write(u.revoke_token, token)

    def add_user(self, name: str, password: str, *, admin: bool = False) -> Deferred[None]:
        """Add a user (the hash is computed on the database thread)."""
        return self._write(u.add_user, name, password, admin=admin, now=self._clock.seconds())

    def set_password(self, name: str, password: str) -> Deferred[None]:
        return self._write(u.set_password, name, password)

    def set_disabled(self, name: str, disabled: bool) -> Deferred[None]:
        return self._write(u.set_disabled, name, disabled)

    def set_admin(self, name: str, admin: bool) -> Deferred[None]:
        return self._write(u.set_admin, name, admin)

    def delete_user(self, name: str) -> Deferred[None]:
        return self._write(u.delete_user, name)

    def revoke_user_tokens(self, name: str) -> Deferred[int]:
        return self._write(u.revoke_user_tokens, name)
