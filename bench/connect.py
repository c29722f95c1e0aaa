"""Connection benchmark in the NAT lab: time from viewer start to first frame, per path.

Run as root from the repository root::

    .venv/bin/python bench/connect.py [--runs 20] [--json FILE] [--only NAME ...]

It builds the namespace lab of tests/support/natlab.py (server in the public
namespace, host agent behind router r1, viewers behind r1 or r2), one Xvfb
in the root namespace for the host, and for every scenario starts a fresh
host agent, then runs the viewer C{--runs} times.  Each run is a separate
process in the viewer's namespace (L{DRIVER}) that does exactly what
C{litedesk-viewer --headless} does (the viewer's C{connection.connect}: NAT test,
rendezvous, LAN / IPv6 / punch / relay) and reports:

  - C{first_frame}: seconds from the start of C{connect} (interpreter and
    imports already done) to the first decoded video frame;
  - C{login}: the same to the end of the login;
  - C{wall}: the whole viewer process, spawn to exit (includes Python start
    and imports, about half a second here);
  - C{path}: the path the viewer reports.

Scenarios (r1 = host's router, r2 = viewer's router):

  - C{cone/cone}: hole punched, expected path C{direct};
  - C{cone/cone-ipv6}: both sides with routed IPv6, expected C{ipv6};
  - C{sym/sym-ipv6}: symmetric IPv4 NATs but routed IPv6, expected C{ipv6};
  - C{same-lan}: viewer behind r1 too, expected C{lan};
  - C{cone/sym}, C{sym/cone}, C{sym/sym}: the NAT test sends both to the
    relay at once, expected C{relay};
  - C{punch-fails}: cone/cone, but r1 drops every TCP packet between the
    host and r2 (the NAT test still says ASYMMETRIC), so the punch times out
    and the viewer falls back to the relay: expected C{relay} after the cap;
  - C{force-relay}: C{--force-relay} baseline.

A run succeeds when the viewer exits 0 and reports the expected path.
Figures are p50 / p90 / max over the successful runs.  Goals from issue 5:
direct or punched paths <= 1 s p50, relay fallback after a failed punch
<= 3 s p50, 100 % success for every combination that has a path.
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
    session.disconnect()
    print(json.dumps({"path": path, "login": login, "first_frame": first,
                      "imports": t0 - t_start}))

react(lambda reactor: ensureDeferred(run(reactor)))
"""


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


SCENARIOS = [
    Scenario("cone/cone", "cone", "cone", "v2", "direct"),
    Scenario("cone/cone-ipv6", "cone", "cone", "v2", "ipv6", ipv6=True),
    Scenario("sym/sym-ipv6", "symmetric", "symmetric", "v2", "ipv6", ipv6=True),
    Scenario("same-lan", "cone", "cone", "v1", "lan"),
    Scenario("cone/sym", "cone", "symmetric", "v2", "relay"),
    Scenario("sym/cone", "symmetric", "cone", "v2", "relay"),
    Scenario("sym/sym", "symmetric", "symmetric", "v2", "relay"),
    Scenario("punch-fails", "cone", "cone", "v2", "relay", block_punch=True),
    Scenario("force-relay", "cone", "cone", "v2", "relay", viewer_args=("--force-relay",)),
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


def run_scenario(lab: LiteDeskLab, sc: Scenario, runs: int) -> dict[str, object]:
    lab.net.set_nat("r1", sc.r1)
    lab.net.set_nat("r2", sc.r2)
    lab.net.set_ipv6(sc.ipv6)
    block(lab, sc.block_punch)
    peer = lab.host("h1")
    results = []
    try:
        for _ in range(runs):
            argv = [
                "ip", "netns", "exec", lab.net.ns(sc.viewer_role), PYTHON, "-c", DRIVER,
                peer, "--rendezvous", lab.server, "--key", lab.key,
                "--password", "lab-password", "--headless", *sc.viewer_args,
            ]  # fmt: skip
            t = time.monotonic()
            proc = subprocess.run(
                argv, env=lab.env, capture_output=True, text=True, timeout=90,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            wall = time.monotonic() - t
            rec: dict[str, object] = {"rc": proc.returncode, "wall": wall}
            if proc.returncode == 0:
                rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            else:
                rec["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr else ""
            rec["ok"] = proc.returncode == 0 and rec.get("path") == sc.expect
            results.append(rec)
    finally:
        lab.stop_host(peer)
        block(lab, False)
    good = [r for r in results if r["ok"]]

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in good]  # type: ignore[arg-type]

    paths: dict[str, int] = {}
    for r in results:
        p = str(r.get("path", "error"))
        paths[p] = paths.get(p, 0) + 1
    return {
        "scenario": sc.name,
        "expect": sc.expect,
        "runs": len(results),
        "success": len(good) / len(results) if results else 0.0,
        "paths": paths,
        "first_frame_p50": pct(col("first_frame"), 0.5),
        "first_frame_p90": pct(col("first_frame"), 0.9),
        "first_frame_max": max(col("first_frame"), default=float("nan")),
        "login_p50": pct(col("login"), 0.5),
        "wall_p50": pct(col("wall"), 0.5),
        "wall_p90": pct(col("wall"), 0.9),
        "errors": [r.get("error") for r in results if not r["ok"]][:3],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--only", nargs="*", help="scenario names to run")
    args = p.parse_args()
    why = missing("netns")
    if why:
        raise SystemExit(f"bench/connect.py: {why}")
    workdir = Path(tempfile.mkdtemp(prefix="litedesk-bench-connect-"))
    xvfb = Xvfb(1920, 1080, 24).start()
    lab = LiteDeskLab(workdir, dict(xvfb.env))
    out = []
    try:
        lab.up()
        for sc in SCENARIOS:
            if args.only and sc.name not in args.only:
                continue
            r = run_scenario(lab, sc, args.runs)
            out.append(r)
            print(
                f"{sc.name:15} expect {sc.expect:6} ok {r['success']:6.1%}  "
                f"first frame p50 {r['first_frame_p50']:.3f} s  p90 {r['first_frame_p90']:.3f} s  "
                f"max {r['first_frame_max']:.3f} s  | wall p50 {r['wall_p50']:.3f} s  "
                f"paths {r['paths']}",
                flush=True,
            )
    finally:
        lab.down()
        xvfb.stop()
    summary = {
        "runs_per_scenario": args.runs,
        "cpus": os.cpu_count(),
        "results": out,
        "workdir": str(workdir),
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
