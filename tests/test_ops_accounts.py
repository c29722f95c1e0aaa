"""Users, passwords and tokens: the ops database, C{litedesk-admin}, and the server's L{Accounts}.

Real SQLite files in temp directories; C{litedesk-admin} runs as its own
process with the password on standard input, as an operator runs it; the
server side is the real L{Accounts} on its database thread under the trial
reactor.  Covers: scrypt hashes (stored form, wrong and unknown users cost a
check, garbage stored values), user rules, the admin commands and their
errors, files created 0600, sign-in outcomes, tokens (stored hashed, live,
expired, revoked by sign-out, new password, disabling, the per-user cap),
and changes made by another process being picked up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.ops import admin_cli, passwords, users
from litedesk.ops.accounts import Accounts, SignInGuard
from litedesk.ops.opsdb import OPS_DB_FILE, OpsDatabase, connect, ensure_schema

from .support.processes import litedesk_admin


class PasswordTests(SynchronousTestCase):
    def test_hash_verifies_only_its_password(self) -> None:
        stored = passwords.hash_password("correct horse")
        self.assertTrue(stored.startswith("scrypt$15$8$1$"))
        self.assertNotIn("correct horse", stored)
        self.assertTrue(passwords.verify_password("correct horse", stored))
        self.assertFalse(passwords.verify_password("correct horsE", stored))
        # Salted: the same password never hashes the same way twice.
        self.assertNotEqual(stored, passwords.hash_password("correct horse"))
        self.assertFalse(passwords.needs_rehash(stored))

    def test_unknown_user_fails(self) -> None:
        self.assertFalse(passwords.verify_password("anything", None))

    @settings(max_examples=50, deadline=None)
    @given(st.text(max_size=200))
    def test_garbage_stored_values_fail_without_raising(self, stored: str) -> None:
        self.assertFalse(passwords.verify_password("x", stored))


class UserTableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.conn = connect(Path(self.mktemp()))
        self.addCleanup(self.conn.close)
        ensure_schema(self.conn, users.SCHEMA)

    def test_names_and_passwords_checked(self) -> None:
        for bad in ("", " alice", "a" * 65, "a/b", "tab\there"):
            with self.assertRaises(users.UserError):
                users.add_user(self.conn, bad, "long enough")
        with self.assertRaises(users.UserError) as caught:
            users.add_user(self.conn, "alice", "short")
        self.assertIn("at least 8", str(caught.exception))
        users.add_user(self.conn, "alice", "long enough")
        with self.assertRaises(users.UserError) as caught:
            users.add_user(self.conn, "ALICE", "long enough")  # names are case-insensitive
        self.assertIn("exists", str(caught.exception))

    def test_tokens_stored_hashed_and_capped(self) -> None:
        users.add_user(self.conn, "alice", "long enough")
        token = users.new_token()
        users.insert_token(self.conn, token, "alice", "api", now=100.0, lifetime=10.0)
        (stored,) = self.conn.execute("SELECT hash FROM ops_token").fetchone()
        self.assertEqual(bytes(stored), hashlib.sha256(token.encode()).digest())
        self.conn.commit()
        # Committed, the row is in the WAL (or the main file after a checkpoint):
        # neither may hold the token itself.
        path = self.conn.execute("PRAGMA database_list").fetchone()[2]
        on_disk = b"".join(
            Path(path + suffix).read_bytes()
            for suffix in ("", "-wal")
            if Path(path + suffix).exists()
        )
        self.assertIn(bytes(stored), on_disk)  # the check reads where the row is
        self.assertNotIn(token.encode(), on_disk)
        for i in range(users.MAX_TOKENS_PER_USER + 10):
            users.insert_token(
                self.conn, users.new_token(), "alice", "api", now=200.0 + i, lifetime=10.0
            )
        self.assertEqual(len(users.load_tokens(self.conn, 0.0)), users.MAX_TOKENS_PER_USER)
        # Expired ones are gone at the next load.
        self.assertEqual(users.load_tokens(self.conn, 10_000.0), {})


class AdminCommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.data = Path(self.mktemp())
        self.data.mkdir()

    def test_add_list_disable_passwd_as_a_separate_process(self) -> None:
        made = litedesk_admin(self.data, "user", "add", "alice", "--admin", stdin="correct horse\n")
        self.assertEqual((made.returncode, made.stdout.strip()), (0, "added administrator alice"))
        mode = stat.S_IMODE(os.stat(self.data / OPS_DB_FILE).st_mode)
        self.assertEqual(mode, 0o600)
        listed = litedesk_admin(self.data, "user", "list")
        self.assertRegex(listed.stdout, r"alice\s+yes\s+enabled\s+0")
        self.assertEqual(litedesk_admin(self.data, "user", "disable", "alice").returncode, 0)
        self.assertRegex(
            litedesk_admin(self.data, "user", "list").stdout, r"alice\s+yes\s+disabled"
        )
        changed = litedesk_admin(self.data, "user", "passwd", "alice", stdin="battery staple\n")
        self.assertEqual(changed.returncode, 0, changed.stderr)
        with contextlib.closing(sqlite3.connect(self.data / OPS_DB_FILE)) as conn:
            (stored,) = conn.execute("SELECT password FROM ops_user").fetchone()
        self.assertTrue(passwords.verify_password("battery staple", stored))

    def test_errors_are_one_line_and_exit_1(self) -> None:
        short = litedesk_admin(self.data, "user", "add", "bob", stdin="short\n")
        self.assertEqual(short.returncode, 1)
        self.assertEqual(short.stderr, "litedesk-admin: a password has at least 8 characters\n")
        missing = litedesk_admin(self.data, "user", "disable", "nobody")
        self.assertEqual(
            (missing.returncode, missing.stderr), (1, "litedesk-admin: no user 'nobody'\n")
        )
        nothing = litedesk_admin(self.data, "user", "add", "bob")
        self.assertIn("no password on standard input", nothing.stderr)
        nodir = litedesk_admin(self.data / "absent", "user", "list")
        self.assertEqual(nodir.returncode, 1)

    def test_terminal_asks_twice(self) -> None:
        """At a terminal the password is typed twice without echo; a mismatch adds nothing."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        answers = iter(["first password", "other password"])
        out = io.StringIO()
        code = admin_cli.main(
            ["-d", str(self.data), "user", "add", "carol"], Tty(), out, lambda _: next(answers)
        )
        self.assertEqual(code, 1)
        self.assertNotIn("carol", litedesk_admin(self.data, "user", "list").stdout)


