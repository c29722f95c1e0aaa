"""Durable registrations per second: the PostgreSQL peer store against SQLite, same run.

Run from the repository root (needs Debian's postgresql and psycopg)::

    .venv/bin/python bench/pg_store.py [--quick] [--json FILE]

A throwaway PostgreSQL cluster (tests/support/postgres.py: initdb in a temp
dir, fsync and synchronous_commit on) is started and removed at the end.

1. In-process: saves of new peers straight into each store
   (litedesk/rendezvous/store.py and pg_store.py), C{--window} saves
   outstanding at once as under a registration wave, each counted when its
   Deferred has fired, i.e. after COMMIT.  PostgreSQL with one writer
   thread (the default) and with two.  Rounds alternate the stores and the
   median of each is reported, with the CPU per save of this process and
   PostgreSQL together (the figure that does not depend on what else the
   machine runs).
2. Through the real server: a C{litedesk-relay} on each store (pinned to
   core 1, this process on core 0; PostgreSQL itself is not pinned), on
   PostgreSQL with one writer and with two, in alternating rounds; ids
   registered by real UDP C{RegisterPk} with bench/rendezvous.py's
   C{register_range} (a reply is only sent after the commit); rate and the
   CPU per registration of the server and of PostgreSQL.

The issue's goal: RegisterPk >= 5,000/s durable with PostgreSQL.

Last full run (2 cores shared with other engineers' runs, load average
~3.3; psycopg 3.3.9 pure-Python implementation, as the test extra installs
it), medians of 3 alternating rounds:

  in-process: SQLite 5,133 saves/s (86 us CPU/save), PostgreSQL one writer
  8,926/s (65 us; 1.74 x SQLite), two writers 8,658/s (68 us; 1.69 x);
  through the server (30,000 RegisterPk, 512 outstanding): SQLite 4,781/s
  (116 us CPU each), PostgreSQL one writer 6,850/s (server 80-85 us +
  PostgreSQL 18-27 us; 1.43 x SQLite), two writers 5,558/s (1.16 x).
  Goal >= 5,000/s with PostgreSQL: met by the default (one writer).

Before the never-saved-peers fast path (pg_statements.py), a statement per
save cost ~70 us of pure-Python client CPU per row and PostgreSQL reached
only 0.7-1.0 x SQLite through the server; psycopg's C implementation
(psycopg-binary) cut that to ~18 us.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procfs import family_cpu_seconds  # noqa: E402
from rendezvous import (  # noqa: E402
    CLIENT_CORE,
    LOOPBACK,
    SERVER_CORE,
    Children,
    Servers,
    _free_tcp_ports,
    free_port,
    pinned,
    raise_nofile,
    register_range,
    wait_ready,
)

from litedesk.rendezvous.pg_store import PgPeerStore  # noqa: E402
from litedesk.rendezvous.store import PeerRecord, PeerStore  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

GOAL = 5000.0


class Pump:
    """The stores' C{callFromThread}, run on this thread (no reactor needed)."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Any, tuple[Any, ...]]] = queue.Queue()

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.put((f, args))

    def run_one(self, timeout: float = 60.0) -> None:
        f, args = self.calls.get(timeout=timeout)
        f(*args)


def postgres_cpu(cluster: PostgresCluster) -> float:
    """CPU seconds of the cluster's postmaster and every process it started."""
    return family_cpu_seconds(int((cluster.data / "postmaster.pid").read_text().split()[0]))


def drive(store: Any, pump: Pump, first: int, n: int, window: int) -> tuple[float, int]:
    """Save ids first..first+n-1 with C{window} outstanding; (seconds, failures)."""
    done = [0, 0]

    def ok(_: object) -> None:
        done[0] += 1

    def bad(_: object) -> None:
        done[0] += 1
        done[1] += 1

    sent = 0
    start = time.perf_counter()
    while done[0] < n:
        while sent < n and sent - done[0] < window:
            rec = PeerRecord(
                None, f"{first + sent:09d}", os.urandom(16), os.urandom(32), "10.1.2.3"
            )
            store.save(rec).addCallbacks(ok, bad)
            sent += 1
        pump.run_one()
    return time.perf_counter() - start, done[1]


