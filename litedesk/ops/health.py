"""C{GET /health}: is every part the options asked for running?

For load balancers and Docker's HEALTHCHECK: 200 with
C{{"status": "ok", ...}} when all are, 503 with C{"status": "down"} and the
same details when one is not.  The database check runs C{SELECT 1} on its
own short-lived connection in a reactor pool thread, so a locked or stalled
disk makes the check fail (after L{DB_TIMEOUT}) instead of stalling the
reactor.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

if TYPE_CHECKING:
    from litedesk.server.assembly import LiteDeskServer

__all__ = ["DB_TIMEOUT", "HealthResource", "probe_database"]

#: Seconds SQLite may wait for a lock before the check calls the database down.
DB_TIMEOUT = 2.0


def probe_database(path: str) -> bool:
    """C{SELECT 1} from the peer table on a fresh connection (run in a thread)."""
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=DB_TIMEOUT)
        try:
            conn.execute("SELECT 1 FROM peer LIMIT 1").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return True


def _running(service: Any) -> bool | None:
    return None if service is None else bool(service.running)


class HealthResource(Resource):
    """C{/health} for one L{LiteDeskServer}.

    @param db_path: the peer database, or C{None} with C{--relay-only}.
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, top: LiteDeskServer, reactor: Any, db_path: str | None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._top = top
        self._reactor = reactor
        self._db_path = db_path

    @inlineCallbacks
    def report(self) -> Any:
        """Fires with C{(ok, details)}: which parts run, and whether all do."""
        parts: dict[str, bool | None] = {
            "rendezvous": _running(self._top.rendezvous_udp) and _running(self._top.rendezvous_tcp),
            "relay": _running(self._top.relay),
            "database": None,
        }
        pool = self._reactor.getThreadPool()
        store_probe = getattr(self._top.store, "probe", None)
        if self._db_path is not None:
            parts["database"] = yield deferToThreadPool(
                self._reactor, pool, probe_database, self._db_path
            )
        elif store_probe is not None:
            # PostgreSQL (--database): a connection of the store's own pool.
            parts["database"] = yield deferToThreadPool(self._reactor, pool, store_probe)
        cluster = self._top.cluster
        extra: dict[str, Any] = {}
        if cluster is not None:
            # The node hears the others only while its listener is connected.
            parts["cluster"] = cluster.bus.listening
            extra["cluster_nodes_alive"] = cluster.membership.alive_nodes(self._reactor.seconds())
        ok = all(v is not False for v in parts.values())
        details = {"status": "ok" if ok else "down", **parts, **extra}
        return ok, details

    def render_GET(self, request: Any) -> Any:
        d: Deferred[Any] = self.report()

        def answer(result: tuple[bool, dict[str, Any]]) -> None:
            ok, details = result
            if not ok:
                self._log.warn("Health check: a part is down: {details}", details=details)
            request.setResponseCode(200 if ok else 503)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.write(json.dumps(details).encode() + b"\n")
            request.finish()

        def failed(f: Any) -> None:
            self._log.failure("Health check failed", f)
            request.setResponseCode(503)
            request.write(b'{"status": "down"}\n')
            request.finish()

        cancelled: list[bool] = []
        request.notifyFinish().addErrback(lambda _: cancelled.append(True))

        def guard(result: Any, fn: Any) -> None:
            if not cancelled:
                fn(result)

        d.addCallbacks(guard, guard, callbackArgs=(answer,), errbackArgs=(failed,))
        return NOT_DONE_YET
