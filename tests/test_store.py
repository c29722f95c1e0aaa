"""Tests for L{litedesk.rendezvous.store}: the hbbs-compatible SQLite peer store.

Every test uses a real SQLite file in a fresh temporary directory and the real
reactor, because the store's writer thread hands results back through
C{reactor.callFromThread}.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any, cast

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from litedesk.rendezvous import store as store_module
from litedesk.rendezvous.store import PeerRecord, PeerStore, StoreClosed
from litedesk.rendezvous.store_sql import apply_all, new_guids

REPO_ROOT = Path(__file__).resolve().parent.parent

# hbbs' DDL as given in docs/protocol.rst §5.2, written the way a migration
# file would be (lower case, one column per line).  Kept separate from the
# store's own text on purpose: the tests compare the two.
HBBS_DDL = """
create table if not exists peer (
    guid blob primary key not null,
    id varchar(100) not null,
    uuid blob not null,
    pk blob not null,
    created_at datetime not null default current_timestamp,
    user blob,
    status tinyint,
    note varchar(300),
    info text not null
) without rowid;
create unique index if not exists index_peer_id on peer (id);
create index if not exists index_peer_user on peer (user);
create index if not exists index_peer_created_at on peer (created_at);
create index if not exists index_peer_status on peer (status);
"""

# Run by the kill -9 test in a child interpreter: keep WINDOW saves in flight
# forever (a new one as each is acknowledged) and print "ACKED <n>" for each
# acknowledged save, until killed.
CHILD_SCRIPT = r"""
import sys
from pathlib import Path

from twisted.internet import reactor

from litedesk.rendezvous.store import PeerRecord, PeerStore

path, window = Path(sys.argv[1]), int(sys.argv[2])
store = PeerStore(path, reactor)
next_n = 0


def save_next():
    global next_n
    n, next_n = next_n, next_n + 1
    record = PeerRecord(None, "peer%06d" % n, b"uuid-%d" % n, b"pk-%d" % n, "10.0.0.1")
    store.save(record).addCallback(acked, n)


def acked(guid, n):
    sys.stdout.write("ACKED %d\n" % n)
    sys.stdout.flush()
    save_next()


def start():
    for _ in range(window):
        save_next()


reactor.callWhenRunning(start)
reactor.run()
"""


def record(n: int, *, ip: str = "192.0.2.1") -> PeerRecord:
    return PeerRecord(
        guid=None,
        id=f"{100000000 + n}",
        uuid=f"uuid-{n}".encode(),
        pk=f"pk-{n}".encode().ljust(32, b"\0"),
        ip=ip,
    )


def schema(path: Path) -> list[tuple[str, str, str, str]]:
    """(type, name, table, sql without whitespace, lower case) of every schema object."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        conn.close()
    return sorted((t, n, tbl, "".join((sql or "").lower().split())) for t, n, tbl, sql in rows)


def pragmas(path: Path) -> dict[str, list[Any]]:
    """Column and index definitions as SQLite itself reports them."""
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[Any]] = {
            # Declared types keep the DDL's spelling; SQLite's type affinity
            # ignores case, so compare them in lower case.
            "columns": [
                (cid, name, decltype.lower(), *rest)
                for cid, name, decltype, *rest in conn.execute("PRAGMA table_xinfo(peer)")
            ],
            "indexes": sorted(conn.execute("PRAGMA index_list(peer)").fetchall()),
        }
        for _, name, *_rest in out["indexes"]:
            out[name] = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
    finally:
        conn.close()
    return out


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT guid, id, uuid, pk, info, created_at, user, status, note FROM peer ORDER BY id"
        ).fetchall()
    finally:
        conn.close()


def make_hbbs_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(HBBS_DDL)
    finally:
        conn.close()


class _ChildOutput(protocol.ProcessProtocol):
    """Counts the child's "ACKED <n>" lines and SIGKILLs it after C{kill_after}."""

    def __init__(self, kill_after: int) -> None:
        self.kill_after = kill_after
        self.acked: list[int] = []
        self.killed = False
        self.stderr = b""
        self._buffer = b""
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            word, n = line.split()
            assert word == b"ACKED", line
            self.acked.append(int(n))
        if not self.killed and len(self.acked) >= self.kill_after:
            self.killed = True
            assert self.transport is not None
            self.transport.signalProcess("KILL")

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


