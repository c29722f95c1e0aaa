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
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

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
    cpu_seconds,
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

GENERATOR_CORE = 0
CORE = {"A": 0, "B": 1}  # each node's (and each echo's) core
ADDR_BASE = {"A": 10, "B": 30}  # second octet of the addresses of each node's hosts
GOAL_TWO_NODES = 1.7


@dataclass(frozen=True)
class Config:
    """How much to measure (C{--quick} or full) and the generator's settings."""

    ids: int  # hosts per node
    warmup: float
    seconds: float
    rounds: int
    window: int  # heartbeats unanswered per node
    sockets: int  # generator sockets per node
    tick_us: int  # the generator's drain-and-refill period
    gso: int  # heartbeats of one address per GSO send
    generator_nice: int | None  # None: the servers' nice value
    generator_fifo: bool  # run the generator SCHED_FIFO (chrt -f 1)
    generator_pinned: bool  # on core 0 (else wherever the scheduler puts it)


# -- processes --------------------------------------------------------------------


def build_generator(tmp: Path) -> Path:
    """bench/heartbeat_load.c compiled into C{tmp}."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc): the load generator is bench/heartbeat_load.c")
    exe = tmp / "heartbeat_load"
    src = Path(__file__).resolve().parent / "heartbeat_load.c"
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


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


# -- measurement ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server under load and the file of its hosts' heartbeats."""

    server: Servers
    heartbeats: Path
    echo: bool = False  # an echo's answers are the heartbeats themselves


def cpu_times() -> tuple[float, float]:
    """(busy but softirq, softirq) seconds of cores 0 and 1 together, from /proc/stat.

    Loopback delivery runs in softirq context and, with IRQ time accounting,
    is charged to no process: it is shown apart from the processes' CPU.
    """
    busy = soft = 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(("cpu0 ", "cpu1 ")):
            v = [int(x) for x in line.split()[1:9]]
            soft += v[6]
            busy += sum(v) - v[3] - v[4] - v[6]  # all but idle, iowait and softirq
    tick = os.sysconf("SC_CLK_TCK")
    return busy / tick, soft / tick


def our_children() -> list[int]:
    """Pids of this process's children (the servers; taskset execs the command)."""
    me = str(os.getpid())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[1] == me:
                    pids.append(int(entry.name))
    return pids


def others_busy(seconds: float) -> float:
    """Cores used by other processes over C{seconds} (not ours, not softirq)."""
    pids = our_children()
    busy0, _ = cpu_times()
    ours0 = sum(cpu_seconds(p) for p in pids)
    time.sleep(seconds)
    busy1, _ = cpu_times()
    return (busy1 - busy0 - (sum(cpu_seconds(p) for p in pids) - ours0)) / seconds


def wait_quiet(limit: float = 0.2, patience: float = 3.0) -> None:
    """Until other processes use < C{limit} of a core (at most C{patience} s)."""
    deadline = time.monotonic() + patience
    while others_busy(0.25) > limit and time.monotonic() < deadline:
        pass


def node_target(server: Servers, node: str, files: HeartbeatFiles) -> Target:
    """C{server} under node C{node}'s hosts' heartbeats, with the serial it hands out."""
    return Target(server, files(node, server_serial(server)))


def generator_argv(exe: Path, cfg: Config, targets: Sequence[Target], warmup: float) -> list[str]:
    args = [str(warmup), str(cfg.seconds), str(cfg.window), str(cfg.sockets)]
    args += [str(cfg.tick_us), str(cfg.gso)]
    args += [f"{t.server.udp}:{t.server.child.pid}:{t.heartbeats}" for t in targets]
    niced = (
        [] if cfg.generator_nice is None else ["nice", "-n", str(cfg.generator_nice - os.nice(0))]
    )
    fifo = ["chrt", "-f", "1"] if cfg.generator_fifo else []
    command = [str(exe), *args]
    if cfg.generator_pinned:
        command = pinned(GENERATOR_CORE, command)
    return [*niced, *fifo, *command]


