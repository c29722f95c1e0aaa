"""Node-to-node messages: PostgreSQL LISTEN/NOTIFY against Redis pub/sub, with TCP as reference.

Issue 17 item 3: cluster nodes forward punch and relay requests (and their
answers) to the node that holds the host, "through PostgreSQL LISTEN/NOTIFY
or Redis pub/sub: measure both and choose".  This script is that
measurement.  Run from the repository root::

    .venv/bin/python bench/cluster_bus.py [--quick] [--rounds N] [--json FILE]

It needs Debian's postgresql (started in a temp dir by
tests/support/postgres.py), Debian's redis-server (started by this script on
a free loopback port, nothing saved) and the Python client ``redis``, which
LiteDesk itself does not depend on: ``apt install postgresql redis-server;
.venv/bin/pip install redis``.

Two nodes are two forked processes, each run as a cluster node would run its
bus: a listener connection read by a blocking thread (psycopg: autocommit,
``LISTEN``, ``conn.notifies()``; redis-py: ``pubsub.subscribe`` and
``get_message``) that hands each message to the node's main thread through a
queue, as a node hands it to the reactor, and a publisher connection used by
the main thread (``SELECT pg_notify(%s, %s)`` on an autocommit connection;
``PUBLISH``).  Payloads are ~300 bytes, a base64 RendezvousMessage's size.

1. Round trip: node 1 publishes to node 2's channel, node 2 answers on node
   1's; p50/p99 over sequential round trips after a warm-up.  A forwarded
   punch crosses the bus twice (request there, answer back), so this is what
   forwarding adds to a punch.
2. One-way throughput: node 1 publishes one message after another for a few
   seconds (each publish waits only for its own acknowledgement, not for node
   2); counted as received by node 2 per second, with the CPU per message of
   both nodes and of the broker (PostgreSQL's processes or redis-server).

Reference, same run: the same two processes, threads and queues over a
plain TCP loopback connection (4-byte length prefix).  PostgreSQL runs with
the test cluster's settings (fsync and synchronous_commit on); that costs a
NOTIFY nothing: a transaction that wrote no WAL before its commit record is
not flushed synchronously (PostgreSQL's RecordTransactionCommit), and a run
with ``SET synchronous_commit = off`` on the publisher measured the same.
Both clients are pure Python here (no psycopg-binary, no hiredis), as the
product's venv installs them.  Rounds alternate the backends; medians are
printed.  Nothing is pinned: the two nodes and the broker share the cores.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import importlib.util
import json
import multiprocessing
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_bus_links import CHANNELS, Link, open_link  # noqa: E402
from procfs import cpu_seconds, family_cpu_seconds  # noqa: E402

from tests.support.ports import free_port  # noqa: E402

BACKENDS = ("tcp", "notify", "redis")
LABELS = {
    "tcp": "TCP loopback",
    "notify": "PostgreSQL NOTIFY",
    "redis": "Redis pub/sub",
}
# ~300 bytes with the 8-character header: a base64 RendezvousMessage's size.
BODY = base64.b64encode(bytes(range(216))).decode()
PUNCH_ON_ONE_NODE_MS = 1.0  # bench/rendezvous.py's punch p50, order of magnitude
BATCH = 32  # messages per exchange in the batched throughput phase
NEEDS = "apt install postgresql redis-server; .venv/bin/pip install redis"


def node_main(backend: str, role: int, where: Any, pipe: Connection) -> None:
    """One node process: its link, its inbox, then node 1 drives and node 2 answers."""
    link = open_link(backend, role, where)
    inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
    link.listen(inbox.put)
    if backend != "tcp":
        # Subscribed once our own message comes back; before that a peer's
        # message could be lost (Redis keeps nothing for absent subscribers).
        link.send(CHANNELS[role], "p")
        if inbox.get(timeout=10) != "p":
            raise RuntimeError("self-check message did not come back")
    pipe.send("ready")
    try:
        (drive if role == 1 else answer)(link, inbox, pipe)
    finally:
        link.close()


def drive(link: Link, inbox: queue.SimpleQueue[str], pipe: Connection) -> None:
    """Node 1: the parent's ("rtt", n, warm-up), ("tput", seconds, batch), ("quit",)."""
    peer = CHANNELS[2]
    while True:
        cmd = pipe.recv()
        if cmd[0] == "rtt":
            samples = []
            for i in range(cmd[1] + cmd[2]):
                t0 = time.perf_counter()
                link.send(peer, f"r{i:06d}:{BODY}")
                reply = inbox.get(timeout=10)
                if reply[1:7] != f"{i:06d}":
                    raise RuntimeError(f"unexpected answer {reply[:40]!r}")
                if i >= cmd[2]:
                    samples.append(time.perf_counter() - t0)
            pipe.send(samples)
        elif cmd[0] == "tput":
            sent, batch = 0, cmd[2]
            start = time.perf_counter()
            end = start + cmd[1]
            while time.perf_counter() < end:
                if batch == 1:
                    link.send(peer, f"t{sent:06d}:{BODY}")
                else:
                    link.send_many(peer, [f"t{sent + k:06d}:{BODY}" for k in range(batch)])
                sent += batch
            link.send(peer, "e")
            pipe.send((sent, time.perf_counter() - start))
        else:
            link.send(peer, "q")
            return