class PeerStoreTests(TestCase):
    def path(self) -> Path:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        return directory / "db_v2.sqlite3"

    def open(self, path: Path, **kwargs: Any) -> PeerStore:
        store = PeerStore(path, IReactorFromThreads(reactor), **kwargs)
        self.addCleanup(store.close)
        return store

    # -- schema and compatibility with hbbs ---------------------------------

    def test_schema_matches_hbbs(self) -> None:
        """
        A database created by LiteDesk has exactly hbbs' C{peer} table and
        indexes, so hbbs could open it and vice versa.
        """
        ours = self.path()
        self.open(ours)
        theirs = self.path()
        make_hbbs_db(theirs)

        self.assertEqual(schema(ours), schema(theirs))
        self.assertEqual(pragmas(ours), pragmas(theirs))
        names = {name for kind, name, _, _ in schema(ours) if kind == "index"}
        self.assertEqual(
            names,
            {
                "index_peer_id",
                "index_peer_user",
                "index_peer_created_at",
                "index_peer_status",
            },
        )
        (table_sql,) = [sql for kind, _, _, sql in schema(ours) if kind == "table"]
        self.assertTrue(table_sql.endswith("withoutrowid"), table_sql)

    async def test_existing_hbbs_database_loads(self) -> None:
        """
        An operator can point LiteDesk at an existing hbbs C{db_v2.sqlite3}:
        its peers load, the schema is left untouched, and updating a peer
        keeps the columns LiteDesk does not use.
        """
        path = self.path()
        make_hbbs_db(path)
        conn = sqlite3.connect(path)
        conn.execute(
            "INSERT INTO peer (guid, id, uuid, pk, user, status, note, info)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                b"G" * 16,
                "123456789",
                b"device-uuid",
                b"K" * 32,
                b"user-guid",
                1,
                "the boss's laptop",
                '{"ip":"::ffff:203.0.113.9"}',
            ),
        )
        conn.commit()
        conn.close()
        before = schema(path)
        created_at = raw_rows(path)[0][5]

        store = self.open(path)
        self.assertEqual(schema(path), before)
        self.assertEqual(
            store.load_all(),
            [PeerRecord(b"G" * 16, "123456789", b"device-uuid", b"K" * 32, "::ffff:203.0.113.9")],
        )

        guid = await store.save(
            PeerRecord(b"G" * 16, "123456789", b"other-uuid", b"N" * 32, "198.51.100.7")
        )
        self.assertEqual(guid, b"G" * 16)
        self.assertEqual(
            raw_rows(path),
            [
                (
                    b"G" * 16,
                    "123456789",
                    b"device-uuid",
                    b"N" * 32,
                    '{"ip":"198.51.100.7"}',
                    created_at,
                    b"user-guid",
                    1,
                    "the boss's laptop",
                )
            ],
        )

    def test_load_tolerates_bad_info(self) -> None:
        """
        Peers whose C{info} column is not the expected JSON still load, with
        an empty IP, instead of stopping the server from starting.
        """
        path = self.path()
        make_hbbs_db(path)
        infos = ["not json", "[1, 2]", '{"ip": 5}', "{}", "", '{"ip":"192.0.2.8","x":1}']
        conn = sqlite3.connect(path)
        for n, info in enumerate(infos):
            conn.execute(
                "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?, ?, ?, ?, ?)",
                (bytes([n]) * 16, f"id{n}", b"u", b"p", info),
            )
        conn.commit()
        conn.close()

        loaded = sorted(self.open(path).load_all(), key=lambda r: r.id)
        self.assertEqual([r.ip for r in loaded], ["", "", "", "", "", "192.0.2.8"])

    def test_unopenable_database_fails_at_start(self) -> None:
        """
        A database path that cannot be opened is reported when the store is
        created, not later as lost registrations.
        """
        missing = Path(self.mktemp()) / "no-such-dir" / "db_v2.sqlite3"
        self.assertRaises(
            sqlite3.OperationalError, PeerStore, missing, IReactorFromThreads(reactor)
        )

    def test_wal_and_synchronous_full(self) -> None:
        """
        The database runs in WAL mode with C{synchronous=FULL}, the settings
        that make an acknowledged registration survive a crash or power loss.
        """
        path = self.path()
        store = self.open(path)
        self.assertEqual(store.journal_mode, "wal")
        self.assertEqual(store.synchronous, 2)  # FULL
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        finally:
            conn.close()

    # -- saving and loading -------------------------------------------------

    async def test_save_then_load(self) -> None:
        """
        A saved peer is there, with its guid, after the server restarts; it
        is stored as hbbs stores it (16-byte guid, C{info} = C{{"ip":...}}).
        """
        path = self.path()
        store = self.open(path)
        peer = record(1, ip="::ffff:192.0.2.44")
        guid = await store.save(peer)
        self.assertEqual(len(guid), 16)
        self.assertEqual(peer.guid, guid)
        await store.close()

        self.assertEqual(self.open(path).load_all(), [peer])
        ((_, _, _, _, info, created_at, user, status, note),) = raw_rows(path)
        self.assertEqual(info, '{"ip":"::ffff:192.0.2.44"}')
        self.assertIsNotNone(created_at)
        self.assertEqual((user, status, note), (None, None, None))

    async def test_update_keeps_guid_and_uuid(self) -> None:
        """
        Saving a known peer again updates its key and IP in place: same guid,
        and the uuid it first registered with is kept.
        """
        path = self.path()
        store = self.open(path)
        peer = record(2)
        guid = await store.save(peer)
        peer.pk = b"new-key".ljust(32, b"\0")
        peer.ip = "198.51.100.1"
        peer.uuid = b"some-other-uuid"
        self.assertEqual(await store.save(peer), guid)

        (loaded,) = store.load_all()
        self.assertEqual(
            loaded,
            PeerRecord(guid, peer.id, b"uuid-2", b"new-key".ljust(32, b"\0"), "198.51.100.1"),
        )

    async def test_new_record_with_known_id_updates_that_row(self) -> None:
        """
        Saving a never-saved record whose id is already in the table (two
        quick registrations of a new peer, or a row added behind the server's
        back) updates that row and returns its guid instead of failing.
        """
        path = self.path()
        store = self.open(path)
        first = record(3)
        guid = await store.save(first)

        clash = record(3, ip="203.0.113.3")
        clash.uuid = b"clash-uuid"
        clash.pk = b"clash-key"
        self.assertEqual(await store.save(clash), guid)
        self.assertEqual(clash.guid, guid)
        self.assertEqual(
            store.load_all(), [PeerRecord(guid, first.id, first.uuid, b"clash-key", "203.0.113.3")]
        )

        # Two saves of the same new peer queued back to back end up in one row.
        twice = record(4)
        d1 = store.save(twice)
        d2 = store.save(twice)
        g1, g2 = await defer.gatherResults([d1, d2])
        self.assertEqual(g1, g2)
        self.assertEqual(twice.guid, g1)
        self.assertEqual(len(store.load_all()), 2)

    async def test_mixed_batch_keeps_queue_order(self) -> None:
        """New peers, a rename of one of them, an update and more new peers queued at
        once (one batch, the new ones inserted together): each save gets the guid of
        its row and the table ends as if the saves had been applied one by one."""
        store = self.open(self.path())
        a, b, c = record(10), record(11), record(12)
        saves = [store.save(a), store.save(b)]
        saves.append(store.save(PeerRecord(None, "renamed10", a.uuid, a.pk, a.ip, a.id)))
        saves += [store.save(c), store.save(record(11, ip="203.0.113.11"))]
        ga, gb, g_renamed, gc, gb_again = await defer.gatherResults(saves)
        self.assertEqual((g_renamed, gb_again), (ga, gb))
        self.assertEqual(len({ga, gb, gc}), 3)
        rows = {r.id: (r.guid, r.ip) for r in store.load_all()}
        self.assertEqual(
            rows,
            {"renamed10": (ga, a.ip), b.id: (gb, "203.0.113.11"), c.id: (gc, c.ip)},
        )

    async def test_update_of_deleted_row_writes_it_again(self) -> None:
        """
        If an operator deletes a peer's row while the server runs, the peer's
        next save writes it back under the same guid rather than vanishing.
        """
        path = self.path()
        store = self.open(path)
        peer = record(5)
        guid = await store.save(peer)
        conn = sqlite3.connect(path)
        conn.execute("DELETE FROM peer")
        conn.commit()
        conn.close()

        self.assertEqual(await store.save(peer), guid)
        self.assertEqual(store.load_all(), [peer])

    # -- durability ---------------------------------------------------------

    async def test_acknowledged_saves_survive_kill_9(self) -> None:
        """
        Every save the store acknowledged is in the database after the server
        process is killed with SIGKILL in the middle of a stream of saves.
        """
        path = self.path()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p
        )
        child = _ChildOutput(kill_after=50)
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-c", CHILD_SCRIPT, str(path), "16"],
            env=env,
        )
        await child.ended

        self.assertTrue(child.killed, child.stderr.decode(errors="replace"))
        self.assertGreaterEqual(len(child.acked), 50)
        stored = {r.id: r for r in self.open(path).load_all()}
        for n in child.acked:
            peer = stored.get(f"peer{n:06d}")
            self.assertIsNotNone(peer, f"acknowledged save {n} lost")
            assert peer is not None
            self.assertEqual((peer.uuid, peer.pk), (b"uuid-%d" % n, b"pk-%d" % n))

    # -- concurrency and batching -------------------------------------------

    async def test_many_saves_are_batched_without_blocking_the_reactor(self) -> None:
        """
        Thousands of concurrent registrations all complete, are written in a
        few group commits rather than one commit each, and the reactor keeps
        running while the writes are stalled on the disk.
        """
        path = self.path()
        store = self.open(path)
        # Another connection holds the write lock, so the writer thread is
        # stuck (as on a slow disk) until we let go.
        blocker = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")

        count = 2000
        ticks_while_stalled = 0
        enough_ticks: Deferred[None] = Deferred()

        def tick() -> None:
            nonlocal ticks_while_stalled
            if store.pending == count:
                ticks_while_stalled += 1
                if ticks_while_stalled == 5:
                    enough_ticks.callback(None)

        loop = LoopingCall(tick)
        saves = [store.save(record(n)) for n in range(count)]
        self.assertEqual(store.pending, count)
        loop.start(0.001)

        def stop_loop() -> None:
            if loop.running:
                loop.stop()

        self.addCleanup(stop_loop)

        await enough_ticks
        blocker.execute("ROLLBACK")
        guids = await defer.gatherResults(saves)

        self.assertEqual(len(set(guids)), count)
        self.assertEqual(store.pending, 0)
        self.assertLess(store.commits, count)
        self.assertLessEqual(store.commits, 20)
        self.assertEqual(len(store.load_all()), count)

    # -- failures -----------------------------------------------------------

    async def test_bad_row_fails_only_its_own_save(self) -> None:
        """
        A save that SQLite rejects fails only its own Deferred: the saves
        queued with it are committed, and the store keeps working.
        """
        path = self.path()
        store = self.open(path)
        bad = record(11)
        bad.uuid = cast(bytes, None)  # violates "uuid BLOB NOT NULL"
        d_good1 = store.save(record(10))
        d_bad = store.save(bad)
        d_good2 = store.save(record(12))

        await self.assertFailure(d_bad, sqlite3.IntegrityError)
        self.assertIsNone(bad.guid)
        self.assertEqual(len(await d_good1), 16)
        self.assertEqual(len(await d_good2), 16)
        self.assertEqual(len(await store.save(record(13))), 16)
        self.assertEqual(
            sorted(r.id for r in store.load_all()), [record(n).id for n in (10, 12, 13)]
        )
        self.assertEqual(store.pending, 0)

    async def test_locked_database_fails_save_then_recovers(self) -> None:
        """
        If another process holds the database locked past the busy timeout,
        the save fails with an error (so the registration is not falsely
        acknowledged), and saves succeed again once the lock is released.
        """
        self.patch(store_module, "BUSY_TIMEOUT_MS", 50)
        path = self.path()
        store = self.open(path)
        blocker = sqlite3.connect(path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")

        failure = await self.assertFailure(store.save(record(20)), sqlite3.OperationalError)
        self.assertIn("locked", str(failure))
        blocker.execute("ROLLBACK")

        self.assertEqual(len(await store.save(record(21))), 16)
        self.assertEqual([r.id for r in store.load_all()], [record(21).id])

    # -- shutdown -----------------------------------------------------------

    async def test_close_flushes_pending_writes(self) -> None:
        """
        Closing the store on shutdown commits every registration still
        queued, and each of their Deferreds has fired by the time close does.
        """
        path = self.path()
        store = self.open(path, batch_max=7)
        saves = [store.save(record(n)) for n in range(100)]
        fired: list[bytes] = []
        for d in saves:
            d.addCallback(fired.append)

        await store.close()
        self.assertEqual(len(fired), 100)
        self.assertEqual(store.pending, 0)
        self.assertEqual(len(self.open(path).load_all()), 100)

    async def test_save_after_close_fails(self) -> None:
        """
        A save attempted after shutdown began fails at once with
        L{StoreClosed} rather than hanging; closing twice is harmless.
        """
        store = self.open(self.path())
        closing = store.close()
        await self.assertFailure(store.save(record(30)), StoreClosed)
        await closing
        await store.close()
        await self.assertFailure(store.save(record(31)), StoreClosed)

    def test_info_json_format(self) -> None:
        """
        The C{info} column is written in hbbs' compact JSON form and read back
        whatever its spacing.
        """
        self.assertEqual(store_module.encode_info("1.2.3.4"), '{"ip":"1.2.3.4"}')
        self.assertEqual(store_module.decode_info(json.dumps({"ip": "::1"}, indent=2)), "::1")
        self.assertEqual(store_module.decode_info(b'{"ip":"10.0.0.1"}'), "10.0.0.1")
        self.assertEqual(store_module.decode_info(None), "")


class EncodingTests(SynchronousTestCase):
    """The C{info} text and the guids the store writes."""

    @given(st.text())
    def test_info_is_hbbs_json_for_any_ip(self, ip: str) -> None:
        """
        Whatever the source address string (the fast path covers only plain
        IPs), C{info} is exactly hbbs' compact JSON and reads back the same.
        """
        info = store_module.encode_info(ip)
        self.assertEqual(info, json.dumps({"ip": ip}, separators=(",", ":")))
        self.assertEqual(store_module.decode_info(info), ip)

    def test_new_guids_are_unique_time_ordered_uuids(self) -> None:
        """
        New peers get distinct RFC 9562 version 7 guids whose leading
        millisecond timestamp never goes backwards, so a later wave of
        registrations is stored after an earlier one in the table's key order.
        """
        first = new_guids(500)
        later = new_guids(500)
        everything = first + later
        self.assertEqual(len(set(everything)), 1000)
        for guid in everything:
            parsed = uuid.UUID(bytes=guid)
            self.assertEqual((parsed.version, parsed.variant), (7, uuid.RFC_4122))
        self.assertLessEqual(max(g[:6] for g in first), min(g[:6] for g in later))
        self.assertEqual(new_guids(0), [])


class NewPeersRunTests(SynchronousTestCase):
    """L{litedesk.rendezvous.store_sql.apply_all} on one run of never-saved peers."""

    def test_run_with_stored_and_repeated_ids(self) -> None:
        """
        In one run of new peers, an id the table already holds keeps its row
        and guid (key and address updated), an id twice in the run ends as one
        row with the second save's key and the first one's guid, and the
        others get fresh guids of their own.
        """
        path = Path(self.mktemp())
        conn = sqlite3.connect(str(path), isolation_level=None)
        self.addCleanup(conn.close)
        for statement in store_module.SCHEMA:
            conn.execute(statement)
        stored_guid = b"G" * 16
        conn.execute(
            "INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?, ?, ?, ?, ?)",
            (stored_guid, "100000001", b"old-uuid", b"old-key", '{"ip":"192.0.2.1"}'),
        )

        def new(peer_id: str, pk: bytes) -> store_module._Write:
            peer = PeerRecord(None, peer_id, b"uuid-" + peer_id.encode(), pk, "198.51.100.7")
            return store_module._Write.of(peer, Deferred())

        writes = [
            new("100000000", b"k0"),
            new("100000001", b"k1"),
            new("100000002", b"first"),
            new("100000002", b"second"),
        ]
        conn.execute("BEGIN IMMEDIATE")
        guids = apply_all(conn, writes)
        conn.execute("COMMIT")
        self.assertEqual(guids[1], stored_guid)
        self.assertEqual(guids[2], guids[3])
        self.assertEqual(len({guids[0], guids[1], guids[2]}), 3)
        rows = {
            row[0]: row[1:]
            for row in conn.execute("SELECT id, guid, uuid, pk FROM peer ORDER BY id")
        }
        self.assertEqual(
            rows,
            {
                "100000000": (guids[0], b"uuid-100000000", b"k0"),
                "100000001": (stored_guid, b"old-uuid", b"k1"),
                "100000002": (guids[2], b"uuid-100000002", b"second"),
            },
        )

    def test_run_of_new_ids_keeps_the_fresh_guids(self) -> None:
        """
        A run of ids the table does not hold is stored under the guids the
        store made for it, in order, each row with its own key.
        """
        path = Path(self.mktemp())
        conn = sqlite3.connect(str(path), isolation_level=None)
        self.addCleanup(conn.close)
        for statement in store_module.SCHEMA:
            conn.execute(statement)
        writes = [
            store_module._Write.of(
                PeerRecord(None, str(200_000_000 + i), b"u%d" % i, b"k%d" % i, "::1"), Deferred()
            )
            for i in range(50)
        ]
        conn.execute("BEGIN IMMEDIATE")
        guids = apply_all(conn, writes)
        conn.execute("COMMIT")
        stored = dict(conn.execute("SELECT id, guid FROM peer"))
        self.assertEqual([stored[w.id] for w in writes], guids)
        self.assertEqual(len(set(guids)), 50)