class AccountsTests(TestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.db = OpsDatabase(self.path, reactor, users.SCHEMA)
        self.addCleanup(self.db.close)
        self.accounts = Accounts(self.db, reactor, token_lifetime=3600)

    @inlineCallbacks
    def test_sign_in_outcomes_and_tokens(self) -> Any:
        yield self.accounts.refresh()
        yield self.accounts.add_user("alice", "correct horse", admin=True)
        yield self.accounts.add_user("bob", "correct horse")
        yield self.accounts.set_disabled("bob", True)
        wrong = yield self.accounts.sign_in("alice", "wrong", kind="console", ip="192.0.2.1")
        self.assertEqual((wrong.outcome, wrong.token), ("bad_password", None))
        unknown = yield self.accounts.sign_in("mallory", "x", kind="api", ip="192.0.2.1")
        self.assertEqual(unknown.outcome, "unknown_user")
        disabled = yield self.accounts.sign_in("bob", "correct horse", kind="api", ip="192.0.2.1")
        self.assertEqual(disabled.outcome, "disabled")
        ok = yield self.accounts.sign_in("ALICE", "correct horse", kind="api", ip="192.0.2.1")
        self.assertEqual(ok.outcome, "ok")
        user = self.accounts.user_for_token(ok.token)
        self.assertEqual(user.name if user else None, "alice")
        self.assertIsNone(self.accounts.user_for_token(ok.token + "x"))
        self.assertIsNone(self.accounts.user_for_token(""))
        yield self.accounts.sign_out(ok.token)
        self.assertIsNone(self.accounts.user_for_token(ok.token))

    @inlineCallbacks
    def test_new_password_and_disabling_end_tokens(self) -> Any:
        yield self.accounts.add_user("alice", "correct horse")
        first = yield self.accounts.sign_in("alice", "correct horse", kind="api", ip="")
        yield self.accounts.set_password("alice", "battery staple")
        self.assertIsNone(self.accounts.user_for_token(first.token))
        second = yield self.accounts.sign_in("alice", "battery staple", kind="api", ip="")
        self.assertIsNotNone(self.accounts.user_for_token(second.token))
        yield self.accounts.set_disabled("alice", True)
        self.assertIsNone(self.accounts.user_for_token(second.token))

    @inlineCallbacks
    def test_expired_token_is_not_live(self) -> Any:
        short = Accounts(self.db, _Later(10_000), token_lifetime=60)
        yield self.accounts.add_user("alice", "correct horse")
        ok = yield self.accounts.sign_in("alice", "correct horse", kind="api", ip="")
        self.assertIsNotNone(self.accounts.user_for_token(ok.token))
        yield short.refresh()
        self.assertIsNone(short.user_for_token(ok.token))  # 10,000 s later: expired
        # ... and the expired row was deleted from the database on the way.
        count = yield self.db.run(lambda c: c.execute("SELECT count(*) FROM ops_token").fetchone())
        self.assertEqual(count, (0,))

    @inlineCallbacks
    def test_changes_from_another_process_are_picked_up(self) -> Any:
        yield self.accounts.refresh()
        self.assertEqual(self.accounts.users(), [])
        made = litedesk_admin(self.path.parent, "user", "add", "alice", stdin="correct horse\n")
        self.assertEqual(made.returncode, 0, made.stderr)
        # (admin writes ops.sqlite3 in the data dir: point the server at that file)
        db = OpsDatabase(self.path.parent / OPS_DB_FILE, reactor, users.SCHEMA)
        self.addCleanup(db.close)
        accounts = Accounts(db, reactor, token_lifetime=3600)
        yield accounts.refresh()
        ok = yield accounts.sign_in("alice", "correct horse", kind="api", ip="")
        self.assertEqual(ok.outcome, "ok")
        self.assertEqual(litedesk_admin(self.path.parent, "user", "disable", "alice").returncode, 0)
        self.assertIsNotNone(accounts.user_for_token(ok.token))  # not yet noticed
        yield accounts.refresh()
        self.assertIsNone(accounts.user_for_token(ok.token))
        alice = accounts.get("alice")
        assert alice is not None
        self.assertTrue(alice.disabled)


class _Later:
    """The reactor, C{offset} seconds in the future (threads are the reactor's)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def seconds(self) -> float:
        return reactor.seconds() + self.offset

    def getThreadPool(self) -> Any:
        return reactor.getThreadPool()  # type: ignore[attr-defined]


class SignInGuardTests(SynchronousTestCase):
    def test_five_at_once_then_one_per_six_seconds_per_address(self) -> None:
        guard = SignInGuard()
        self.assertEqual([guard.allow("192.0.2.1", 0.0) for _ in range(6)], [True] * 5 + [False])
        self.assertTrue(guard.allow("192.0.2.2", 0.0))  # another address has its own budget
        self.assertTrue(guard.allow("192.0.2.1", 6.1))
