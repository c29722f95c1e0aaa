"""The PostgreSQL peer store (C{--database postgresql://...}) against a real PostgreSQL.

Covers L{litedesk.rendezvous.pg_store} in-process (round trip, guids kept,
group commit, one bad row in a batch, saves after close, the same results as
the SQLite store for any sequence of saves) and a real C{twistd
litedesk-relay --database ...}: a host registered by UDP C{RegisterPk} is
still bound after a restart, every acknowledged registration survives
C{kill -9}, and the password in the URL reaches neither the log nor an error
message.  Also L{litedesk.rendezvous.peer_db.redact_url} under hypothesis, and
the C{--database} option (and C{LITEDESK_DATABASE}).
PostgreSQL is Debian's, started by L{tests.support.postgres}.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, DeferredList
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.rendezvous.db_url import redact_url
from litedesk.rendezvous.pg_store import PgPeerStore, StoreOverloaded
from litedesk.rendezvous.store import PeerRecord, PeerStore, StoreClosed
from litedesk.server.options import ServerOptions

from .support.ports import free_port_pair
from .support.postgres import PASSWORD, PostgresCluster, fresh_database
from .support.processes import TWISTD, RelayProcess, udp_exchange

T = TypeVar("T")

REGISTERED = "820100"  # RegisterPkResponse { result: OK }
UUID_MISMATCH = "8201020802"


class FromThreads:
    """The reactor's C{callFromThread} for a synchronous test.

    The stores' writer threads hand results back through it; L{wait} runs
    those calls on the test's thread until a Deferred has fired, as the
    reactor would.
    """

    def __init__(self) -> None:
        self._calls: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:
        self._calls.put((lambda: f(*args, **kw), ()))

    def wait(self, d: Deferred[T], timeout: float = 30.0) -> Deferred[T]:
        deadline = time.monotonic() + timeout
        while not d.called:
            call, _ = self._calls.get(timeout=max(0.01, deadline - time.monotonic()))
            call()
        return d


class StoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.threads = FromThreads()

    def open(self, **kw: Any) -> PgPeerStore:
        store = PgPeerStore(self.url, self.threads, **kw)  # type: ignore[arg-type]
        self.addCleanup(lambda: self.threads.wait(store.close()))
        return store

    def save_all(self, store: PgPeerStore, records: list[PeerRecord]) -> list[Any]:
        """Save all at once (one batch as far as the writer is concerned)."""
        ds = [store.save(r) for r in records]
        result = self.successResultOf(self.threads.wait(DeferredList(ds, consumeErrors=True)))
        outcomes: list[Any] = [value if ok else value.value for ok, value in result]  # type: ignore[attr-defined]
        return outcomes

    def test_round_trip_keeps_guid_and_columns(self) -> None:
        """What one server saves, the next one loads: id, guid, uuid, key and address."""
        store = self.open()
        rec = PeerRecord(None, "123456789", b"u" * 16, bytes(range(32)), "192.0.2.7")
        (guid,) = self.save_all(store, [rec])
        self.assertEqual(rec.guid, guid)
        self.assertEqual(len(guid), 16)
        self.successResultOf(self.threads.wait(store.close()))

        loaded = self.open().load_all()
        self.assertEqual(
            loaded, [PeerRecord(guid, "123456789", b"u" * 16, bytes(range(32)), "192.0.2.7")]
        )
        with psycopg.connect(self.url) as conn:
            row = conn.execute('SELECT info, created_at, "user", status, note FROM peer').fetchone()
        assert row is not None
        self.assertEqual(row[0], '{"ip":"192.0.2.7"}')  # hbbs' info column
        self.assertIsNotNone(row[1])
        self.assertEqual(row[2:], (None, None, None))

    def test_durable_setting(self) -> None:
        """Acknowledgements wait for the flushed WAL, whatever the server's default."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(
                "ALTER DATABASE " + self.url.rsplit("/", 1)[1] + " SET synchronous_commit = off"
            )
        store = self.open()
        self.assertEqual(store.synchronous_commit, "on")
        with store._pool.connection() as conn:
            self.assertEqual(conn.execute("SHOW synchronous_commit").fetchone(), ("on",))

    def test_updates_keep_the_row(self) -> None:
        """A re-registration updates key and address of the same row; the uuid stays."""
        store = self.open()
        rec = PeerRecord(None, "42", b"first", b"k1", "10.0.0.1")
        (guid,) = self.save_all(store, [rec])
        rec.pk, rec.ip = b"k2", "10.0.0.2"
        self.assertEqual(self.save_all(store, [rec]), [guid])
        # A second record for the same id (two quick RegisterPk of a new peer)
        # lands on the same row too, and learns its guid.
        twin = PeerRecord(None, "42", b"other", b"k3", "10.0.0.3")
        self.assertEqual(self.save_all(store, [twin]), [guid])
        self.assertEqual(twin.guid, guid)
        self.assertEqual(store.load_all(), [PeerRecord(guid, "42", b"first", b"k3", "10.0.0.3")])

    def test_id_change(self) -> None:
        """An ID change moves the row (guid, uuid kept) to the new id; a taken id fails."""
        store = self.open()
        a = PeerRecord(None, "111", b"ua", b"ka", "1.1.1.1")
        b = PeerRecord(None, "222", b"ub", b"kb", "2.2.2.2")
        ga, _ = self.save_all(store, [a, b])
        a.id, a.renamed_from = "333", "111"
        self.assertEqual(self.save_all(store, [a]), [ga])
        a.renamed_from = ""
        b.id, b.renamed_from = "333", "222"
        (error,) = self.save_all(store, [b])
        self.assertIsInstance(error, psycopg.IntegrityError)
        ids = {r.id: r for r in store.load_all()}
        self.assertEqual(sorted(ids), ["222", "333"])
        self.assertEqual((ids["333"].guid, ids["333"].uuid), (ga, b"ua"))

    def test_group_commit(self) -> None:
        """Many saves queued together are committed in far fewer transactions."""
        store = self.open()
        records = [PeerRecord(None, f"id{i}", b"u", b"k", "") for i in range(2000)]
        guids = self.save_all(store, records)
        self.assertEqual(len(set(guids)), 2000)
        self.assertLess(store.commits, 100)
        self.assertEqual(len(store.load_all()), 2000)

    def test_a_bad_row_fails_alone(self) -> None:
        """An id PostgreSQL cannot hold fails its own save; the rest of its batch is stored."""
        store = self.open()
        records = [PeerRecord(None, f"ok{i}", b"u", b"k", "") for i in range(20)]
        records.insert(7, PeerRecord(None, "x" * 101, b"u", b"k", ""))
        results = self.save_all(store, records)
        self.assertIsInstance(results.pop(7), psycopg.DataError)
        self.assertTrue(all(isinstance(g, bytes) for g in results))
        self.assertEqual(
            sorted(r.id for r in store.load_all()), sorted(f"ok{i}" for i in range(20))
        )
        # The writer is still there for later saves.
        self.assertEqual(len(self.save_all(store, [PeerRecord(None, "after", b"u", b"k", "")])), 1)

    def test_queue_is_bounded(self) -> None:
        """Past max_pending waiting saves, a save fails at once; the others are stored."""
        store = self.open(max_pending=50)
        records = [PeerRecord(None, f"q{i}", b"u", b"k", "") for i in range(60)]
        results = self.save_all(store, records)
        self.assertTrue(all(isinstance(g, bytes) for g in results[:50]))
        self.assertTrue(all(isinstance(e, StoreOverloaded) for e in results[50:]))
        self.assertEqual(len(store.load_all()), 50)
        self.assertEqual(len(self.save_all(store, records[50:51])), 1)

    def test_save_after_close_fails(self) -> None:
        """Saves queued before close are committed; a later one fails at once."""
        store = PgPeerStore(self.url, self.threads)  # type: ignore[arg-type]
        d = store.save(PeerRecord(None, "early", b"u", b"k", ""))
        closed = store.close()
        self.failureResultOf(store.save(PeerRecord(None, "late", b"u", b"k", "")), StoreClosed)
        self.threads.wait(closed)
        self.assertTrue(d.called)
        self.assertEqual(len(self.successResultOf(d)), 16)
        self.threads.wait(store.close())
        with psycopg.connect(self.url) as conn:
            self.assertEqual(conn.execute("SELECT id FROM peer").fetchall(), [("early",)])

    def test_unreachable_database(self) -> None:
        """A server that cannot be reached fails the constructor, without the password."""
        url = f"postgresql://litedesk:{PASSWORD}@127.0.0.1:{free_port_pair()}/none"
        with self.assertRaises(psycopg.OperationalError) as caught:
            PgPeerStore(url, self.threads)  # type: ignore[arg-type]
        self.assertNotIn(PASSWORD, str(caught.exception))


