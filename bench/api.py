#!/usr/bin/env python3
"""The operations listener under a big registry: C{/metrics} scrape time.

Issue 16's goal: at 1,000,000 registered hosts a C{/metrics} scrape takes at
most 50 ms.  This benchmark writes a server data directory holding that
many peers straight into the SQLite peer table (one transaction, hbbs'
schema from L{litedesk.rendezvous.store.SCHEMA}), starts C{twistd -n
litedesk-relay} on it on loopback ports, brings some of the hosts online
(a C{RegisterPk} each by UDP, from the address their row names, so nothing
is written), then fetches C{/metrics} and C{/health} the same way, in
alternation, and prints the median and 95th percentile of each, their
ratio and the goal.  Then it waits for the online hosts to fall silent and
times the one scrape that drops them all from the online count (its worst
case: the count is kept as hosts register, and a scrape drops those gone
silent since the last one).  C{/health} is the reference: the same listener and
HTTP stack answering a small request (its database probe is one
C{SELECT 1} in a pool thread), so the ratio shows what the collector
itself costs.

Run: C{python bench/api.py} (1,000,000 peers, 20 scrapes each), or
C{--quick} (100,000 peers, 10 scrapes).  API heartbeats are measured by
C{bench/api_heartbeat.py}, console pages by C{bench/console_pages.py}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _dir in (ROOT, ROOT / "bench"):
    if str(_dir) not in sys.path:
        sys.path.insert(0, str(_dir))

from procfs import cpu_seconds, rss_bytes  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from litedesk.proto import rendezvous_pb2 as rz  # noqa: E402
from litedesk.rendezvous.registry import REG_TIMEOUT  # noqa: E402
from litedesk.rendezvous.store import SCHEMA, encode_info  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import TWISTD, stop_all  # noqa: E402
from tests.support.xvfb import _die_with_parent  # noqa: E402

GOAL_MS = 50.0
LOOPBACK = "127.0.0.1"
#: Hosts sharing one source address: under the rendezvous server's
#: RegisterPk limit per address (30 a minute, hbbs' IP blocker).
HOSTS_PER_IP = 10
UUID = b"bench-uuid-0001!"
PK = bytes(range(32))


def peer_id(i: int) -> str:
    return str(100_000_000 + i)


def host_ip(i: int) -> str:
    """The loopback address host C{i} registers from (and its row names)."""
    k = i // HOSTS_PER_IP
    return f"127.{1 + k // 65536}.{k // 256 % 256}.{k % 256}"


def build_data_dir(data_dir: Path, peers: int) -> float:
    """C{peers} rows in a fresh peer database, in one transaction; seconds taken."""
    start = time.monotonic()
    data_dir.mkdir(mode=0o700, parents=True)
    db = data_dir / "db_v2.sqlite3"
    os.close(os.open(db, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA[0])  # the table; its indexes after the rows (faster)
        rows = (
            (i.to_bytes(16, "big"), peer_id(i), UUID, PK, encode_info(host_ip(i)))
            for i in range(peers)
        )
        with conn:
            conn.executemany("INSERT INTO peer (guid, id, uuid, pk, info) VALUES (?,?,?,?,?)", rows)
        for statement in SCHEMA[1:]:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
    return time.monotonic() - start


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    ports = {
        "udp": free_port(socket.SOCK_DGRAM),
        "tcp": free_port(),
        "nat": free_port(),
        "relay": free_port(),
        "api": free_port(),
    }
    argv = [
        *TWISTD,
        "-n",
        "--pidfile=",
        f"--logfile={data_dir / 'twistd.log'}",
        "litedesk-relay",
        "--data-dir",
        str(data_dir),
        "--key",
        "",
        "--udp-endpoint",
        f"udp:{ports['udp']}:interface={LOOPBACK}",
        "--tcp-endpoint",
        f"tcp:{ports['tcp']}:interface={LOOPBACK}",
        "--nat-endpoint",
        f"tcp:{ports['nat']}:interface={LOOPBACK}",
        "--relay-endpoint",
        f"tcp:{ports['relay']}:interface={LOOPBACK}",
        "--api-endpoint",
        f"tcp:{ports['api']}:interface={LOOPBACK}",
        "--no-websocket",
        "--udp-rate-per-ip",
        "0",
    ]
    proc = subprocess.Popen(
        argv,
        cwd=data_dir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir / "twistd.stderr").open("wb"),
        preexec_fn=_die_with_parent,
    )
    return proc, ports


def get(port: int, path: str) -> tuple[int, bytes, float]:
    """GET on a new connection: status, body, seconds from connect to last byte."""
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=30) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    return status, body, time.perf_counter() - start


def wait_healthy(proc: subprocess.Popen[bytes], port: int, data_dir: Path) -> float:
    start = time.monotonic()
    while time.monotonic() - start < 600:
        if proc.poll() is not None:
            raise SystemExit(f"twistd exited:\n{(data_dir / 'twistd.log').read_text()[-3000:]}")
        try:
            status, body, _ = get(port, "/health")
        except OSError:
            time.sleep(0.2)
            continue
        if status == 200 and json.loads(body)["status"] == "ok":
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy within 600 s")


def gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise KeyError(name)


def bring_online(udp_port: int, hosts: int) -> int:
    """A RegisterPk for hosts 0..hosts-1, each from the address its row names.

    The hosts of one address at a time, then their answers (a burst of all
    would overflow the server's socket buffer); a group with answers missing
    is sent again, within the server's limit per address.  Returns how many
    were answered OK.
    """
    ok = 0
    for first in range(0, hosts, HOSTS_PER_IP):
        group = [
            rz.RendezvousMessage(
                register_pk=rz.RegisterPk(id=peer_id(i), uuid=UUID, pk=PK)
            ).SerializeToString()
            for i in range(first, min(first + HOSTS_PER_IP, hosts))
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host_ip(first), 0))
            sock.settimeout(0.5)
            good = 0
            for _ in range(2):
                for data in group:
                    sock.sendto(data, (LOOPBACK, udp_port))
                answers: list[rz.RendezvousMessage] = []
                try:
                    while len(answers) < len(group):
                        answers.append(rz.RendezvousMessage.FromString(sock.recv(1500)))
                except TimeoutError:
                    pass
                good = sum(
                    a.register_pk_response.result == rz.RegisterPkResponse.OK for a in answers
                )
                if len(answers) == len(group):
                    ok += good
                    break
            else:
                ok += good
    return ok


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def measure(port: int, scrapes: int, pid: int, peers: int) -> None:
    """Fetch /metrics and /health C{scrapes} times each, alternating; print the figures."""
    times: dict[str, list[float]] = {"/metrics": [], "/health": []}
    cpu_before = cpu_seconds(pid)
    for _ in range(scrapes):
        for path, out in times.items():
            status, _, seconds = get(port, path)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}")
            out.append(seconds)
    cpu = cpu_seconds(pid) - cpu_before

    print(f"\n{scrapes} fetches of each, alternating, new connection each (ms):")
    print(f"{'path':10} {'median':>8} {'p95':>8} {'max':>8}")
    for path, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"{path:10} {statistics.median(ms):8.2f} {percentile(ms, 95):8.2f} {max(ms):8.2f}")
    metrics_ms = statistics.median(times["/metrics"]) * 1000
    health_ms = statistics.median(times["/health"]) * 1000
    p95 = percentile(times["/metrics"], 95) * 1000
    print(f"ratio /metrics / /health (medians): {metrics_ms / health_ms:.2f}x")
    print(f"server CPU during the fetches: {cpu:.2f} s")
    verdict = "met" if p95 <= GOAL_MS else "NOT MET"
    print(
        f"goal: /metrics <= {GOAL_MS:.0f} ms at {peers:,} registered hosts: {verdict} "
        f"(p95 {p95:.2f} ms)"
    )


def after_silence(port: int, online: int, registered: float) -> None:
    """The one scrape that drops every host gone silent since the last (the worst case)."""
    wait = registered + REG_TIMEOUT + 1 - time.monotonic()
    print(f"\nwaiting {max(wait, 0):.0f} s for the {online:,} online hosts to go silent...")
    time.sleep(max(wait, 0))
    status, body, seconds = get(port, "/metrics")
    if status != 200:
        raise SystemExit(f"/metrics: HTTP {status}")
    left = gauge(body.decode(), "litedesk_hosts_online")
    print(
        f"first /metrics after {online:,} hosts went silent: {seconds * 1000:.2f} ms "
        f"(hosts online now {left:,.0f}); the next: {get(port, '/metrics')[2] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 peers, 10 scrapes")
    parser.add_argument("--peers", type=int, help="registered peers (default 1,000,000)")
    parser.add_argument("--online", type=int, help="hosts brought online (default 5%%)")
    parser.add_argument("--scrapes", type=int, help="fetches of each path (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--no-silence",
        action="store_true",
        help="skip the scrape after the online hosts went silent (saves 30 s)",
    )
    args = parser.parse_args()
    peers = args.peers or (100_000 if args.quick else 1_000_000)
    online = args.online if args.online is not None else peers // 20
    scrapes = args.scrapes or (10 if args.quick else 20)

    tmp = Path(tempfile.mkdtemp(prefix="litedesk-bench-api-"))
    data_dir = tmp / "server"
    proc = None
    try:
        built = build_data_dir(data_dir, peers)
        size = (data_dir / "db_v2.sqlite3").stat().st_size
        print(f"peer database: {peers:,} peers, {size / 2**20:.0f} MiB, written in {built:.1f} s")
        proc, ports = start_server(data_dir)
        ready = wait_healthy(proc, ports["api"], data_dir)
        print(f"server healthy {ready:.1f} s after start, RSS {rss_bytes(proc.pid) or 0:,} B")
        start = time.monotonic()
        answered = bring_online(ports["udp"], online)
        registered = time.monotonic()
        print(f"{answered:,} of {online:,} hosts registered in {time.monotonic() - start:.1f} s")
        _, body, _ = get(ports["api"], "/metrics")
        text = body.decode()
        seen_online = gauge(text, "litedesk_hosts_online")
        seen_peers = gauge(text, "litedesk_peers_registered")
        print(f"/metrics reads {seen_peers:,.0f} peers registered, {seen_online:,.0f} online")

        measure(ports["api"], scrapes, proc.pid, peers)
        if not args.no_silence:
            after_silence(ports["api"], answered, registered)
    finally:
        if proc is not None:
            stop_all([proc])
        if args.keep:
            print(f"data directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
