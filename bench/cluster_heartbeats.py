"""Heartbeats/s of two rendezvous nodes against one, the load from a third process.

Run from the repository root, one benchmark at a time on the machine::

    flock /tmp/bench.lock .venv/bin/python bench/cluster_heartbeats.py [--quick] [--json FILE]

Issue 17's goals: two nodes >= 1.7 x one node's heartbeats/s, each node
pinned to its own core and the load from a third process; and with
PostgreSQL, heartbeats unchanged (they touch no database).

The machine has two cores, so the load generator shares core 0 with node A.
It is bench/heartbeat_load.c, compiled with cc into a temporary directory at
run time: it sends the heartbeats (C{RegisterPeer} for ids registered
beforehand, each from the 127.x.y.z address that registered it) with UDP
GSO and sendmmsg, receives the replies with recvmmsg and keeps a fixed
window unanswered per node (closed loop), at ~3 us of its CPU per heartbeat
against ~13 us for a node, and prints its own CPU, which is shown beside
every figure with the softirq time (loopback delivery, charged to no
process): what it takes from node A's core.  bench/README.rst has the
figures and why two/one stays below 1.7 x on two cores, echo included.

1. One vs two: node B alone on core 1 (generator on core 0), then node A on
   core 0 and node B on core 1 together; the ratio two/one.  Reference in
   the same run: a minimal Twisted UDP echo server in the same places under
   the same generator, so the printout shows what this machine can do at all
   ("echo two/one = 1.44 x ...; litedesk two/one = 1.54 x ...").  The nodes are
   C{twistd -n litedesk-relay --no-relay --udp-rate-per-ip 0} on SQLite.
2. PostgreSQL (Debian's, started by tests/support/postgres.py): one node on
   SQLite against one node on PostgreSQL (C{--database postgresql://...}),
   heartbeats/s; and, when C{litedesk-relay} has C{--cluster}, two nodes
   started as a cluster sharing one database (C{--cluster --node-id A
   --advertise 127.0.0.1:PORT}), one vs two.  Without C{--cluster} the
   two-node figure is part 1's, on separate SQLite data directories, and
   the printout says so.  With C{--cluster}, also one node under heartbeats
   whose serial is behind the cluster's (hosts that have not taken the new
   serial from a NAT test yet).

Each node has its own hosts (ids 0..N-1 on A, N..2N-1 on B, registered by
UDP C{RegisterPk} with bench/rendezvous.py's C{register_range}, 30 ids per
source address for the per-IP limit).  Figures are medians of C{--rounds}
rounds; every subprocess is stopped on exit.  With
C{LITEDESK_BENCH_PROFILE=DIR} every node runs under cProfile and leaves
C{DIR/<name>.prof}, as in bench/rendezvous.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from heartbeat_trials import (  # noqa: E402
    GENERATOR_CORE,
    Config,
    Target,
    build_generator,
    compare,
    prime,
    two_over_one,
)
from rendezvous import (  # noqa: E402
    ECHO_SERVER,
    HEARTBEAT_REPLY,
    IDS_PER_ADDRESS,
    LOOPBACK,
    PROFILE_ENV,
    PROFILE_WRAP,
    VENV_BIN,
    Children,
    Servers,
    check_heartbeat_replies,
    free_port,
    heartbeat,
    peer_id,
    pinned,
    raise_nofile,
    raise_priority,
    register_range,
    restore_autogroup,
    source_address,
    tcp_connect,
    wait_ready,
)

from litedesk.proto import rendezvous_pb2 as rz  # noqa: E402
from litedesk.wire.bytescodec import FrameDecoder, encode_frame  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

CORE = {"A": 0, "B": 1}  # each node's (and each echo's) core
ADDR_BASE = {"A": 10, "B": 30}  # second octet of the addresses of each node's hosts
GOAL_TWO_NODES = 1.7


# -- processes --------------------------------------------------------------------


def port_free_both() -> int:
    """A loopback port free for UDP and TCP (a node's rendezvous port is both, as 21116)."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port


def cluster_available() -> bool:
    """Whether this litedesk-relay has the lead's C{--cluster} option (issue 17)."""
    out = subprocess.run(
        [str(VENV_BIN / "twistd"), "litedesk-relay", "--help"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    ).stdout
    return "--cluster" in out


def start_node(
    children: Children,
    tmp: Path,
    name: str,
    core: int,
    *,
    database: str = "",
    node_id: str | None = None,
) -> Servers:
    """A litedesk-relay (no relay, no API) on core C{core}, ready.

    @param database: C{--database} (empty: SQLite in its data directory).
    @param node_id: run as this node of a cluster (needs a PostgreSQL C{database}).
    """
    data_dir = tmp / name
    data_dir.mkdir()
    port = port_free_both()
    nat, ws = (port_free_both() for _ in range(2))
    twistd = [str(VENV_BIN / "twistd")]
    if os.environ.get(PROFILE_ENV):  # as in bench/rendezvous.py: DIR/<name>.prof
        out = Path(os.environ[PROFILE_ENV]).resolve() / f"{name}.prof"
        twistd = [sys.executable, "-c", PROFILE_WRAP, str(out)]
    argv = [
        *(*twistd, "-n", "--pidfile=", f"--logfile={data_dir / 'twistd.log'}"),
        *("litedesk-relay", "--data-dir", str(data_dir), "--database", database),
        *("--udp-endpoint", f"udp:{port}:interface={LOOPBACK}"),
        *("--tcp-endpoint", f"tcp:{port}:interface={LOOPBACK}"),
        *("--nat-endpoint", f"tcp:{nat}:interface={LOOPBACK}"),
        *("--ws-endpoint", f"tcp:{ws}:interface={LOOPBACK}"),
        *("--udp-rate-per-ip", "0", "--key", "-", "--no-relay", "--no-api"),
    ]
    if node_id is not None:
        argv += ["--cluster", "--node-id", node_id, "--advertise", f"{LOOPBACK}:{port}"]
    child = children.start(name, pinned(core, argv), tmp / f"{name}.stderr", cwd=data_dir)
    servers = Servers(child, port, port, data_dir, ws)
    wait_ready(servers)
    return servers


def start_echo(children: Children, tmp: Path, name: str, core: int) -> Servers:
    """bench/rendezvous.py's Twisted UDP echo server on core C{core}."""
    script = tmp / "echo_server.py"
    script.write_text(ECHO_SERVER)
    child = children.start(name, pinned(core, [sys.executable, str(script)]), tmp / f"{name}.log")
    udp, tcp = (int(p) for p in child.read_line(20).split())
    return Servers(child, udp, tcp)


# -- hosts ----------------------------------------------------------------------


def first_id(node: str, cfg: Config) -> int:
    return 0 if node == "A" else cfg.ids


def register(server: Servers, node: str, cfg: Config) -> None:
    """Register node C{node}'s hosts on C{server} and check that a heartbeat is known."""
    first, base = first_id(node, cfg), ADDR_BASE[node]
    reg = register_range(server, first, cfg.ids, base, window=128)
    print(
        f"  {server.child.name}: registered {reg.ok:,} of {cfg.ids:,} ids in {reg.seconds:.1f} s "
        f"({reg.retries} retries, {reg.refused} refused, {reg.failed} failed)",
        flush=True,
    )
    probe = heartbeat(peer_id(first))  # serial 3: 3a00 also asks for no ConfigUpdate here
    reply = check_heartbeat_replies(server.udp, source_address(base, 0), probe)
    if reply != HEARTBEAT_REPLY:
        raise RuntimeError(f"{server.child.name}: heartbeat answered {reply.hex()}, not 3a00")


def server_serial(server: Servers) -> int:
    """The node's ConfigUpdate serial, learnt as clients learn it (TCP TestNatRequest).

    A heartbeat with an older serial asks for a ConfigUpdate every time
    (docs/protocol.rst §5.3); clients catch up with the serial in their NAT
    test's answer, so the steady state has heartbeats with the node's serial.
    """
    request = rz.RendezvousMessage(test_nat_request=rz.TestNatRequest(serial=0))
    with tcp_connect(LOOPBACK, server.tcp) as sock:
        sock.sendall(encode_frame(request.SerializeToString()))
        decoder = FrameDecoder()
        for _ in range(16):
            data = sock.recv(65536)
            if not data:
                break
            for frame in decoder.feed(data):
                msg = rz.RendezvousMessage()
                msg.ParseFromString(frame)
                if msg.WhichOneof("union") == "test_nat_response":
                    return int(msg.test_nat_response.cu.serial)
    raise RuntimeError(f"{server.child.name}: no TestNatResponse")


class HeartbeatFiles:
    """The generator's input: a file per node's hosts and client serial, written once."""

    def __init__(self, tmp: Path, cfg: Config) -> None:
        self.tmp = tmp
        self.cfg = cfg

    def __call__(self, node: str, serial: int) -> Path:
        path = self.tmp / f"heartbeats-{node}-{serial}.bin"
        if not path.exists():
            write_heartbeats(path, node, self.cfg, serial)
        return path


def write_heartbeats(path: Path, node: str, cfg: Config, serial: int) -> None:
    """Node C{node}'s heartbeats for the generator: (address, length, datagram) records.

    Each address's ids go out in runs of C{cfg.gso} (one GSO send each); the
    runs of all addresses are interleaved, so consecutive sends come from
    different hosts' addresses.
    """
    first, base = first_id(node, cfg), ADDR_BASE[node]
    groups = [
        (socket.inet_aton(source_address(base, k)), range(lo, min(lo + IDS_PER_ADDRESS, cfg.ids)))
        for k, lo in enumerate(range(0, cfg.ids, IDS_PER_ADDRESS))
    ]
    out = bytearray()
    for run in range(0, IDS_PER_ADDRESS, cfg.gso):
        for addr, ids in groups:
            for i in ids[run : run + cfg.gso]:
                msg = rz.RegisterPeer(id=peer_id(first + i), serial=serial)
                payload = rz.RendezvousMessage(register_peer=msg).SerializeToString()
                out += addr + bytes([len(payload)]) + payload
    path.write_bytes(bytes(out))


def node_target(server: Servers, node: str, files: HeartbeatFiles) -> Target:
    """C{server} under node C{node}'s hosts' heartbeats, with the serial it hands out."""
    return Target(server, files(node, server_serial(server)))


# -- parts ----------------------------------------------------------------------


def part_one_vs_two(
    children: Children, tmp: Path, exe: Path, cfg: Config, files: HeartbeatFiles
) -> dict[str, Any]:
    print(f"\n== 1. Heartbeats/s, one node vs two (SQLite; {cfg.ids:,} hosts per node)")
    echo = {n: start_echo(children, tmp, f"echo-{n}", CORE[n]) for n in ("A", "B")}
    nodes = {n: start_node(children, tmp, f"node-{n}", CORE[n]) for n in ("A", "B")}
    for n, node in nodes.items():
        register(node, n, cfg)
    ea, eb = (Target(echo[n], files(n, 0), echo=True) for n in "AB")
    la, lb = (node_target(nodes[n], n, files) for n in "AB")
    prime(exe, cfg, [la, lb])
    result = compare(
        exe,
        cfg,
        {"echo one": [eb], "echo two": [ea, eb], "litedesk one": [lb], "litedesk two": [la, lb]},
        "part 1",
    )
    for e in echo.values():
        children.stop(e.child)
    echo_ratio, echo_share = two_over_one(result, "echo one", "echo two")
    ld_ratio, ld_share = two_over_one(result, "litedesk one", "litedesk two")
    med = result["median_per_s"]
    print(
        f"  echo two/one = {echo_ratio:.2f} x ({med['echo two']:,.0f} / {med['echo one']:,.0f}/s, "
        f"generator {echo_share:.0%} of core 0); litedesk two/one = {ld_ratio:.2f} x "
        f"({med['litedesk two']:,.0f} / {med['litedesk one']:,.0f}/s, generator "
        f"{ld_share:.0%} of core 0); goal >= {GOAL_TWO_NODES} x"
    )
    result.update(echo_ratio=echo_ratio, litedesk_ratio=ld_ratio, nodes=nodes)
    return result


def part_postgresql(
    children: Children,
    tmp: Path,
    exe: Path,
    cfg: Config,
    files: HeartbeatFiles,
    sqlite_b: Servers,
) -> dict[str, Any]:
    print("\n== 2. PostgreSQL: heartbeats/s on SQLite vs PostgreSQL, and a cluster of two")
    pg = PostgresCluster()
    started: list[Servers] = []
    try:
        url = pg.create_database("single")
        started.append(start_node(children, tmp, "pg-node-B", CORE["B"], database=url))
        register(started[0], "B", cfg)
        on_pg = node_target(started[0], "B", files)
        prime(exe, cfg, [on_pg])
        setups = {"SQLite one": [node_target(sqlite_b, "B", files)], "PostgreSQL one": [on_pg]}
        single = compare(exe, cfg, setups, "part 2a")
        ratio, _ = two_over_one(single, "SQLite one", "PostgreSQL one")
        print(f"  PostgreSQL / SQLite, one node = {ratio:.2f} x (goal: unchanged, 1.0)")
        out: dict[str, Any] = {"single": single, "postgresql_over_sqlite": ratio}
        if not cluster_available():
            print(
                "  two nodes on one PostgreSQL database: this litedesk-relay has no --cluster "
                "yet; the two-node figure is part 1's (separate SQLite data directories)"
            )
            return out
        children.stop(started[0].child)
        shared = pg.create_database("cluster")
        for n in ("A", "B"):
            member = start_node(children, tmp, f"cluster-{n}", CORE[n], database=shared, node_id=n)
            started.append(member)
            register(member, n, cfg)
        pair = [node_target(started[1], "A", files), node_target(started[2], "B", files)]
        prime(exe, cfg, pair)
        setups = {"cluster one": pair[1:], "cluster two": pair}
        serial = server_serial(started[2])
        if serial > 0:
            # Hosts that have not caught up with the cluster's serial yet.
            stale = Target(started[2], files("B", serial - 1))
            setups[f"one, serial {serial - 1}"] = [stale]
        two = compare(exe, cfg, setups, "part 2b")
        ratio, share = two_over_one(two, "cluster one", "cluster two")
        print(
            f"  cluster on PostgreSQL: two/one = {ratio:.2f} x (generator {share:.0%} of core 0); "
            f"goal >= {GOAL_TWO_NODES} x"
        )
        out.update(cluster=two, cluster_ratio=ratio)
        return out
    finally:
        for node in started:
            children.stop(node.child)
        pg.stop()


def config(args: argparse.Namespace) -> Config:
    quick = args.quick
    return Config(
        ids=args.ids or (10_000 if quick else 20_000),
        warmup=0.5 if quick else 1.0,
        seconds=2.0 if quick else 4.0,
        rounds=args.rounds or (1 if quick else 3),
        window=args.window,
        sockets=4,
        tick_us=args.tick_us,
        gso=args.gso,
        generator_nice=args.generator_nice,
        generator_fifo=args.generator_fifo,
        generator_pinned=not args.generator_unpinned,
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="10,000 hosts per node, one round")
    p.add_argument("--ids", type=int, default=0, help="hosts per node (20,000; quick 10,000)")
    p.add_argument("--rounds", type=int, default=0, help="rounds of every setup (3; quick 1)")
    p.add_argument(
        "--window",
        type=int,
        default=128,
        help="heartbeats unanswered per node (default 128; keep it below what a server's "
        "default 208 KiB receive buffer holds, ~270)",
    )
    p.add_argument("--tick-us", type=int, default=200, help="generator tick (default 200 us)")
    p.add_argument("--gso", type=int, default=8, help="heartbeats per GSO send (default 8)")
    p.add_argument(
        "--generator-nice",
        type=int,
        default=None,
        help="the generator's nice value (default: the servers', -10)",
    )
    p.add_argument("--generator-fifo", action="store_true", help="run the generator SCHED_FIFO")
    p.add_argument(
        "--generator-unpinned", action="store_true", help="let the scheduler place the generator"
    )
    p.add_argument("--no-postgresql", action="store_true", help="part 1 only")
    p.add_argument("--json", metavar="FILE", help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    return p.parse_args(argv)


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "nodes"}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config(args)
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        raise SystemExit("needs two cores")
    signal.signal(signal.SIGTERM, _sigterm)
    raise_nofile()
    nice, autogroup = raise_priority(-10)
    tmp = Path(tempfile.mkdtemp(prefix="litedesk-cluster-bench-"))
    children = Children()
    out: dict[str, Any] = {"config": cfg.__dict__, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
    t0 = time.monotonic()
    print(
        f"Heartbeats, one node vs two ({'quick' if args.quick else 'full'}): nodes A and B on "
        f"cores {CORE['A']} and {CORE['B']}, generator (bench/heartbeat_load.c) on core "
        f"{GENERATOR_CORE}; window {cfg.window}, GSO {cfg.gso}, tick {cfg.tick_us} us, nice {nice}"
    )
    try:
        exe = build_generator(tmp)
        files = HeartbeatFiles(tmp, cfg)
        part1 = part_one_vs_two(children, tmp, exe, cfg, files)
        out["one_vs_two"] = _jsonable(part1)
        children.stop(part1["nodes"]["A"].child)
        if not args.no_postgresql:
            out["postgresql"] = part_postgresql(children, tmp, exe, cfg, files, part1["nodes"]["B"])
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        restore_autogroup(autogroup)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nTotal run time {time.monotonic() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
