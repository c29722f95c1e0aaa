"""Connection benchmark in the NAT lab: success and time to first frame per NAT pair and path.

Run as root from the repository root, one benchmark at a time::

    flock /tmp/bench.lock .venv/bin/python bench/connect.py [--runs 20] [--json FILE]
        [--only NAME ...] [--lossy] [--lossy-only] [--seconds S] [--rounds N]

It builds the namespace lab of tests/support/natlab.py (server in the public
namespace, host agent in h1 behind router r1, viewers behind r1 or r2), one
Xvfb in the root namespace for the host, and for every scenario starts a
fresh host agent, then runs the viewer C{--runs} times.  Each run is a
separate process in the viewer's namespace (L{DRIVER}) that does exactly
what C{litedesk-viewer --headless} does (the viewer's C{connection.connect}:
NAT test, rendezvous, LAN / IPv6 / UDP punch and QUIC / TCP punch / relay)
and reports:

  - C{first_frame}: seconds from the start of C{connect} (interpreter and
    imports already done) to the first decoded video frame;
  - C{login}: the same to the end of the login;
  - C{wall}: the whole viewer process, spawn to exit (includes Python start
    and imports, about half a second here);
  - C{path} and C{transport} (C{quic} or C{tcp}), as the viewer reports them.

Before every run the routers forget the connections between the two sites
(C{conntrack -D} of the other router's WAN address; the registrations with
the server stay), so each run punches new mappings.  Each scenario's
viewers get a NAT type cache of their own (C{XDG_CACHE_HOME}), empty at
first: the first run tests the NAT, the later ones reuse its answer as a
viewer connecting again would (C{--nat-ttl}).

Scenarios: per NAT pair C{host/viewer} (r1 = host's router, r2 = viewer's
router; C{sym} = C{MASQUERADE --random-fully}) three modes in the same run:

  - C{udp}: the default (UDP punch, QUIC; birthday probing when one NAT is
    symmetric); expected C{udp} except on sym/sym (C{relay});
  - C{tcp}: C{--no-udp} on the viewer (TCP punch as before UDP): expected
    C{direct} on cone/cone, C{relay} otherwise;
  - C{relay}: C{--force-relay}, expected C{relay}.

C{tcp} and C{relay} are the references: the first-frame p50 of C{udp} is
printed as a ratio to each.  Issue 5's other scenarios follow: routed IPv6
(C{ipv6}), the same LAN (C{lan}), a TCP punch whose packets r1 drops
(C{--no-udp}; relay after the punch's cap).

A run succeeds when the viewer exits 0 and reports the expected path;
C{connected} counts any path.  Figures are p50 / p90 / max over the
successful runs.  Goals (issue 14): 100 % success in every pair, hard/easy
direct (C{udp}) >= 90 %.

C{--lossy} then runs the lossy-link comparison of bench/connect_lossy.py
(QUIC against TCP through 40 ms RTT, 2 % loss, 20 Mbit/s);
C{--lossy-only} runs just that; C{--link-delay}, C{--link-loss} and
C{--link-rate} change the link (to tell which of the three costs what).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connect_lossy import LINK, print_lossy, run_lossy, viewer_env  # noqa: E402

from tests.support.lossy_link import LinkShape  # noqa: E402
from tests.support.natlab import PYTHON, WAN_V4, LiteDeskLab  # noqa: E402
from tests.support.skips import missing  # noqa: E402
from tests.support.xvfb import Xvfb  # noqa: E402

DRIVER = r"""
import json, sys, time
t_start = time.time()
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from litedesk.viewer import cli, connection
from litedesk.session.viewer_session import ViewerSession

args = cli.build_parser().parse_args(sys.argv[1:])

async def run(reactor):
    t0 = reactor.seconds()  # wall clock, like time.time()
    session = ViewerSession(reactor, args.target, args.password, codec=args.codec)
    first_frame = session.next_frame(0)
    path = await connection.connect(reactor, args, session)
    await session.logged_in
    login = reactor.seconds() - t0
    await first_frame
    first = reactor.seconds() - t0
    transport = connection.transport_name(session)
    print(json.dumps({"path": path, "transport": transport, "login": login,
                      "first_frame": first, "imports": t0 - t_start}), flush=True)
    # As litedesk-viewer does: wait for the close to reach the host, which
    # otherwise holds a QUIC session (and streams into it) until its timeout.
    session.disconnect()
    ended = session.ended
    ended.addTimeout(5, reactor)
    try:
        await ended
    except Exception:
        pass