# Ids are the peers' own text: anything but NUL (PostgreSQL text cannot hold
# it) up to hbbs' 100 characters.
_peer_ids = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=100
)


class PeerTextTests(SynchronousTestCase):
    """Whatever ids and keys peers send are stored as sent (a wave's one-statement path)."""

    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.threads = FromThreads()
        self.store = PgPeerStore(self.url, self.threads)  # type: ignore[arg-type]
        self.addCleanup(lambda: self.threads.wait(self.store.close()))

    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(st.tuples(_peer_ids, st.binary(max_size=40)), max_size=20))
    def test_round_trip(self, peers: list[tuple[str, bytes]]) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE peer")
        records = [PeerRecord(None, i, b"u" + k, k, "192.0.2.1") for i, k in peers]
        ds = [self.store.save(r) for r in records]
        outcome = self.successResultOf(self.threads.wait(DeferredList(ds, consumeErrors=True)))
        self.assertTrue(all(ok for ok, _ in outcome), outcome)
        # The last save of an id wins; its row keeps the first save's uuid.
        expected: dict[str, tuple[bytes, bytes]] = {}
        for i, k in peers:
            expected[i] = (expected.get(i, (b"u" + k, k))[0], k)
        loaded = {r.id: (r.uuid, r.pk) for r in self.store.load_all()}
        self.assertEqual(loaded, expected)

    def test_special_characters(self) -> None:
        ids = ['a"b', "c\\d", "{x,y}", "NULL", "", " sp ", "é€😀", "'q'"]
        records = [PeerRecord(None, i, i.encode() or b"-", b"k", "10.0.0.1") for i in ids]
        outcome = self.successResultOf(
            self.threads.wait(DeferredList([self.store.save(r) for r in records]))
        )
        self.assertEqual(len({g for _, g in outcome}), len(ids))
        self.assertEqual(sorted(r.id for r in self.store.load_all()), sorted(ids))