def prime(exe: Path, cfg: Config, targets: Sequence[Target]) -> None:
    """Every host's first heartbeats, then until the servers are idle again.

    A host's first heartbeat after registering brings it online, which a
    cluster node announces to the others (litedesk/cluster/presence.py);
    the trials measure the steady state that follows, as in a deployment.
    """
    pids = [t.server.child.pid for t in targets]
    subprocess.run(generator_argv(exe, cfg, targets, 0.0), capture_output=True, check=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        cpu0 = sum(cpu_seconds(p) for p in pids)
        time.sleep(0.25)
        if sum(cpu_seconds(p) for p in pids) - cpu0 < 0.02 * len(pids):
            break


def run_generator(exe: Path, cfg: Config, targets: Sequence[Target]) -> dict[str, Any]:
    """One closed-loop trial against C{targets} at once; rates, CPU shares, others' load."""
    wait_quiet()
    pids = our_children()
    ours0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, soft0 = cpu_times()
    cpu0 = sum(cpu_seconds(p) for p in pids)
    wall0 = time.monotonic()
    done = subprocess.run(
        generator_argv(exe, cfg, targets, cfg.warmup),
        capture_output=True,
        text=True,
        timeout=cfg.warmup + cfg.seconds + 30,
        check=True,
    )
    wall = time.monotonic() - wall0
    ours1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, soft1 = cpu_times()
    generator_all = ours1.ru_utime + ours1.ru_stime - ours0.ru_utime - ours0.ru_stime
    servers_all = sum(cpu_seconds(p) for p in pids) - cpu0
    others = busy1 - busy0 - generator_all - servers_all
    raw = json.loads(done.stdout)
    seconds = raw["seconds"]
    nodes = []
    for t, r in zip(targets, raw["targets"], strict=True):
        answered = r["replies"] + (r["other"] if t.echo else 0)
        nodes.append(
            {
                "name": t.server.child.name,
                "per_s": answered / seconds,
                "cpu_share": r["cpu"] / seconds,
                "cpu_us": r["cpu"] / answered * 1e6 if answered else 0.0,
                "lost": r["lost"],
                "wrong": 0 if t.echo else r["other"],
            }
        )
    return {
        "per_s": sum(n["per_s"] for n in nodes),
        "generator_share": raw["load_cpu"] / seconds,
        "softirq_share": (soft1 - soft0) / wall,  # cores, both together
        "others_share": max(0.0, others / wall),  # cores used by other processes
        "nodes": nodes,
    }


def _node_figures(n: dict[str, Any]) -> str:
    extra = f", {n['lost']} lost" if n["lost"] else ""
    if n["wrong"]:
        extra += f", {n['wrong']} answers NOT 3a00"
    return (
        f"{n['name']} {n['per_s']:,.0f}/s at {n['cpu_share']:.0%} CPU "
        f"({n['cpu_us']:.1f} us each{extra})"
    )


def show(label: str, trial: dict[str, Any]) -> None:
    per_node = ", ".join(_node_figures(n) for n in trial["nodes"])
    print(
        f"    {label:<15} {trial['per_s']:>8,.0f}/s  generator {trial['generator_share']:4.0%}, "
        f"softirq {trial['softirq_share']:4.0%}, others {trial['others_share']:4.0%} "
        f"(of a core); {per_node}",
        flush=True,
    )


def compare(
    exe: Path, cfg: Config, setups: Mapping[str, Sequence[Target]], tag: str
) -> dict[str, Any]:
    """C{cfg.rounds} rounds of each setup in turn; per-setup trials and median rates."""
    trials: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    for r in range(cfg.rounds):
        print(f"  {tag} round {r + 1}:", flush=True)
        for name, targets in setups.items():
            trial = run_generator(exe, cfg, targets)
            trials[name].append(trial)
            show(name, trial)
    median = {name: statistics.median(t["per_s"] for t in ts) for name, ts in trials.items()}
    return {"trials": trials, "median_per_s": median}


def two_over_one(result: dict[str, Any], one: str, two: str) -> tuple[float, float]:
    """Median per-round ratio two/one, and the generator's median share in the two-node trials."""
    ratios = [
        b["per_s"] / a["per_s"] if a["per_s"] else 0.0
        for a, b in zip(result["trials"][one], result["trials"][two], strict=True)
    ]
    share = statistics.median(t["generator_share"] for t in result["trials"][two])
    return statistics.median(ratios), share


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
