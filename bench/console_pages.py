#!/usr/bin/env python3
"""The console's operations pages under a big registry: page time over real HTTP.

Issue 16's goal: at 1,000,000 registered hosts a console page takes at most
200 ms.  Like C{bench/api.py} (whose helpers this reuses), this writes a
data directory holding that many peers straight into the peer table, adds
an administrator to the ops database the way C{litedesk-admin user add}
does, starts C{twistd -n litedesk-relay} on loopback ports, brings 5% of
the hosts online by real UDP C{RegisterPk}, signs in through C{/login}
(CSRF cookie and field, session cookie), and then fetches each page in
turn, new connection each time, printing the median and 95th percentile:

  - C{/hosts}: the first page, a page near the end (C{islice} skips in C),
    the online filter, an id-prefix search that matches nothing (the scan
    stops at its limit: the worst case of a search), an exact id;
  - C{/sessions}, C{/audit}, C{/lists} and the dashboard C{/}.

Run: C{python bench/console_pages.py} (1,000,000 peers, 20 fetches each),
or C{--quick} (100,000 peers, 10 fetches).  Last run (1,000,000 peers,
50,000 online), p95: /hosts 9.8 ms, its last page 30.5 ms, online filter
10.6 ms, a search matching nothing 39.5 ms, an exact id 40.5 ms;
/sessions 3.0, /audit 3.4, /lists 4.4, / 4.5 ms (goal <= 200 ms met).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _dir in (ROOT, ROOT / "bench"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from api import (  # noqa: E402
    LOOPBACK,
    bring_online,
    build_data_dir,
    peer_id,
    percentile,
    start_server,
    wait_healthy,
)
from procfs import rss_bytes  # noqa: E402

from litedesk.ops import users  # noqa: E402
from litedesk.ops.opsdb import OPS_DB_FILE, connect, ensure_schema  # noqa: E402
from tests.support.processes import stop_all  # noqa: E402

GOAL_MS = 200.0
ADMIN = "bench"
PASSWORD = "bench password 1"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class Session:
    """A signed-in administrator: cookies kept, one new connection per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, str, float]:
        start = time.perf_counter()
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=60)
        try:
            headers = {}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urllib.parse.urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            text = r.read().decode("utf-8")
            for raw in r.headers.get_all("set-cookie") or []:
                name, _, rest = raw.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        finally:
            conn.close()
        return r.status, text, time.perf_counter() - start

    def sign_in(self) -> None:
        _, page, _ = self.request("GET", "/login")
        m = _CSRF.search(page)
        if m is None:
            raise SystemExit("/login has no CSRF field")
        form = {"name": ADMIN, "password": PASSWORD, "csrf": m.group(1)}
        status, _, _ = self.request("POST", "/login", form)
        if status != 303:
            raise SystemExit(f"sign-in answered {status}")


def add_admin(data_dir: Path) -> None:
    """The administrator, written the way C{litedesk-admin user add --admin} writes it."""
    with contextlib.closing(connect(data_dir / OPS_DB_FILE)) as conn:
        ensure_schema(conn, users.SCHEMA)
        users.add_user(conn, ADMIN, PASSWORD, admin=True)
        conn.commit()


#: The same listener answering its smallest request (no session, no page).
REFERENCE = "/health"


def measure(session: Session, paths: list[str], fetches: int, peers: int) -> None:
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(fetches):
        for path in paths:
            status, body, seconds = session.request("GET", path)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}\n{body[:500]}")
            times[path].append(seconds * 1000)
    print(f"\n{fetches} fetches of each page, in turn, new connection each (ms):")
    width = max(len(p) for p in paths)
    print(f"{'page':{width}} {'median':>8} {'p95':>8} {'max':>8} {'x /health':>10}")
    ref = statistics.median(times[REFERENCE])
    worst = 0.0
    for path, ms in times.items():
        p95 = percentile(ms, 95)
        if path != REFERENCE:
            worst = max(worst, p95)
        median = statistics.median(ms)
        print(f"{path:{width}} {median:8.2f} {p95:8.2f} {max(ms):8.2f} {median / ref:9.1f}x")
    verdict = "met" if worst <= GOAL_MS else "NOT MET"
    print(
        f"goal: every page <= {GOAL_MS:.0f} ms at {peers:,} registered hosts: {verdict} "
        f"(worst p95 {worst:.2f} ms; reference /health on the same listener, same run: "
        f"median {ref:.2f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 peers, 10 fetches")
    parser.add_argument("--peers", type=int, help="registered peers (default 1,000,000)")
    parser.add_argument("--online", type=int, help="hosts brought online (default 5%%)")
    parser.add_argument("--fetches", type=int, help="fetches of each page (default 20)")
    args = parser.parse_args()
    peers = args.peers or (100_000 if args.quick else 1_000_000)
    online = args.online if args.online is not None else peers // 20
    fetches = args.fetches or (10 if args.quick else 20)

    tmp = Path(tempfile.mkdtemp(prefix="litedesk-bench-console-"))
    data_dir = tmp / "server"
    proc = None
    try:
        built = build_data_dir(data_dir, peers)
        print(f"peer database: {peers:,} peers written in {built:.1f} s")
        add_admin(data_dir)
        proc, ports = start_server(data_dir)
        ready = wait_healthy(proc, ports["api"], data_dir)
        print(f"server healthy {ready:.1f} s after start, RSS {rss_bytes(proc.pid) or 0:,} B")
        answered = bring_online(ports["udp"], online)
        print(f"{answered:,} of {online:,} hosts online")
        session = Session(ports["api"])
        session.sign_in()
        paths = [
            REFERENCE,
            "/hosts",
            f"/hosts?start={max(0, peers - 50)}",
            "/hosts?online=1",
            "/hosts?q=999",
            f"/hosts?q={peer_id(peers // 2)}",
            "/sessions",
            "/audit",
            "/lists",
            "/",
        ]
        measure(session, paths, fetches, peers)
    finally:
        if proc is not None:
            stop_all([proc])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