react(lambda reactor: ensureDeferred(run(reactor)))
"""

#: NAT pairs, host side first: (name, r1's mode, r2's mode).
PAIRS = (
    ("cone/cone", "cone", "cone"),
    ("cone/sym", "cone", "symmetric"),
    ("sym/cone", "symmetric", "cone"),
    ("sym/sym", "symmetric", "symmetric"),
)
#: The viewer's arguments per mode.
MODES = {"udp": (), "tcp": ("--no-udp",), "relay": ("--force-relay",)}
#: The transport each path runs (the relay and TCP paths carry TLS over TCP).
TRANSPORT = {"udp": "quic", "natpmp": "quic"}


@dataclass
class Scenario:
    name: str
    r1: str
    r2: str
    viewer_role: str
    expect: str
    ipv6: bool = False
    viewer_args: tuple[str, ...] = ()
    block_punch: bool = False
    pair: str = ""
    mode: str = ""


def _expected(pair: str, mode: str) -> str:
    if mode == "relay" or pair == "sym/sym":
        return "relay"
    if mode == "udp":
        return "udp"
    return "direct" if pair == "cone/cone" else "relay"


SCENARIOS = [
    Scenario(
        f"{pair} {mode}",
        r1,
        r2,
        "v2",
        _expected(pair, mode),
        viewer_args=extra,
        pair=pair,
        mode=mode,
    )
    for pair, r1, r2 in PAIRS
    for mode, extra in MODES.items()
] + [
    Scenario("cone/cone-ipv6", "cone", "cone", "v2", "ipv6", ipv6=True),
    Scenario("sym/sym-ipv6", "symmetric", "symmetric", "v2", "ipv6", ipv6=True),
    Scenario("same-lan", "cone", "cone", "v1", "lan"),
    Scenario(
        "punch-fails", "cone", "cone", "v2", "relay", viewer_args=("--no-udp",), block_punch=True
    ),
]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def block(lab: LiteDeskLab, on: bool) -> None:
    """Drop TCP between the host's LAN and r2's public address (both directions) on r1."""
    op = "-I" if on else "-D"
    for rule in (
        ["FORWARD", "-p", "tcp", "-d", WAN_V4["r2"], "-j", "DROP"],
        ["FORWARD", "-p", "tcp", "-s", WAN_V4["r2"], "-j", "DROP"],
        ["INPUT", "-p", "tcp", "-s", WAN_V4["r2"], "-j", "DROP"],
    ):
        lab.net.x("r1", "iptables", op, *rule, check=False)


def forget_mappings(lab: LiteDeskLab) -> None:
    """Both routers drop their connections to the other site (not those to the server)."""
    for router, other in (("r1", "r2"), ("r2", "r1")):
        lab.net.x(router, "conntrack", "-D", "-d", WAN_V4[other], check=False)
        lab.net.x(router, "conntrack", "-D", "-s", WAN_V4[other], check=False)


def one_run(lab: LiteDeskLab, sc: Scenario, peer: str, env: dict[str, str]) -> dict[str, object]:
    forget_mappings(lab)
    argv = [
        "ip", "netns", "exec", lab.net.ns(sc.viewer_role), PYTHON, "-c", DRIVER,
        peer, "--rendezvous", lab.server, "--key", lab.key,
        "--password", "lab-password", "--headless", *sc.viewer_args,
    ]  # fmt: skip
    t = time.monotonic()
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=90,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"rc": None, "wall": time.monotonic() - t, "error": "timeout", "ok": False}
    rec: dict[str, object] = {"rc": proc.returncode, "wall": time.monotonic() - t}
    if proc.returncode == 0:
        rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        rec["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr else ""
    path = rec.get("path")
    rec["ok"] = (
        proc.returncode == 0
        and path == sc.expect
        and rec.get("transport") == TRANSPORT.get(str(path), "tcp")
    )
    return rec


def run_scenario(lab: LiteDeskLab, sc: Scenario, runs: int) -> dict[str, object]:
    lab.net.set_nat("r1", sc.r1)
    lab.net.set_nat("r2", sc.r2)
    lab.net.set_ipv6(sc.ipv6)
    block(lab, sc.block_punch)
    peer = lab.host("h1")
    try:
        env = viewer_env(lab, sc.name)
        results = [one_run(lab, sc, peer, env) for _ in range(runs)]
    finally:
        lab.stop_host(peer)
        block(lab, False)
    return summarize(sc, results)


def summarize(sc: Scenario, results: list[dict[str, object]]) -> dict[str, object]:
    good = [r for r in results if r["ok"]]

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in good]  # type: ignore[arg-type]

    paths: dict[str, int] = {}
    for r in results:
        p = f"{r.get('path', 'error')}/{r.get('transport', '-')}"
        paths[p] = paths.get(p, 0) + 1
    n = len(results)
    return {
        "scenario": sc.name,
        "pair": sc.pair,
        "mode": sc.mode,
        "expect": sc.expect,
        "runs": n,
        "success": len(good) / n if n else 0.0,
        "connected": sum(1 for r in results if r["rc"] == 0) / n if n else 0.0,
        "paths": paths,
        "first_frame_p50": pct(col("first_frame"), 0.5),
        "first_frame_p90": pct(col("first_frame"), 0.9),
        "first_frame_max": max(col("first_frame"), default=float("nan")),
        "login_p50": pct(col("login"), 0.5),
        "wall_p50": pct(col("wall"), 0.5),
        "wall_p90": pct(col("wall"), 0.9),
        "errors": [r.get("error") for r in results if not r["ok"]][:3],
    }


def print_result(r: dict[str, object]) -> None:
    print(
        f"{r['scenario']:16} expect {r['expect']:6} ok {r['success']:6.1%} "
        f"(connected {r['connected']:6.1%})  first frame p50 {r['first_frame_p50']:.3f} s  "
        f"p90 {r['first_frame_p90']:.3f} s  max {r['first_frame_max']:.3f} s  "
        f"| wall p50 {r['wall_p50']:.3f} s  paths {r['paths']}",
        flush=True,
    )


def print_ratios(results: list[dict[str, object]]) -> None:
    """Per pair: UDP's first-frame p50 against TCP punch's and the relay's."""
    by = {(r["pair"], r["mode"]): r for r in results if r["pair"]}
    for pair, _, _ in PAIRS:
        udp = by.get((pair, "udp"))
        if udp is None:
            continue
        parts = []
        for ref in ("tcp", "relay"):
            other = by.get((pair, ref))
            if other is not None:
                ratio = float(udp["first_frame_p50"]) / float(other["first_frame_p50"])  # type: ignore[arg-type]
                parts.append(f"{ratio:.2f} x {ref} ({other['paths']})")
        print(f"{pair:10} udp first frame p50 = " + ", ".join(parts), flush=True)