class OutageTests(SynchronousTestCase):
    """PostgreSQL going away and coming back, on a cluster of the test's own."""

    def setUp(self) -> None:
        self.cluster = PostgresCluster()
        self.addCleanup(self.cluster.stop)
        self.threads = FromThreads()
        self.store = PgPeerStore(self.cluster.create_database("peers"), self.threads)  # type: ignore[arg-type]
        self.addCleanup(lambda: self.threads.wait(self.store.close(), timeout=60))

    def save(self, peer_id: str) -> Any:
        d = self.store.save(PeerRecord(None, peer_id, peer_id.encode(), b"k", ""))
        self.threads.wait(d, timeout=60)
        return d

    def test_restart(self) -> None:
        """After PostgreSQL restarts (its connections cut), saves go on on new connections."""
        self.assertEqual(len(self.successResultOf(self.save("before"))), 16)
        self.cluster.halt()
        self.cluster.start()
        for n in range(4):  # every pooled connection, whichever is used
            self.assertEqual(len(self.successResultOf(self.save(f"after{n}"))), 16)
        self.assertEqual(len(self.store.load_all()), 5)

    def test_down(self) -> None:
        """While PostgreSQL is down a save fails (no acknowledgement), in bounded time."""
        self.assertEqual(len(self.successResultOf(self.save("before"))), 16)
        self.cluster.halt()
        started = time.monotonic()
        self.failureResultOf(self.save("during"), psycopg.OperationalError)
        self.assertLess(time.monotonic() - started, 45)
        self.cluster.start()
        self.assertEqual(len(self.successResultOf(self.save("after"))), 16)
        self.assertEqual(sorted(r.id for r in self.store.load_all()), ["after", "before"])