def answer(link: Link, inbox: queue.SimpleQueue[str], pipe: Connection) -> None:
    """Node 2: answers "r" messages on node 1's channel, counts "t" until "e"."""
    back = CHANNELS[1]
    count, first, last = 0, 0.0, 0.0
    while True:
        try:
            msg = inbox.get(timeout=15)
        except queue.Empty:
            # Messages stopped without an "e": report what arrived.
            if count:
                pipe.send((count, first, last, "incomplete: the end marker never came"))
                count = 0
            continue
        kind = msg[0]
        if kind == "r":
            link.send(back, "a" + msg[1:])
        elif kind == "t":
            last = time.perf_counter()
            if not count:
                first = last
            count += 1
        elif kind == "e":
            pipe.send((count, first, time.perf_counter(), ""))
            count = 0
        elif kind == "!":
            pipe.send((count, first, last, msg[1:]))
            return
        elif kind == "q":
            return


class Broker:
    """The servers the buses run on; L{cpu} is the broker's CPU for a backend."""

    def __init__(self, tmp: Path) -> None:
        from tests.support.postgres import PostgresCluster

        self.pg = PostgresCluster()
        self.url = self.pg.create_database("bus")
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(tmp)),
            ],
            stdout=(tmp / "redis.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        redis: Any = importlib.import_module("redis")
        client = redis.Redis(host="127.0.0.1", port=self.redis_port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def where(self, backend: str) -> Any:
        if backend == "tcp":
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            return sock
        return self.redis_port if backend == "redis" else self.url

    def cpu(self, backend: str) -> float:
        if backend == "redis":
            return cpu_seconds(self.redis.pid)
        if backend == "tcp":
            return 0.0
        master = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        return family_cpu_seconds(master)

    def stop(self) -> None:
        self.redis.terminate()
        self.redis.wait(10)
        self.pg.stop()


def one_round(broker: Broker, backend: str, n: int, seconds: float) -> dict[str, Any]:
    """Start two nodes on C{backend}, measure the round trip then the throughput."""
    ctx = multiprocessing.get_context("fork")
    where = broker.where(backend)
    nodes, pipes = [], []
    for role in (1, 2):
        mine, theirs = ctx.Pipe()
        p = ctx.Process(target=node_main, args=(backend, role, where, theirs), daemon=True)
        p.start()
        nodes.append(p)
        pipes.append(mine)
    try:
        for pipe in pipes:
            if not pipe.poll(30):
                raise RuntimeError(f"{backend}: a node did not start")
            pipe.recv()
        pipes[0].send(("rtt", n, max(50, n // 10)))
        if not pipes[0].poll(120):
            raise RuntimeError(f"{backend}: round trips did not finish")
        rtt = sorted(pipes[0].recv())
        out = {
            "p50_ms": rtt[len(rtt) // 2] * 1e3,
            "p99_ms": rtt[min(len(rtt) - 1, int(len(rtt) * 0.99))] * 1e3,
        }
        for batch in (1, BATCH):
            figures = throughput(broker, backend, nodes, pipes, seconds, batch)
            out.update({f"{k}_b{batch}": v for k, v in figures.items()})
        pipes[0].send(("quit",))
    finally:
        for p in nodes:
            p.join(10)
            if p.is_alive():
                p.kill()
        if backend == "tcp":
            where.close()
    return out


def throughput(
    broker: Broker, backend: str, nodes: list[Any], pipes: list[Connection], s: float, batch: int
) -> dict[str, Any]:
    """Node 1 publishes for C{s} seconds, C{batch} messages per exchange; node 2 counts."""

    def cpu() -> tuple[float, float]:
        return sum(cpu_seconds(p.pid or 0) for p in nodes), broker.cpu(backend)

    c0 = cpu()
    pipes[0].send(("tput", s, batch))
    sent, send_time = pipes[0].recv()
    # The receiver may still be draining the broker's backlog.
    if not pipes[1].poll(120):
        raise RuntimeError(f"{backend}: the receiver reported nothing")
    got, first, last, problem = pipes[1].recv()
    c1 = cpu()
    return {
        "sent_per_s": sent / send_time,
        "received_per_s": got / max(last - first, 1e-9),
        "lost": sent - got,
        "problem": problem,
        "node_cpu_us": (c1[0] - c0[0]) / max(got, 1) * 1e6,
        "broker_cpu_us": (c1[1] - c0[1]) / max(got, 1) * 1e6,
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, str):
            out[key] = "; ".join(sorted({r[key] for r in rounds if r[key]}))
        else:
            out[key] = statistics.median(r[key] for r in rounds)
    return out


def report(med: dict[str, dict[str, Any]]) -> None:
    """The figures side by side, each as a ratio to TCP from the same run."""
    tcp = med["tcp"]

    def cell(b: str, key: str, fig: str) -> str:
        return fig if b == "tcp" else f"{fig} {med[b][key] / tcp[key]:.2f}x"

    print(f"\n{'round trip':<31} {'p50':>19} {'p99':>19}")
    for b, m in med.items():
        p50 = cell(b, "p50_ms", f"{m['p50_ms']:.3f} ms")
        p99 = cell(b, "p99_ms", f"{m['p99_ms']:.3f} ms")
        print(f"{LABELS[b]:<31} {p50:>19} {p99:>19}")
    for batch in (1, BATCH):
        what = "one at a time" if batch == 1 else f"{batch} per exchange"
        print(f"\none-way, {what:<22} {'msgs/s received':>19} {'CPU/msg: nodes, broker':>24}")
        for b, m in med.items():
            rate = cell(b, f"received_per_s_b{batch}", f"{m[f'received_per_s_b{batch}']:,.0f}")
            cpu = f"{m[f'node_cpu_us_b{batch}']:.0f} us, {m[f'broker_cpu_us_b{batch}']:.0f} us"
            print(f"{LABELS[b]:<31} {rate:>19} {cpu:>24}")
            if m[f"lost_b{batch}"] or m[f"problem_b{batch}"]:
                print(f"  lost {m[f'lost_b{batch}']:.0f} messages {m[f'problem_b{batch}']}")
    print("(ratios: x TCP loopback in the same run)")
    print("\nCost per forwarded punch = 1 RTT (request to the host's node, answer back):")
    for b in BACKENDS[1:]:
        ms = med[b]["p50_ms"]
        print(
            f"  {LABELS[b]:<22} {ms:.3f} ms p50 = {ms / tcp['p50_ms']:.1f}x TCP"
            f" = {ms / PUNCH_ON_ONE_NODE_MS:.2f}x a punch on one node (~1 ms)"
        )
    pg, rd = med["notify"], med["redis"]
    print(
        f"Redis against NOTIFY: RTT p50 {rd['p50_ms'] / pg['p50_ms']:.2f}x, one-way "
        f"{rd['received_per_s_b1'] / pg['received_per_s_b1']:.2f}x one at a time, "
        f"{rd[f'received_per_s_b{BATCH}'] / pg[f'received_per_s_b{BATCH}']:.2f}x batched"
    )


def missing() -> str:
    """What this machine lacks for the benchmark, or ""."""
    lacks = []
    if shutil.which("redis-server") is None:
        lacks.append("redis-server")
    for module in ("redis", "psycopg"):
        if importlib.util.find_spec(module) is None:
            lacks.append(f"the Python module {module}")
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        lacks.append("PostgreSQL")
    return ", ".join(lacks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="500 round trips, 1 s throughput")
    ap.add_argument("--rounds", type=int, help="rounds per backend (default 3, quick 1)")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    lacks = missing()
    if lacks:
        print(f"cluster_bus.py needs {lacks}: {NEEDS}", file=sys.stderr)
        return 2
    n, seconds = (500, 1.0) if args.quick else (2000, 3.0)
    rounds = args.rounds or (1 if args.quick else 3)
    tmp = Path(tempfile.mkdtemp(prefix="litedesk-bus-"))
    results: dict[str, list[dict[str, Any]]] = {b: [] for b in BACKENDS}
    broker = Broker(tmp)
    try:
        print(f"{n:,} round trips, {seconds:g} s one-way, {rounds} round(s) per backend")
        for r in range(rounds):
            for b in BACKENDS:
                m = one_round(broker, b, n, seconds)
                results[b].append(m)
                print(
                    f"  round {r + 1} {LABELS[b]:<22} p50 {m['p50_ms']:.3f} ms "
                    f"p99 {m['p99_ms']:.3f} ms; msgs/s received {m['received_per_s_b1']:,.0f}"
                    f" one at a time, {m[f'received_per_s_b{BATCH}']:,.0f} in batches"
                )
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    med = {b: medians(v) for b, v in results.items()}
    report(med)
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": results, "median": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
