# -*- test-case-name: tests.test_store -*-
"""The rendezvous server's SQLite peer store, file-compatible with hbbs' C{db_v2.sqlite3}.

The table and indexes are exactly those of hbbs (docs/protocol.rst §5.2) and
are only created when missing, so an operator can point LiteDesk at an existing
hbbs database and every registered peer keeps its id, uuid and public key.
(Copy C{db_v2.sqlite3} together with any C{-wal}/C{-shm} files next to it, or
stop hbbs cleanly first.)

Why a dedicated writer thread with group commit:

  - A registration (C{RegisterPk}) must be durable before it is acknowledged:
    the database runs in WAL mode with C{synchronous=FULL}, so every commit
    waits for an C{fsync} and an acknowledged save survives C{kill -9} and
    power loss.
  - An C{fsync} can take milliseconds to seconds, and the reactor must never
    wait for one.  So all writes go to one daemon thread that owns its own
    connection and takes requests from a queue.
  - Syncing once per registration would cap throughput at the disk's sync
    rate.  Instead the writer takes everything queued (up to C{batch_max}) and
    writes it in one transaction with one commit: under load, a whole batch
    costs one C{fsync}.  Only after that commit does it hand the results back
    to the reactor thread (C{callFromThread}), where each save's Deferred
    fires.
  - The queue is a C{deque} and an C{Event} that is set only when the writer
    may be asleep: a save costs an append, where C{queue.Queue} took a lock
    and notified a condition on both threads for every registration.

If a batch fails, each of its writes is retried in a transaction of its own,
so one bad row fails only its own Deferred; the writer thread keeps running.

Reads happen once, at start-up (L{PeerStore.load_all}): the server keeps every
peer in memory, as hbbs does.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from litedesk.rendezvous.store_sql import apply_all, as_bytes

# hbbs' schema, as in docs/protocol.rst §5.2.  SQLite keeps each statement's
# text (minus "IF NOT EXISTS") in sqlite_master; tests compare it with hbbs'.
SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS peer ("
    "guid BLOB PRIMARY KEY NOT NULL, "
    "id VARCHAR(100) NOT NULL, "
    "uuid BLOB NOT NULL, "
    "pk BLOB NOT NULL, "
    "created_at DATETIME NOT NULL DEFAULT current_timestamp, "
    "user BLOB, "
    "status TINYINT, "
    "note VARCHAR(300), "
    "info TEXT NOT NULL"
    ") WITHOUT ROWID",
    "CREATE UNIQUE INDEX IF NOT EXISTS index_peer_id ON peer (id)",
    "CREATE INDEX IF NOT EXISTS index_peer_user ON peer (user)",
    "CREATE INDEX IF NOT EXISTS index_peer_created_at ON peer (created_at)",
    "CREATE INDEX IF NOT EXISTS index_peer_status ON peer (status)",
)

BUSY_TIMEOUT_MS = 10_000
#: The writer connection's page cache, KiB (PRAGMA cache_size = -CACHE_KIB).
CACHE_KIB = 32 * 1024


class StoreClosed(Exception):
    """A save was attempted after L{PeerStore.close}."""


@dataclass(slots=True)
class PeerRecord:
    """One row of the C{peer} table, as the rendezvous server uses it.

    @ivar guid: 16 bytes chosen by the store on first save (a UUIDv7, see
        L{litedesk.rendezvous.store_sql.new_guids}); C{None}
        until then.
    @ivar id: the RustDesk id.
    @ivar uuid: the device uuid sent in C{RegisterPk}; never changed by an update.
    @ivar pk: the peer's Ed25519 public key.
    @ivar ip: the source IP string, stored as C{info} = C{{"ip": ...}}.
    @ivar renamed_from: for the save of an ID change, the id the row had;
        the row stored under it (whatever its guid) takes the new id.
    """

    guid: bytes | None
    id: str
    uuid: bytes
    pk: bytes
    ip: str
    renamed_from: str = ""


@dataclass(slots=True)
class _Write:
    """A snapshot of a record taken on the reactor thread, so the writer thread
    never reads an object the reactor may be changing.

    Never changed once made; not C{frozen}, whose C{__init__} sets each field
    through C{object.__setattr__}: three times the cost, on every registration.
    """

    guid: bytes | None
    id: str
    uuid: bytes
    pk: bytes
    info: str
    record: PeerRecord
    deferred: Deferred[bytes]
    renamed_from: str = ""

    @classmethod
    def of(cls, record: PeerRecord, deferred: Deferred[bytes]) -> _Write:
        """The snapshot of C{record} whose outcome fires C{deferred}."""
        return cls(
            guid=record.guid,
            id=record.id,
            uuid=record.uuid,
            pk=record.pk,
            info=encode_info(record.ip),
            record=record,
            deferred=deferred,
            renamed_from=record.renamed_from,
        )


# What the writer hands back to the reactor thread: each write with either the
# committed guid or the exception that failed it.
_Outcome = tuple[_Write, bytes | BaseException]


def encode_info(ip: str) -> str:
    """hbbs' C{info} column: compact JSON C{{"ip":"1.2.3.4"}}."""
    # The same text as json.dumps({"ip": ip}, separators=(",", ":")).  An IP
    # as the kernel writes it needs no escaping (printable ASCII, no quote or
    # backslash): then a concatenation, a tenth of json.dumps' cost; anything
    # else (a test's odd string) goes through json.dumps, whose default
    # arguments reuse one encoder.
    if ip.isascii() and ip.isprintable() and '"' not in ip and "\\" not in ip:
        return '{"ip":"' + ip + '"}'
    return '{"ip":' + json.dumps(ip) + "}"