# Operations on a few ids, as the rendezvous server makes them: a new record,
# an update of an earlier record (new key and address), an ID change.
_ids = st.sampled_from(["100", "200", "300"])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("new"), _ids, st.binary(min_size=1, max_size=4), st.binary(max_size=4)),
        st.tuples(st.just("update"), st.integers(0, 20), st.binary(max_size=4), st.just(b"")),
        st.tuples(st.just("rename"), st.integers(0, 20), _ids, st.just(b"")),
    ),
    min_size=1,
    max_size=12,
)


class SameAsSQLiteTests(SynchronousTestCase):
    """For any sequence of saves, PostgreSQL ends where the SQLite store does.

    With one writer for any sequence at all; with several writers for the
    sequences the registry makes (an id stays bound to its device's uuid;
    an ID change never takes a bound id), whose order per device they keep.
    """

    def setUp(self) -> None:
        self.threads = FromThreads()
        self.pg: dict[int, PgPeerStore] = {}
        self.urls: dict[int, str] = {}
        for writers in (1, 2):
            self.urls[writers] = url = fresh_database(self)
            store = self.pg[writers] = PgPeerStore(url, self.threads, writers=writers)  # type: ignore[arg-type]
            self.addCleanup(self.close, store)
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.n = 0

    def close(self, store: PgPeerStore) -> None:
        self.threads.wait(store.close())

    def play(
        self, store: Any, ops: list[tuple[str, Any, Any, bytes]], batched: bool, registry: bool
    ) -> Any:
        records: list[PeerRecord] = []
        ds: list[Deferred[bytes]] = []
        bound: dict[str, bytes] = {}  # the registry's id -> uuid
        for kind, a, b, c in ops:
            if kind == "new":
                if registry and bound.setdefault(a, b) != b:
                    continue  # UUID_MISMATCH
                rec = PeerRecord(None, a, b, c, "")
                records.append(rec)
            elif not records:
                continue
            else:
                rec = records[a % len(records)]
                if kind == "update":
                    rec.pk, rec.ip = b, f"10.0.0.{len(b)}"
                else:
                    if registry:
                        if b in bound:
                            continue  # the new id is taken
                        bound.pop(rec.id, None)
                        bound[b] = rec.uuid
                    rec.renamed_from, rec.id = rec.id, b
            d = store.save(rec)
            rec.renamed_from = ""
            ds.append(d)
            if not batched:
                self.threads.wait(d)
        outcome = self.successResultOf(self.threads.wait(DeferredList(ds, consumeErrors=True)))
        table = {r.id: r for r in store.load_all()}
        rows = {i: (r.uuid, r.pk, r.ip) for i, r in table.items()}
        named = [r.guid is not None and table.get(r.id, r).guid == r.guid for r in records]
        return [ok for ok, _ in outcome], rows, named

    def compare(self, writers: int, ops: list[tuple[str, Any, Any, bytes]], batched: bool) -> None:
        with psycopg.connect(self.urls[writers], autocommit=True) as conn:
            conn.execute("TRUNCATE peer")
        self.n += 1
        sqlite = PeerStore(self.dir / f"{self.n}.sqlite3", self.threads)  # type: ignore[arg-type]
        registry = writers > 1
        try:
            expected = self.play(sqlite, ops, batched, registry)
        finally:
            self.threads.wait(sqlite.close())
        self.assertEqual(self.play(self.pg[writers], ops, batched, registry), expected)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(_ops, st.booleans())
    def test_one_writer_any_sequence(
        self, ops: list[tuple[str, Any, Any, bytes]], batched: bool
    ) -> None:
        self.compare(1, ops, batched)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(_ops, st.booleans())
    # An id freed by an ID change and taken at once by another device: the
    # new device's save must not land on the renamed row.
    @example(
        [("new", "300", b"\x00", b""), ("rename", 0, "100", b""), ("new", "300", b"\x01", b"")],
        True,
    )
    def test_two_writers_registry_sequences(
        self, ops: list[tuple[str, Any, Any, bytes]], batched: bool
    ) -> None:
        self.compare(2, ops, batched)