KINDS = ("sqlite", "postgresql 1 writer", "postgresql 2 writers")


def _open(kind: str, cluster: PostgresCluster, tmp: Path, r: int, pump: Pump) -> Any:
    if kind == "sqlite":
        return PeerStore(tmp / f"inproc{r}.sqlite3", pump)  # type: ignore[arg-type]
    writers = int(kind.split()[1])
    url = cluster.create_database(f"inproc{r}w{writers}")
    return PgPeerStore(url, pump, writers=writers)  # type: ignore[arg-type]


def in_process(
    cluster: PostgresCluster, tmp: Path, n: int, window: int, rounds: int
) -> dict[str, Any]:
    print(f"\n1. In-process: {n:,} new peers per round, {window} outstanding, {rounds} rounds each")
    pump = Pump()
    rates: dict[str, list[float]] = {k: [] for k in KINDS}
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in KINDS:
            store = _open(kind, cluster, tmp, r, pump)
            cpu0 = time.process_time() + postgres_cpu(cluster)
            seconds, failed = drive(store, pump, 0, n, window)
            used = time.process_time() + postgres_cpu(cluster) - cpu0
            closed = store.close()
            while not closed.called:
                pump.run_one()
            if failed:
                raise RuntimeError(f"{kind}: {failed} saves failed")
            rates[kind].append(n / seconds)
            cpu[kind].append(used / n * 1e6)
            print(
                f"  round {r + 1} {kind:<24} {n / seconds:>7,.0f} saves/s, "
                f"{used / n * 1e6:4.0f} us CPU per save (this process + PostgreSQL), "
                f"{store.commits} commits"
            )
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    for k in KINDS:
        print(
            f"  median {k:<24} {med[k]:>7,.0f}/s ({med[k] / med['sqlite']:.2f} x SQLite); "
            f"{med_cpu[k]:.0f} us CPU per save: {1e6 / med_cpu[k]:,.0f}/s per core"
        )
    return {"rates": rates, "cpu_us": cpu, "median": med, "median_cpu_us": med_cpu}


# twistd with PgPeerStore's WRITERS (argv[1]) set first: the server's own
# default is what --database uses; this measures the alternatives.
WRITERS_PATCH = (
    "import sys; import litedesk.rendezvous.pg_store as p; "
    "p.WRITERS = int(sys.argv.pop(1)); "
    "from twisted.scripts.twistd import run; run()"
)


def start_server(
    children: Children, tmp: Path, name: str, writers: int, cluster: bool = False
) -> Servers:
    """A litedesk-relay (no relay, no API) pinned to SERVER_CORE, ready.

    The peer store is whatever C{$LITEDESK_DATABASE} names (SQLite if unset);
    with C{cluster}, the server is one node of a cluster on it (each commit
    also NOTIFYs its rows to the other nodes, docs/cluster.rst).
    """
    data_dir = tmp / name
    data_dir.mkdir()
    udp = free_port(socket.SOCK_DGRAM)
    tcp, nat, ws = _free_tcp_ports(3)
    argv = [
        *(sys.executable, "-c", WRITERS_PATCH, str(writers)),
        *("-n", "--pidfile=", f"--logfile={data_dir / 'twistd.log'}", "litedesk-relay"),
        *("--data-dir", str(data_dir), "--udp-endpoint", f"udp:{udp}:interface={LOOPBACK}"),
        *("--tcp-endpoint", f"tcp:{tcp}:interface={LOOPBACK}"),
        *("--nat-endpoint", f"tcp:{nat}:interface={LOOPBACK}"),
        *("--ws-endpoint", f"tcp:{ws}:interface={LOOPBACK}"),
        *("--udp-rate-per-ip", "0", "--key", "-", "--no-relay", "--no-api"),
    ]
    if cluster:
        argv += ["--cluster", "--node-id", name, "--advertise", f"{LOOPBACK}:{udp}"]
    child = children.start(name, pinned(SERVER_CORE, argv), tmp / f"{name}.stderr", cwd=data_dir)
    servers = Servers(child, udp, tcp, data_dir, ws)
    wait_ready(servers)
    return servers


