"""What forwarding costs a punch: a viewer asking the host's own node against another node.

Run from the repository root (needs Debian's postgresql and psycopg)::

    .venv/bin/python bench/cluster_punch.py [--quick] [--json FILE]

A throwaway PostgreSQL (tests/support/postgres.py) and two
C{twistd litedesk-relay --cluster} nodes on it, A and B, on loopback.  A fake
host registers on A over UDP and answers every C{PunchHole} A pushes with a
C{PunchHoleSent} on a new TCP connection to A, as RustDesk hosts do.  A
viewer sends C{PunchHoleRequest}s on new TCP connections, in alternating
blocks to A (the host's node: answered locally, the reference) and to B
(forwarded to A over LISTEN/NOTIFY and the answer sent back the same way),
and times each from connect to C{PunchHoleResponse}.  Printed: p50 and p99
of both and the ratio, and what forwarding adds at p50 in milliseconds.

Nothing is pinned: the nodes, PostgreSQL and this process share the cores,
as they would on one small machine; the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from tests.support.ports import free_port_pair
from tests.support.postgres import PostgresCluster

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
HOST_IP = "127.0.0.2"
PEER_ID = "477000001"


def _recv_message(s: socket.socket, dec: FrameDecoder) -> rz.RendezvousMessage:
    while True:
        for frame in dec.feed(s.recv(65536) or b""):
            msg = rz.RendezvousMessage()
            msg.ParseFromString(frame)
            if msg.WhichOneof("union") != "key_exchange":
                return msg


def start_node(tmp: Path, name: str, port: int, url: str) -> subprocess.Popen[bytes]:
    data = tmp / name
    if name != "a":
        data.mkdir()
        for f in ("id_ed25519", "id_ed25519.pub"):
            shutil.copy2(tmp / "a" / f, data / f)
    argv = [
        *TWISTD,
        *("-n", "--pidfile=", "--logfile", str(tmp / f"{name}.log"), "litedesk-relay"),
        *("--data-dir", str(data), "--port", str(port), "--interface", "127.0.0.1"),
        *("--key", "", "--no-websocket", "--no-api", "--database", url),
        *("--cluster", "--node-id", name, "--advertise", f"127.0.0.1:{port}"),
        # The bench asks far faster than a person: no per-address limit.
        *("--request-rate-per-ip", "100000"),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.2)
    deadline = time.monotonic() + 30
    beat = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="(:probe:)"))
    while True:
        probe.sendto(beat.SerializeToString(), ("127.0.0.1", port))
        try:
            probe.recv(100)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {name} did not start (see {tmp / name}.log)") from None
    probe.close()
    return proc


class FakeHost(threading.Thread):
    """Registered on node A; answers each push at once, on a new TCP connection."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST_IP, 0))
        self.sock.settimeout(5)
        pk = rz.RegisterPk(id=PEER_ID, uuid=b"bench-host-uuid1", pk=bytes([7]) * 32)
        for msg in (
            rz.RendezvousMessage(register_pk=pk),
            rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=PEER_ID)),
        ):
            self.sock.sendto(msg.SerializeToString(), ("127.0.0.1", port))
            self.sock.recv(100)
        self.stopping = False

    def heartbeat(self) -> None:
        beat = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id=PEER_ID))
        self.sock.sendto(beat.SerializeToString(), ("127.0.0.1", self.port))

    def run(self) -> None:
        self.sock.settimeout(0.5)
        while not self.stopping:
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            msg = rz.RendezvousMessage()
            msg.ParseFromString(data)
            if msg.WhichOneof("union") != "punch_hole":
                continue
            sent = rz.PunchHoleSent(
                socket_addr=msg.punch_hole.socket_addr,
                id=PEER_ID,
                nat_type=rz.ASYMMETRIC,
                version="1.4.9",
            )
            with socket.create_connection(
                ("127.0.0.1", self.port), source_address=(HOST_IP, 0)
            ) as c:
                c.sendall(
                    encode_frame(rz.RendezvousMessage(punch_hole_sent=sent).SerializeToString())
                )


def punch(port: int) -> float:
    """Seconds from connect to the PunchHoleResponse."""
    req = rz.RendezvousMessage(punch_hole_request=rz.PunchHoleRequest(id=PEER_ID))
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode_frame(req.SerializeToString()))
        resp = _recv_message(s, FrameDecoder()).punch_hole_response
    elapsed = time.perf_counter() - t0
    if not resp.socket_addr:
        raise RuntimeError(f"punch via {port} failed: {resp}")
    return elapsed


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def measure(n: int, block: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-punch-"))
    pg = PostgresCluster()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = pg.create_database("cluster_punch")
        ports = {"a": free_port_pair()}
        while abs((b := free_port_pair()) - ports["a"]) < 8:
            pass
        ports["b"] = b
        procs.append(start_node(tmp, "a", ports["a"], url))
        procs.append(start_node(tmp, "b", ports["b"], url))
        host = FakeHost(ports["a"])
        host.start()
        time.sleep(3)  # B reads A's row and hears the host's arrival
        for name in "ab":  # warm-up, and B must forward by now
            for _ in range(20):
                punch(ports[name])
        times: dict[str, list[float]] = {"a": [], "b": []}
        last_beat = time.monotonic()
        while len(times["b"]) < n:
            for name in "ab":
                for _ in range(block):
                    times[name].append(punch(ports[name]))
            if time.monotonic() - last_beat > 10:
                host.heartbeat()
                last_beat = time.monotonic()
        host.stopping = True
        forwarded = (tmp / "b.log").read_text().count("forwarded to its cluster node")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out: dict[str, Any] = {}
    for name, label in (("a", "local (host's node)"), ("b", "forwarded (other node)")):
        xs = times[name]
        out[name] = {"p50_ms": statistics.median(xs) * 1e3, "p99_ms": _pct(xs, 0.99) * 1e3}
        print(
            f"  {label:<24} p50 {out[name]['p50_ms']:6.2f} ms  p99 {out[name]['p99_ms']:6.2f} ms"
            f"  ({len(xs)} punches)"
        )
    ratio = out["b"]["p50_ms"] / out["a"]["p50_ms"]
    print(
        f"  forwarded / local: {ratio:.2f} x at p50 (+{out['b']['p50_ms'] - out['a']['p50_ms']:.2f}"
        f" ms), {out['b']['p99_ms'] / out['a']['p99_ms']:.2f} x at p99"
    )
    print(
        f"  (node B logged {forwarded} forwarded requests; its log line budget may hold some back)"
    )
    out["ratio_p50"] = ratio
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="200 punches each instead of 1,000")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    n = 200 if args.quick else 1000
    print(f"Punch latency through a two-node cluster, {n} punches per node in blocks of 50")
    figures = measure(n, 50)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