def decode_info(info: object) -> str:
    """The C{ip} of an C{info} value; C{""} for anything unreadable."""
    if isinstance(info, bytes):
        info = info.decode("utf-8", "replace")
    if not isinstance(info, str):
        return ""
    try:
        parsed = json.loads(info)
    except ValueError:
        return ""
    if isinstance(parsed, dict):
        ip = parsed.get("ip")
        if isinstance(ip, str):
            return ip
    return ""


# Kept under its old name: the PostgreSQL store imports it from here.
_as_bytes = as_bytes


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def records_from_rows(rows: Iterable[Sequence[object]]) -> list[PeerRecord]:
    """Peer records from C{SELECT guid, id, uuid, pk, info} rows (SQLite or PostgreSQL)."""
    return [
        PeerRecord(
            guid=_as_bytes(guid),
            id=_as_str(id_),
            uuid=_as_bytes(uuid),
            pk=_as_bytes(pk),
            ip=decode_info(info),
        )
        for guid, id_, uuid, pk, info in rows
    ]


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; the writer issues its own
    # BEGIN IMMEDIATE / COMMIT so that one batch is exactly one transaction.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class PeerStore:
    """hbbs-compatible peer table with durable, non-blocking, group-committed writes.

    Construct it, call L{load_all} once at start-up, then L{save} from the
    reactor thread; call L{close} on shutdown.  All methods must be called on
    the reactor thread.

    @ivar commits: number of transactions committed by the writer thread
        (a batch of many saves counts once).  Updated by the writer thread.
    @ivar journal_mode: the journal mode SQLite reports after asking for WAL.
    @ivar synchronous: the C{PRAGMA synchronous} level of the writer's
        connection (2 = FULL).
    """

    _log = Logger()

    def __init__(self, path: Path, reactor: IReactorFromThreads, *, batch_max: int = 512) -> None:
        """Open (creating if needed) the database and start the writer thread.

        This blocks briefly while the writer opens the file and creates the
        schema, so that a database that cannot be opened fails here.

        @raise sqlite3.Error: the database cannot be opened or set up.
        """
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._path = path
        self._reactor = reactor
        self._batch_max = batch_max
        # Saves for the writer, in order; None asks it to stop.  _wake is set
        # whenever something was queued since the writer last cleared it.
        self._queue: deque[_Write | None] = deque()
        self._wake = threading.Event()
        self._pending = 0
        self._closing = False
        self._closed = False
        self._close_waiters: list[Deferred[None]] = []
        self.commits = 0
        self.journal_mode = ""
        self.synchronous = -1
        self._open_error: BaseException | None = None
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"PeerStore writer {path.name}", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error
        if self.journal_mode != "wal":
            self._log.warn(
                "peer store {path} is in journal mode {mode!r}, not WAL",
                path=str(path),
                mode=self.journal_mode,
            )

    @property
    def pending(self) -> int:
        """Saves queued whose result has not yet been delivered."""
        return self._pending

    def load_all(self) -> list[PeerRecord]:
        """Every peer in the table (synchronous; meant for start-up).

        Rows written by hbbs or by hand load too; an C{info} that is not JSON
        with a string C{ip} gives C{ip=""}.
        """
        conn = _connect(self._path)
        try:
            rows = conn.execute("SELECT guid, id, uuid, pk, info FROM peer").fetchall()
        finally:
            conn.close()
        return records_from_rows(rows)

    def save(self, record: PeerRecord) -> Deferred[bytes]:
        """Insert C{record} (if its guid is C{None}) or update it by guid.

        With C{renamed_from} set (an ID change), the row stored under that id
        is updated instead, id included, and keeps its guid and uuid.

        The record's fields are copied now; later changes to it do not affect
        this save.  The Deferred fires with the row's guid once the
        transaction holding it is committed, or fails (e.g. with a
        C{sqlite3.Error}) if it could not be written.  On success, the
        record's C{guid} is set to that guid before the Deferred fires (unless
        the caller changed C{guid} meanwhile).
        """
        if self._closing:
            return fail(StoreClosed("peer store is closed"))
        d: Deferred[bytes] = Deferred()
        self._pending += 1
        self._enqueue(_Write.of(record, d))
        return d

    def close(self) -> Deferred[None]:
        """Commit every queued write, stop the writer thread, close the database.

        Fires once all earlier saves' Deferreds have fired.  Later saves fail
        with L{StoreClosed}.  Calling it again returns another Deferred for the
        same shutdown.
        """
        d: Deferred[None] = Deferred()
        if self._closed:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            self._enqueue(None)
        return d

    # -- reactor thread -----------------------------------------------------

    def _enqueue(self, item: _Write | None) -> None:
        self._queue.append(item)
        # The writer clears _wake before it drains the queue, so an item
        # appended while _wake was still set is drained by that same pass.
        if not self._wake.is_set():
            self._wake.set()

    def _deliver(self, outcomes: list[_Outcome]) -> None:
        for write, result in outcomes:
            self._pending -= 1
            if isinstance(result, bytes):
                # Unless the caller changed it meanwhile, the record now names
                # the row it was saved to (its new guid, or the guid of the row
                # that already held its id).
                if write.record.guid == write.guid:
                    write.record.guid = result
                write.deferred.callback(result)
            else:
                self._log.warn(
                    "peer store could not save id {id}: {error}", id=write.id, error=repr(result)
                )
                write.deferred.errback(result)

    def _finished(self) -> None:
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    # -- writer thread ------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            conn = self._open()
        except BaseException as e:
            self._open_error = e
            ready.set()
            return
        ready.set()
        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take()
                if batch:
                    outcomes = self._write_batch(conn, batch)
                    self._reactor.callFromThread(self._deliver, outcomes)
        finally:
            try:
                conn.close()
            finally:
                self._reactor.callFromThread(self._finished)

    def _take(self) -> tuple[list[_Write], bool]:
        """The next batch: the queued saves (waiting for one), at most
        C{batch_max}; and whether the stop request was reached."""
        queue = self._queue
        while not queue:
            self._wake.wait()
            self._wake.clear()
        batch: list[_Write] = []
        while queue and len(batch) < self._batch_max:
            item = queue.popleft()
            if item is None:
                return batch, True
            batch.append(item)
        return batch, False

    def _open(self) -> sqlite3.Connection:
        conn = _connect(self._path)
        try:
            # WAL is a property of the file and persists; synchronous is per
            # connection, and FULL makes every commit fsync the WAL, which is
            # what makes an acknowledged save survive power loss.
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = FULL")
            # A page cache that holds the id index's hot pages: ids are random,
            # so with SQLite's default 2 MiB each new peer read a page back
            # from the file (a pread a row under load; bench/rendezvous.py 1b:
            # ~10 % more RegisterPk/s at 30,000 peers).  Filled only as read.
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            (sync,) = conn.execute("PRAGMA synchronous").fetchone()
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        self.journal_mode = str(mode).lower()
        self.synchronous = int(sync)
        return conn

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Write]) -> list[_Outcome]:
        """One transaction for the whole batch; on failure, one per write."""
        try:
            guids = self._transaction(conn, batch)
        except Exception:
            # Retry each write alone (a single write is simply tried again:
            # the failure may have been transient, e.g. a busy timeout).
            return self._write_each(conn, batch)
        return list(zip(batch, guids, strict=True))

    def _write_each(self, conn: sqlite3.Connection, batch: Iterable[_Write]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for write in batch:
            try:
                (guid,) = self._transaction(conn, [write])
            except Exception as e:
                outcomes.append((write, e))
            else:
                outcomes.append((write, guid))
        return outcomes

    def _transaction(self, conn: sqlite3.Connection, writes: list[_Write]) -> list[bytes]:
        try:
            conn.execute("BEGIN IMMEDIATE")
            guids = apply_all(conn, writes)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return guids
