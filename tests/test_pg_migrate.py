"""C{litedesk-admin migrate}: a real server's SQLite peer table copied into PostgreSQL.

A real C{litedesk-relay} on SQLite registers hosts over UDP; an hbbs-style
row with every column filled is added; C{litedesk-admin} runs as its own
process (the URL in C{LITEDESK_DATABASE}, out of C{ps}).  Covers: all nine
columns and the guids arrive; a server started on PostgreSQL afterwards
still binds the hosts to their devices; re-running reports the rows
unchanged; a target row registered meanwhile for the same id stops the
migration before any write unless C{--force}; rows PostgreSQL cannot hold
are named and skipped; the password never appears in the output.  Under
hypothesis, rows holding any of SQLite's value types in any column (as a
hand-edited or foreign file may) are each copied or named, never crash the
copy, and a second run finds them unchanged.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.pg_migrate import migrate
from litedesk.rendezvous.store import SCHEMA

from .support.ports import free_port_pair
from .support.postgres import PASSWORD, fresh_database
from .support.processes import RelayProcess, udp_exchange

REGISTERED = "820100"
UUID_MISMATCH = "8201020802"
HBBS_GUID = bytes(range(16))
ADMIN = [sys.executable, "-m", "litedesk.ops.admin_cli"]


def register(port: int, source: str, peer_id: str, uuid: bytes) -> str:
    msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=uuid, pk=bytes([5]) * 32))
    return udp_exchange(msg.SerializeToString(), port, source).hex()


class MigrateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.data_dir = Path(self.mktemp())
        self.log = Path(self.mktemp())
        self.port = free_port_pair()
        # A server on SQLite, as every installation today, with two hosts.
        server = RelayProcess(self.data_dir, self.port, self.log, "--key", "")
        self.addCleanup(server.stop)
        for n in (1, 2):
            self.assertEqual(
                register(self.port, f"127.0.0.{n + 1}", f"11111111{n}", b"%d" % n * 16), REGISTERED
            )
        server.stop()
        self.sqlite = self.data_dir / "db_v2.sqlite3"
        with sqlite3.connect(self.sqlite) as conn:
            # What hbbs' own rows can hold besides what LiteDesk writes.
            conn.execute(
                "INSERT INTO peer (guid, id, uuid, pk, created_at, user, status, note, info) "
                "VALUES (?, 'hbbs01', ?, ?, '2023-04-05 06:07:08', ?, 1, 'front desk', ?)",
                (HBBS_GUID, b"hbbs-uuid", b"k" * 32, b"owner", '{"ip":"198.51.100.9"}'),
            )
        conn.close()

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LITEDESK_DATABASE": self.url}
        result = subprocess.run(
            [*ADMIN, "--data-dir", str(self.data_dir), "migrate", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        self.assertNotIn(PASSWORD, result.stdout + result.stderr)
        return result

    def target(self) -> dict[str, tuple[object, ...]]:
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                'SELECT id, guid, uuid, pk, created_at, "user", status, note, info FROM peer'
            ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}

    def test_copies_every_column_and_the_server_keeps_its_hosts(self) -> None:
        """After migrate, a server on PostgreSQL knows every host the SQLite one did."""
        done = self.admin()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(
            "3 rows read: 3 inserted, 0 updated, 0 unchanged, 0 replaced, 0 skipped", done.stdout
        )
        self.assertIn("postgresql://litedesk:***@127.0.0.1:", done.stdout)
        with sqlite3.connect(self.sqlite) as conn:
            guids = dict(conn.execute("SELECT id, guid FROM peer").fetchall())
        conn.close()
        rows = self.target()
        self.assertEqual({i: r[0] for i, r in rows.items()}, guids)
        self.assertEqual(
            rows["hbbs01"],
            (
                HBBS_GUID,
                b"hbbs-uuid",
                b"k" * 32,
                datetime(2023, 4, 5, 6, 7, 8),
                b"owner",
                1,
                "front desk",
                '{"ip":"198.51.100.9"}',
            ),
        )

        server = RelayProcess(
            self.data_dir, self.port, self.log, "--key", "", "--database", self.url
        )
        self.addCleanup(server.stop)
        self.assertEqual(register(self.port, "127.0.0.9", "111111111", b"x" * 16), UUID_MISMATCH)
        self.assertEqual(register(self.port, "127.0.0.2", "111111111", b"1" * 16), REGISTERED)

    def test_rerun_is_idempotent(self) -> None:
        """A second run finds every row there and changes nothing; a changed row is updated."""
        self.assertEqual(self.admin().returncode, 0)
        before = self.target()
        again = self.admin()
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("3 rows read: 0 inserted, 0 updated, 3 unchanged", again.stdout)
        self.assertEqual(self.target(), before)

        with sqlite3.connect(self.sqlite) as conn:
            conn.execute("UPDATE peer SET note = 'moved' WHERE id = 'hbbs01'")
        conn.close()
        third = self.admin()
        self.assertIn("0 inserted, 1 updated, 2 unchanged", third.stdout)
        self.assertEqual(self.target()["hbbs01"][6], "moved")

    def test_different_row_refused_unless_forced(self) -> None:
        """An id registered on PostgreSQL under another guid stops the copy; --force replaces it."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE peer (guid bytea PRIMARY KEY, id varchar(100) NOT NULL UNIQUE, "
                "uuid bytea NOT NULL, pk bytea NOT NULL, created_at timestamp NOT NULL "
                'DEFAULT now(), "user" bytea, status smallint, note varchar(300), '
                "info text NOT NULL)"
            )
            conn.execute(
                "INSERT INTO peer (guid, id, uuid, pk, info) "
                "VALUES (%s, 'hbbs01', 'new', 'k', '{}')",
                (b"another-guid-16b",),
            )
        refused = self.admin()
        self.assertEqual(refused.returncode, 1)
        self.assertIn("nothing written: 1 rows differ in the target ('hbbs01'", refused.stderr)
        self.assertIn("--force", refused.stderr)
        self.assertEqual(list(self.target()), ["hbbs01"])

        forced = self.admin("--force")
        self.assertEqual(forced.returncode, 0, forced.stderr)
        self.assertIn("2 inserted, 0 updated, 0 unchanged, 1 replaced", forced.stdout)
        rows = self.target()
        self.assertEqual(len(rows), 3)
        self.assertEqual(rows["hbbs01"][0], HBBS_GUID)

    def test_rows_postgresql_cannot_hold_are_named(self) -> None:
        """An id longer than hbbs' 100 characters is skipped and named; the rest is copied."""
        with sqlite3.connect(self.sqlite) as conn:
            conn.execute(
                "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?, ?, 'u', 'k', '{}')",
                (b"g" * 16, "L" * 101),
            )
        conn.close()
        done = self.admin()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("id longer than 100 characters", done.stdout)
        self.assertIn(
            "4 rows read: 3 inserted, 0 updated, 0 unchanged, 0 replaced, 1 skipped", done.stdout
        )
        self.assertEqual(len(self.target()), 3)

    def test_usage_errors(self) -> None:
        """No PostgreSQL URL, or nothing to copy: one line saying so, exit 1."""
        bad = subprocess.run(
            [*ADMIN, "--data-dir", str(self.data_dir), "migrate", "--to", "mysql://x"],
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "LITEDESK_DATABASE"},
            timeout=60,
            check=False,
        )
        self.assertEqual(
            (bad.returncode, bad.stderr),
            (1, "litedesk-admin: migrate: --to takes a postgresql:// URL\n"),
        )
        self.sqlite.unlink()
        missing = self.admin()
        self.assertEqual(missing.returncode, 1)
        self.assertIn("db_v2.sqlite3: no such file", missing.stderr)


