"""Closed-loop heartbeat trials with bench/heartbeat_load.c, for bench/cluster_heartbeats.py.

The C generator is built here, run against one or two servers at once and
its JSON read back; around each trial the CPU of both cores is accounted
from /proc (the servers', the generator's, the softirq time that loopback
delivery charges to no process, and whatever other processes took), so
every figure is printed with what the generator and the rest of the
machine took from the servers' cores.  Trials of several setups run in
alternating rounds; medians and per-round ratios come from here too.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rendezvous import Servers, cpu_seconds, pinned

GENERATOR_CORE = 0


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


def build_generator(tmp: Path) -> Path:
    """bench/heartbeat_load.c compiled into C{tmp}."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (cc): the load generator is bench/heartbeat_load.c")
    exe = tmp / "heartbeat_load"
    src = Path(__file__).resolve().parent / "heartbeat_load.c"
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


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