def selected(sc: Scenario, only: list[str] | None) -> bool:
    return not only or sc.name in only or sc.pair in only


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--only", nargs="*", help="scenario or pair names (cone/sym) to run")
    p.add_argument("--lossy", action="store_true", help="then QUIC vs TCP on a lossy link")
    p.add_argument("--lossy-only", action="store_true", help="only the lossy-link part")
    p.add_argument("--seconds", type=float, default=20.0, help="lossy: measured s per session")
    p.add_argument("--rounds", type=int, default=2, help="lossy: QUIC, TCP sessions each")
    p.add_argument("--link-delay", type=float, default=LINK.delay, help="lossy: s one way")
    p.add_argument("--link-loss", type=float, default=LINK.loss, help="lossy: each way")
    p.add_argument("--link-rate", type=float, default=LINK.rate, help="lossy: bit/s, 0: none")
    args = p.parse_args()
    why = missing("netns", "Xvfb")
    if why:
        raise SystemExit(f"bench/connect.py: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="litedesk-bench-connect-"))
    xvfb = Xvfb(1920, 1080, 24).start()
    lab = LiteDeskLab(workdir, dict(xvfb.env))
    out = []
    lossy: dict[str, object] | None = None
    try:
        lab.up()
        for sc in SCENARIOS if not args.lossy_only else []:
            if selected(sc, args.only):
                out.append(run_scenario(lab, sc, args.runs))
                print_result(out[-1])
        print_ratios(out)
        if args.lossy or args.lossy_only:
            shape = LinkShape(args.link_delay, args.link_loss, args.link_rate or None, LINK.queue)
            lossy = run_lossy(lab, workdir, args.seconds, args.rounds, shape)
            print_lossy(lossy)
    finally:
        lab.down()
        xvfb.stop()
    summary = {
        "runs_per_scenario": args.runs,
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
        "results": out,
        "lossy": lossy,
        "workdir": str(workdir),
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