# Passwords unlike anything else in the URL, so that finding one is a leak.
_passwords = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=20).map(
    lambda s: "Pw" + s
)


class RedactTests(SynchronousTestCase):
    @given(_passwords, st.sampled_from(["postgresql", "postgres"]))
    def test_url_password_never_shown(self, password: str, scheme: str) -> None:
        from urllib.parse import quote

        secret = quote(password, safe="")
        url = f"{scheme}://litedesk:{secret}@db.example:5432/peers?sslmode=require"
        shown = redact_url(url)
        self.assertNotIn(secret, shown)
        self.assertEqual(shown, f"{scheme}://litedesk:***@db.example:5432/peers?sslmode=require")

    @given(_passwords)
    def test_query_and_keyword_passwords_never_shown(self, password: str) -> None:
        from urllib.parse import quote

        secret = quote(password, safe="")
        self.assertNotIn(secret, redact_url(f"postgresql://db.example/peers?password={secret}"))
        kv = password.replace("'", "").replace("\\", "").split()[0] if password.split() else "Pw"
        self.assertNotIn(kv, redact_url(f"host=db.example password={kv} dbname=peers"))

    def test_no_password(self) -> None:
        self.assertEqual(
            redact_url("postgresql://db.example/peers"), "postgresql://db.example/peers"
        )
        self.assertEqual(redact_url("postgresql://u@h/d"), "postgresql://u@h/d")


class OptionTests(SynchronousTestCase):
    """C{--database} and C{LITEDESK_DATABASE} as the server reads them."""

    def parse(self, *argv: str) -> ServerOptions:
        config = ServerOptions()
        config.parseOptions(["--data-dir", self.mktemp(), *argv])
        return config

    def setUp(self) -> None:
        saved = os.environ.pop("LITEDESK_DATABASE", None)
        if saved is not None:
            self.addCleanup(os.environ.__setitem__, "LITEDESK_DATABASE", saved)

    def test_default_is_sqlite(self) -> None:
        self.assertEqual(self.parse()["database"], "")

    def test_environment(self) -> None:
        """The URL can come from the environment; the command line wins."""
        os.environ["LITEDESK_DATABASE"] = "postgresql://a:b@h/env"
        self.addCleanup(os.environ.pop, "LITEDESK_DATABASE", None)
        self.assertEqual(self.parse()["database"], "postgresql://a:b@h/env")
        self.assertEqual(
            self.parse("--database", "postgres://h/cli")["database"], "postgres://h/cli"
        )

    def test_other_urls_refused_without_echo(self) -> None:
        """Not PostgreSQL: a usage error that does not repeat the URL (it may hold a password)."""
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--database", "mysql://root:hunter2@db/peers")
        self.assertNotIn("hunter2", str(caught.exception))
        self.assertIn("postgresql://", str(caught.exception))


def register(port: int, source: str, peer_id: str, uuid: bytes = b"u" * 16) -> str:
    msg = rz.RendezvousMessage(register_pk=rz.RegisterPk(id=peer_id, uuid=uuid, pk=bytes([7]) * 32))
    return udp_exchange(msg.SerializeToString(), port, source).hex()