# Any value SQLite can hold, in any column: hbbs' typing is only affinity.
_value = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=120),
    st.binary(max_size=40),
)
_rows = st.lists(st.tuples(*[_value] * 9), max_size=8)


class AnyRowsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.n = 0

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(_rows)
    def test_every_row_copied_or_named(self, rows: list[tuple[Any, ...]]) -> None:
        self.n += 1
        path = self.dir / f"{self.n}.sqlite3"
        with sqlite3.connect(path) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            for row in rows:
                # The file's own constraints (NOT NULL, unique id and guid)
                # still hold, as in any real file.
                conn.execute(
                    "INSERT OR IGNORE INTO peer "
                    "(guid, id, uuid, pk, created_at, user, status, note, info) "
                    "VALUES (?, ?, ?, ?, coalesce(?, current_timestamp), ?, ?, ?, ?)",
                    row,
                )
            (stored,) = conn.execute("SELECT count(*) FROM peer").fetchone()
        conn.close()
        with psycopg.connect(self.url, autocommit=True) as pg:
            pg.execute("DROP TABLE IF EXISTS peer")
        out = io.StringIO()
        counts = migrate(path, self.url, out=out)
        self.assertEqual(counts.read, stored)
        self.assertEqual(counts.inserted + counts.skipped, stored)
        self.assertEqual(out.getvalue().count("skipped id"), counts.skipped)
        with psycopg.connect(self.url) as pg:
            copied = pg.execute("SELECT count(*) FROM peer").fetchone()
        self.assertEqual(copied, (counts.inserted,))
        again = migrate(path, self.url, out=io.StringIO())
        self.assertEqual(
            (again.inserted, again.updated, again.unchanged, again.replaced),
            (0, 0, counts.inserted, 0),
        )
