# -*- test-case-name: tests.test_cluster_node -*-
"""PostgreSQL LISTEN/NOTIFY between cluster nodes, off the reactor thread.

Two threads, each with its own autocommit connection (a psycopg connection
is not shared between threads):

- the listener LISTENs on this node's channels and hands every notification
  to the reactor thread (C{callFromThread}); when its connection breaks it
  reconnects with a growing pause and, once listening again, calls
  C{on_listening} so that the node can reload what it may have missed;
- the publisher runs the node's jobs in order: NOTIFYs (a forwarded request,
  an answer) and the periodic work (beats, presence writes), each a
  function of the connection whose result comes back as a Deferred.

Why NOTIFY rather than Redis pub/sub: the nodes already share PostgreSQL, so
it adds no service to run, secure and monitor, and bench/cluster_bus.py
measured the difference per round trip as small beside a punch's own time
(figures in bench/README.rst).  Why not a pool: the jobs are few and small,
and one thread keeps a node's NOTIFYs in the order it made them.

At most L{MAX_QUEUED} jobs wait: while PostgreSQL is unreachable a node
drops what it cannot send (a forwarded request then times out at the
viewer, which retries) instead of growing without bound.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from litedesk.rendezvous.db_url import redact_url
from litedesk.rendezvous.pg_schema import connect

__all__ = ["MAX_QUEUED", "PgBus"]

T = TypeVar("T")

MAX_QUEUED = 10_000
#: Seconds between reconnection attempts: the first, and the most.
RETRY_FIRST = 0.5
RETRY_MAX = 5.0
#: How long the listener waits for a notification before checking whether
#: it should stop.
_POLL = 0.5

_Job = Callable[[psycopg.Connection[Any]], Any]
_Item = tuple[_Job | tuple[str, str], Deferred[Any] | None]
#: NOTIFYs sent in one batch at most: one round trip for all of them
#: (bench/cluster_bus.py: ~150 us of PostgreSQL's CPU for a NOTIFY sent
#: alone, ~23 us in a batch).
NOTIFY_BATCH = 256


class PgBus:
    """NOTIFY out, LISTEN in, for one node.

    @param on_notify: called on the reactor thread with (channel, payload).
    @param on_listening: called on the reactor thread each time the listener
        has (re)connected and LISTENs.
    @param own: payload prefixes of this node's own announcements, not delivered.
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        reactor: IReactorFromThreads,
        channels: list[str],
        on_notify: Callable[[str, str], None],
        on_listening: Callable[[], None],
        own: tuple[str, ...] = (),
    ) -> None:
        self._url = url
        self.url = redact_url(url)
        self._reactor = reactor
        self._channels = channels
        self._on_notify = on_notify
        self._on_listening = on_listening
        # PostgreSQL delivers a node's NOTIFYs to itself too; those starting
        # with one of these prefixes are dropped in the listener thread, so a
        # registration wave does not cost the reactor its own echo.
        self._own = own
        # A job is a function of the connection, or a NOTIFY's (channel, payload).
        self._jobs: queue.Queue[_Item | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Jobs and NOTIFYs refused because L{MAX_QUEUED} were waiting
        #: (C{litedesk_cluster_bus_dropped_total}).
        self.dropped = 0
        self.listening = False

    def start(self) -> None:
        for name, target in (("listener", self._listen), ("publisher", self._publish)):
            t = threading.Thread(target=target, name=f"cluster {name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Ask both threads to stop (they finish within a poll interval)."""
        self._stop.set()
        self._jobs.put(None)

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout)

    # -- reactor thread -----------------------------------------------------

    def notify(self, channel: str, payload: str) -> bool:
        """Queue a NOTIFY; False if too many jobs wait (it is dropped)."""
        return self._queue((channel, payload), None)

    def run(self, job: Callable[[psycopg.Connection[Any]], T]) -> Deferred[T]:
        """Run C{job(connection)} on the publisher thread; its result, or failure."""
        d: Deferred[T] = Deferred()
        if not self._queue(job, d):
            d.errback(OverflowError(f"{MAX_QUEUED} cluster jobs already waiting"))
        return d

    def _queue(self, job: _Job | tuple[str, str], d: Deferred[Any] | None) -> bool:
        if self._stop.is_set() or self._jobs.qsize() >= MAX_QUEUED:
            self.dropped += 1
            return False
        self._jobs.put((job, d))
        return True

    # -- threads ------------------------------------------------------------

    def _take(self, lookahead: list[_Item | None]) -> _Item | list[tuple[str, str]] | None:
        """The next job, or every NOTIFY waiting (up to L{NOTIFY_BATCH}); None: stop.

        An item taken while gathering NOTIFYs that is not one is kept in
        C{lookahead} for the next call, so jobs run in the order they came.
        """
        item = lookahead.pop() if lookahead else self._jobs.get()
        if item is None or not isinstance(item[0], tuple):
            return item
        batch = [item[0]]
        while len(batch) < NOTIFY_BATCH:
            try:
                nxt = self._jobs.get_nowait()
            except queue.Empty:
                break
            if nxt is None or not isinstance(nxt[0], tuple):
                lookahead.append(nxt)
                break
            batch.append(nxt[0])
        return batch

    def _publish(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        pause = RETRY_FIRST
        lookahead: list[_Item | None] = []
        while (work := self._take(lookahead)) is not None:
            d = None if isinstance(work, list) else work[1]
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = connect(self._url)
                result = self._run(conn, work)
            except Exception as e:
                if conn is not None and (conn.closed or conn.broken):
                    conn = None
                self._log.warn(
                    "cluster: a job on {url} failed: {error}", url=self.url, error=repr(e)
                )
                if d is not None:
                    self._reactor.callFromThread(d.errback, e)
                if conn is None:
                    # Unreachable: do not spin through the queue at full speed.
                    self._stop.wait(pause)
                    pause = min(pause * 2, RETRY_MAX)
                continue
            pause = RETRY_FIRST
            if d is not None:
                self._reactor.callFromThread(d.callback, result)
        if conn is not None:
            conn.close()

    @staticmethod
    def _run(conn: psycopg.Connection[Any], work: _Item | list[tuple[str, str]]) -> Any:
        if isinstance(work, list):
            # One round trip for the batch (psycopg pipelines executemany).
            with conn.cursor() as cur:
                cur.executemany("SELECT pg_notify(%s, %s)", work)
            return None
        job = work[0]
        assert not isinstance(job, tuple)
        return job(conn)

    def _listen(self) -> None:
        pause = RETRY_FIRST
        while not self._stop.is_set():
            try:
                with connect(self._url) as conn:
                    for channel in self._channels:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening = True
                    pause = RETRY_FIRST
                    self._reactor.callFromThread(self._on_listening)
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=_POLL):
                            if not n.payload.startswith(self._own):
                                self._reactor.callFromThread(self._on_notify, n.channel, n.payload)
            except Exception as e:
                self.listening = False
                if self._stop.is_set():
                    break
                self._log.warn(
                    "cluster: listening on {url} failed ({error}); retrying in {pause} s",
                    url=self.url,
                    error=repr(e),
                    pause=pause,
                )
                self._stop.wait(pause)
                pause = min(pause * 2, RETRY_MAX)
        self.listening = False