class ServerTests(SynchronousTestCase):
    """A real C{twistd litedesk-relay} on PostgreSQL."""

    def setUp(self) -> None:
        self.url = fresh_database(self)
        self.data_dir = Path(self.mktemp())
        self.log = Path(self.mktemp())
        self.port = free_port_pair()

    def start(self, *extra: str) -> RelayProcess:
        p = RelayProcess(self.data_dir, self.port, self.log, "--key", "", *extra)
        self.addCleanup(p.stop)
        return p

    def test_registration_survives_restart(self) -> None:
        """A host registered over UDP is still bound to its device after a restart."""
        first = self.start("--database", self.url)
        self.assertEqual(register(self.port, "127.0.0.2", "123456789"), REGISTERED)
        first.stop()
        self.assertFalse((self.data_dir / "db_v2.sqlite3").exists())

        # From the environment this time (out of ps), as the docs advise.
        os.environ["LITEDESK_DATABASE"] = self.url
        self.addCleanup(os.environ.pop, "LITEDESK_DATABASE", None)
        self.start()
        self.assertEqual(register(self.port, "127.0.0.3", "123456789", b"x" * 16), UUID_MISMATCH)
        self.assertEqual(register(self.port, "127.0.0.2", "123456789"), REGISTERED)
        log = self.log.read_text()
        self.assertIn("1 peers loaded from postgresql://litedesk:***@", log)
        self.assertNotIn(PASSWORD, log)

    def test_kill_9_loses_no_acknowledged_registration(self) -> None:
        """Every RegisterPk answered OK is in the database after kill -9."""
        server = self.start("--database", self.url)
        # One id per source address and socket, all sent at once (a wave of
        # hosts); unanswered ones are sent again, as clients do, since a
        # burst can overflow the server's socket buffer on a busy machine.
        waiting: dict[int, tuple[socket.socket, bytes, str]] = {}
        ep = select.epoll()
        for i in range(300):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(s.close)
            s.bind((f"127.0.{3 + i // 200}.{1 + i % 200}", 0))
            peer_id = f"9{i:08d}"
            msg = rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id=peer_id, uuid=b"u" * 16, pk=bytes([7]) * 32)
            ).SerializeToString()
            s.sendto(msg, ("127.0.0.1", self.port))
            waiting[s.fileno()] = (s, msg, peer_id)
            ep.register(s.fileno(), select.EPOLLIN)
        acked: set[str] = set()
        deadline = time.monotonic() + 30
        while waiting and time.monotonic() < deadline:
            events = ep.poll(1.0)
            for fd, _ in events:
                s, _, peer_id = waiting.pop(fd)
                if s.recv(100).hex() == REGISTERED:
                    acked.add(peer_id)
                ep.unregister(fd)
            if not events:
                for s, msg, _ in waiting.values():
                    s.sendto(msg, ("127.0.0.1", self.port))
        ep.close()
        server.kill9()
        self.assertEqual(len(acked), 300)
        with psycopg.connect(self.url) as conn:
            stored = {i for (i,) in conn.execute("SELECT id FROM peer").fetchall()}
        self.assertLessEqual(acked, stored)

        self.start("--database", self.url)
        self.assertEqual(register(self.port, "127.0.1.1", "900000299", b"x" * 16), UUID_MISMATCH)

    def test_unreachable_database_stops_the_server(self) -> None:
        """The server exits with the reason; the password is in neither output nor log."""
        url = f"postgresql://litedesk:{PASSWORD}@127.0.0.1:{free_port_pair()}/none"
        result = subprocess.run(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.log),
                "litedesk-relay",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--interface",
                "127.0.0.1",
                "--key",
                "",
                "--database",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.assertNotEqual(result.returncode, 0)
        said = result.stdout + result.stderr + (self.log.read_text() if self.log.exists() else "")
        self.assertIn("--database postgresql://litedesk:***@127.0.0.1:", said)
        self.assertNotIn(PASSWORD, said)