SERVER_KINDS = {
    "sqlite": 0,
    "postgresql 1 writer": 1,
    "postgresql 2 writers": 2,
    "postgresql --cluster": 1,
}


def _one_server_run(
    cluster: PostgresCluster, tmp: Path, kind: str, r: int, n: int, window: int
) -> dict[str, float]:
    writers = SERVER_KINDS[kind]
    if writers:
        # Through the environment, as an operator would (out of ps).
        os.environ["LITEDESK_DATABASE"] = cluster.create_database(
            f"server{r}k{list(SERVER_KINDS).index(kind)}"
        )
    else:
        os.environ.pop("LITEDESK_DATABASE", None)
    children = Children()
    try:
        server = start_server(
            children,
            tmp,
            f"server{r}-{writers}-{len(kind)}",
            max(1, writers),
            cluster=kind.endswith("--cluster"),
        )
        pg0 = postgres_cpu(cluster)
        reg = register_range(server, 0, n, 20, window=window)
        pg_us = (postgres_cpu(cluster) - pg0) / max(1, reg.ok) * 1e6 if writers else 0.0
    finally:
        os.environ.pop("LITEDESK_DATABASE", None)
        children.stop_all()
    print(
        f"  round {r + 1} {kind:<21} {reg.ok:,}/{n:,} in {reg.seconds:.2f} s: "
        f"{reg.rate:>6,.0f} RegisterPk/s, server CPU {reg.cpu_us_per_id:.0f} us each "
        f"(+ PostgreSQL {pg_us:.0f} us), slowest ack {reg.max_ack_ms:.0f} ms"
    )
    return {"ok": reg.ok, "rate": reg.rate, "server_cpu_us": reg.cpu_us_per_id, "pg_us": pg_us}


def through_server(
    cluster: PostgresCluster, tmp: Path, n: int, window: int, rounds: int
) -> dict[str, Any]:
    print(f"\n2. Through litedesk-relay: {n:,} ids by UDP RegisterPk, window {window}")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in SERVER_KINDS}
    for r in range(rounds):
        for kind in SERVER_KINDS:
            runs[kind].append(_one_server_run(cluster, tmp, kind, r, n, window))
    med = {k: statistics.median(x["rate"] for x in v) for k, v in runs.items()}
    for k, rate in med.items():
        cpu = statistics.median(x["server_cpu_us"] + x["pg_us"] for x in runs[k])
        print(
            f"  median {k:<21} {rate:>6,.0f}/s ({rate / med['sqlite']:.2f} x SQLite), "
            f"{cpu:.0f} us CPU each (server + PostgreSQL)"
        )
    print(f"  goal: >= {GOAL:,.0f}/s with PostgreSQL")
    return {"runs": runs, "median": med}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer ids and rounds")
    p.add_argument("--window", type=int, default=1024, help="saves outstanding (in-process)")
    p.add_argument(
        "--server-window", type=int, default=512, help="RegisterPk outstanding (server part)"
    )
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    import psycopg

    print(f"psycopg {psycopg.__version__}, {psycopg.pq.__impl__} implementation")
    n_inproc, rounds, n_server = (20_000, 1, 10_000) if args.quick else (100_000, 3, 30_000)
    raise_nofile()
    os.sched_setaffinity(0, {CLIENT_CORE})
    tmp = Path(tempfile.mkdtemp(prefix="bench-pg-store-"))
    cluster = PostgresCluster()
    try:
        figures = {
            "in_process": in_process(cluster, tmp, n_inproc, args.window, rounds),
            "server": through_server(cluster, tmp, n_server, args.server_window, rounds),
        }
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
