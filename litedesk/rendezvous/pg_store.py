# -*- test-case-name: tests.test_pg_store -*-
"""The rendezvous server's PostgreSQL peer store (C{--database postgresql://...}).

The same contract as the SQLite L{litedesk.rendezvous.store.PeerStore}, which
stays the default: L{PgPeerStore.load_all} once at start-up,
L{PgPeerStore.save} acknowledged only after the transaction holding it has
committed, L{PgPeerStore.close} on shutdown.  The table has hbbs' columns
(C{guid, id, uuid, pk, created_at, user, status, note, info}; C{bytea} for its
BLOBs) and indexes (L{litedesk.rendezvous.pg_schema}), created when missing, so that
C{litedesk-admin migrate} can copy an hbbs or LiteDesk SQLite file row for row
(L{litedesk.rendezvous.pg_migrate}).

Why writer threads with group commit, and not each save in a thread pool:
a durable save is cheap only when many share one commit, and one peer's
saves must reach the table in the order the reactor made them (a
C{RegisterPk} then an ID change).  There is one writer by default
(C{WRITERS}: more did not pay in bench/pg_store.py); with several, each owns
a queue and a device's saves always go to the same one (by its uuid), with
ID changes as fences (L{PgPeerStore.save}).  A writer takes everything
queued (up to C{batch_max}) and writes it in one transaction with a few
statements (L{litedesk.rendezvous.pg_statements}), then hands the guids back
to the reactor thread only after C{COMMIT} has returned; the server runs
with C{synchronous_commit = on}, so a committed save is in PostgreSQL's
flushed WAL.  If a batch fails, each of its saves is retried in a
transaction of its own, so one bad row fails only its own Deferred.

Connections come from a C{psycopg_pool} pool and are checked before each use.
A batch whose connection breaks (PostgreSQL restarted) is tried once more on
a new one; while PostgreSQL cannot be reached, saves fail (logged, not
acknowledged: the peer registers again) and the store carries on, holding at
most C{MAX_PENDING} waiting saves.

The URL's password must never reach a log: C{redact_url} is what is logged,
and the option can come from the environment (C{LITEDESK_DATABASE}) so that it
stays out of C{ps} (L{litedesk.rendezvous.peer_db}).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from litedesk.rendezvous.db_url import redact_url
from litedesk.rendezvous.pg_schema import (
    CONNECT_TIMEOUT,
    configure,
    connect,
    create_schema,
    route_psycopg_log,
)
from litedesk.rendezvous.pg_statements import write_all
from litedesk.rendezvous.store import (
    PeerRecord,
    StoreClosed,
    _Outcome,
    _Write,
    records_from_rows,
)

__all__ = ["PgPeerStore", "StoreOverloaded"]

# Writer threads.  One commits a batch, waits for the WAL flush, then takes
# the next; several overlap one's flush with another's writing, but share
# the server's GIL with each other and the reactor.  In bench/pg_store.py's
# last full run, through the server, one gave 6,850 RegisterPk/s and two
# 5,558 (in-process 8,926 and 8,658 saves/s), so one it is; more may pay
# where PostgreSQL is far away and a commit mostly waits (not measured).
WRITERS = 1

# Saves waiting at most (memory: ~0.5 KiB each): a registration wave of a
# whole large site fits; an outage of PostgreSQL does not grow the queue for
# ever.
MAX_PENDING = 100_000

#: Seconds /health waits for a connection before it calls the database down.
PROBE_TIMEOUT = 2.0


class StoreOverloaded(Exception):
    """A save refused because L{MAX_PENDING} saves are already waiting."""


class _ConnectionLost(psycopg.OperationalError):
    """The connection broke during a transaction (PostgreSQL restarted or gone)."""


class PgPeerStore:
    """hbbs' peer table in PostgreSQL with durable, group-committed writes.

    Construct it, call L{load_all} once at start-up, then L{save} from the
    reactor thread; call L{close} on shutdown.  All methods must be called on
    the reactor thread.

    @ivar url: the database URL with its password redacted (L{redact_url}).
    @ivar commits: transactions committed by the writer threads.
    @ivar synchronous_commit: the setting on the writers' connections.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        *,
        batch_max: int = 512,
        writers: int = WRITERS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """Connect, create the table if missing, start the writer threads.

        This blocks while it connects, so that a database that cannot be
        reached fails here with the reason.

        @param max_pending: saves that may wait at once; more fail with
            L{StoreOverloaded}.
        @param writers: writer threads, each with its own connection and
            queue; a device's saves always go to the same one (L{save}).
        @raise psycopg.Error: the database cannot be reached or set up.
        """
        if batch_max < 1 or writers < 1:
            raise ValueError("batch_max and writers must be at least 1")
        self.url = redact_url(url)
        route_psycopg_log()
        self._reactor = reactor
        self._batch_max = batch_max
        with connect(url) as conn:
            self.synchronous_commit = create_schema(conn)
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=writers + 1,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT)},
            configure=configure,
            check=ConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT,
            name="litedesk-peer-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except BaseException:
            self._pool.close()
            raise
        if psycopg.pq.__impl__ == "python":
            self._log.warn(
                "peer store {url}: psycopg runs its pure-Python implementation, which costs "
                "more CPU per save than its C one (pip install 'psycopg[binary]')",
                url=self.url,
            )
        self._queues: list[queue.Queue[_Write | None]] = [queue.Queue() for _ in range(writers)]
        self._pending = 0
        self._max_pending = max_pending
        self._in_flight = 0  # handed to a writer, not yet delivered
        self._held: deque[_Write] = deque()  # waiting behind an ID change
        self._fence = False  # an ID change is in flight
        self._stopping = False  # the writers were told to stop
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        self._lock = threading.Lock()
        self._running = writers
        self.commits = 0
        #: With --cluster: the NOTIFYs (channel, payload) announcing committed
        #: rows, sent in the transaction that writes them, so that they are
        #: delivered exactly when the rows are committed.  Called on a writer
        #: thread with snapshots only.  Set, it also makes the writes strict:
        #: an id another device holds is refused (IdTaken), not written over.
        self.announce: Callable[[list[PeerRecord]], list[tuple[str, str]]] | None = None
        for n, q in enumerate(self._queues):
            threading.Thread(
                target=self._run, args=(q,), name=f"PgPeerStore writer {n}", daemon=True
            ).start()

    @property
    def pending(self) -> int:
        """Saves queued whose result has not yet been delivered."""
        return self._pending

    def probe(self) -> bool:
        """Can a connection of the pool run C{SELECT 1}?  Blocking: call in a thread."""
        try:
            with self._pool.connection(timeout=PROBE_TIMEOUT) as conn:
                conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout):
            return False
        return True

    def load_all(self) -> list[PeerRecord]:
        """Every peer in the table (synchronous; meant for start-up)."""
        with self._pool.connection() as conn, conn.cursor(binary=True) as cur:
            rows = cur.execute("SELECT guid, id, uuid, pk, info FROM peer").fetchall()
        return records_from_rows(rows)

    def save(self, record: PeerRecord) -> Deferred[bytes]:
        """As L{PeerStore.save<litedesk.rendezvous.store.PeerStore.save>}.

        The Deferred fires with the row's guid after COMMIT, or fails (e.g.
        with a C{psycopg.Error}) if the save could not be written.

        The writer is chosen by the device's uuid, which the registry never
        changes for a stored id (not even in an ID change): so one device's
        saves reach the table in the order they were made, while other
        devices' are committed beside them.  An ID change frees an id that
        another device may take at once, so it is a fence: it is handed to
        a writer only once every earlier save is committed, and later saves
        only once it is (ID changes are rare; registrations meanwhile wait a
        commit or two).
        """
        if self._closing:
            return fail(StoreClosed("peer store is closed"))
        if self._pending >= self._max_pending:
            # PostgreSQL is away or far behind: refuse (the peer is told and
            # registers again) rather than queue without bound.
            return fail(StoreOverloaded(f"{self._pending} saves already waiting"))
        d: Deferred[bytes] = Deferred()
        self._pending += 1
        write = _Write.of(record, d)
        if self._held or self._fence or (write.renamed_from and self._in_flight):
            self._held.append(write)
        else:
            self._dispatch(write)
        return d

    def _dispatch(self, write: _Write) -> None:
        self._in_flight += 1
        if write.renamed_from:
            self._fence = True
        writer = hash(write.uuid) % len(self._queues) if len(self._queues) > 1 else 0
        self._queues[writer].put(write)

    def _release(self) -> None:
        """Hand held saves to the writers, up to the next fence."""
        if self._in_flight == 0:
            self._fence = False
        while self._held and not self._fence:
            if self._held[0].renamed_from and self._in_flight:
                break
            self._dispatch(self._held.popleft())
        if self._closing and not self._held and not self._stopping:
            self._stopping = True
            for q in self._queues:
                q.put(None)

    def close(self) -> Deferred[None]:
        """Commit every queued save, stop the writer threads, close the pool."""
        d: Deferred[None] = Deferred()
        if self._closed:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            self._release()
        return d

    # -- reactor thread -----------------------------------------------------

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        self._in_flight -= len(outcomes)
        for write, result in outcomes:
            self._pending -= 1
            if isinstance(result, bytes):
                if write.record.guid == write.guid:
                    write.record.guid = result
                write.deferred.callback(result)
            else:
                self._log.warn(
                    "peer store {url} could not save id {id}: {error}",
                    url=self.url,
                    id=write.id,
                    error=repr(result),
                )
                write.deferred.errback(result)
        self._release()

    def _finished(self) -> None:
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    # -- writer thread ------------------------------------------------------

    def _run(self, q: queue.Queue[_Write | None]) -> None:
        try:
            stopping = False
            while not stopping:
                batch: list[_Write] = []
                item = q.get()
                while item is not None:
                    batch.append(item)
                    if len(batch) >= self._batch_max:
                        break
                    try:
                        item = q.get_nowait()
                    except queue.Empty:
                        break
                stopping = item is None
                if batch:
                    self._reactor.callFromThread(self._deliver, self._write_batch(batch))
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                try:
                    self._pool.close()
                finally:
                    self._reactor.callFromThread(self._finished)

    def _write_batch(self, batch: list[_Write]) -> list[_Outcome]:
        """One transaction for the whole batch; on failure, one per save.

        A lost connection (PostgreSQL restarted) gets one more try of the
        whole batch on a new one; if PostgreSQL cannot be reached, the batch
        fails at once rather than once per save, each after a timeout.
        """
        for attempt in (1, 2):
            try:
                guids = self._transaction(batch)
            except (PoolTimeout, _ConnectionLost) as e:
                if attempt == 2 or isinstance(e, PoolTimeout):
                    return [(w, e) for w in batch]
            except Exception:
                return list(self._write_each(batch))
            else:
                return list(zip(batch, guids, strict=True))
        raise AssertionError("unreachable")

    def _write_each(self, batch: Iterable[_Write]) -> Iterable[_Outcome]:
        unreachable: Exception | None = None
        for write in batch:
            if unreachable is not None:
                yield write, unreachable
                continue
            try:
                (guid,) = self._transaction([write])
            except (PoolTimeout, _ConnectionLost) as e:
                unreachable = e
                yield write, e
            except Exception as e:
                yield write, e
            else:
                yield write, guid

    def _announce(self, cur: psycopg.Cursor[Any], writes: list[_Write], guids: list[bytes]) -> None:
        assert self.announce is not None
        records = [
            PeerRecord(guid, w.id, w.uuid, w.pk, w.record.ip, renamed_from=w.renamed_from)
            for w, guid in zip(writes, guids, strict=True)
        ]
        for channel, payload in self.announce(records):
            cur.execute("SELECT pg_notify(%s, %s)", (channel, payload))

    def _transaction(self, writes: list[_Write]) -> list[bytes]:
        guids: list[bytes] = []
        with self._pool.connection() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    guids = write_all(cur, writes, strict=self.announce is not None)
                    if self.announce is not None:
                        self._announce(cur, writes, guids)
            except psycopg.Error as e:
                if conn.broken or conn.closed:
                    # Not these saves' fault; whether a COMMIT in flight
                    # took effect is unknown, so they are not acknowledged.
                    raise _ConnectionLost(str(e)) from e
                raise
        # Leaving conn.transaction() has sent COMMIT and it has returned: with
        # synchronous_commit on, the saves are durable.
        with self._lock:
            self.commits += 1
        return guids
