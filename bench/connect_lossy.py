"""QUIC against TCP on a lossy link in the NAT lab: the C{--lossy} part of bench/connect.py.

Issue 14 asks for fps and click-to-pixel p50/p99 of QUIC against TCP on the
same script, through 40 ms RTT, 2 % loss and 20 Mbit/s.  The kernel here
has no netem, so tests/support/lossy_link.py's user-space link stands
between router r2 and the public side (20 ms each way, 2 % random loss each
way, 20 Mbit/s each way with a 50 ms queue).  Both NATs are cone; the host
runs in h1 on the root namespace's Xvfb, where bench/session_workload.py
shows its moving 640x480 window and click target for the whole comparison.

The viewer (bench/lossy_viewer.py, in v2's namespace) runs the same seeded
click script once over QUIC (the default: path C{udp}) and once over TCP
(C{--no-udp}: path C{direct}, the TCP punch), alternating for C{--rounds}
rounds, on one host agent.  Printed per transport: fps of the moving window,
click-to-pixel p50/p99 (pooled over the rounds; a click answered after more
than 1.5 s counts as missed), and QUIC / TCP as ratios.  Goal (issue 14):
QUIC's p99 <= 0.7 x TCP's.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from session import percentile  # noqa: E402

from tests.support.lossy_link import LinkShape, lossy_link  # noqa: E402
from tests.support.natlab import PYTHON, LiteDeskLab  # noqa: E402

WORKLOAD = ROOT / "bench" / "session_workload.py"
VIEWER = ROOT / "bench" / "lossy_viewer.py"
#: The link of issue 14's benchmark, each way.
LINK = LinkShape(delay=0.020, loss=0.02, rate=20e6, queue=0.050)
#: (transport, the viewer's arguments, the path expected).
MODES = (("quic", (), "udp"), ("tcp", ("--no-udp",), "direct"))
GOAL_P99 = 0.7


class Workload:
    """bench/session_workload.py on the lab's display, in the root namespace."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.flip_log = workdir / "flips.txt"
        self.out = open(workdir / "workload.err", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [PYTHON, str(WORKLOAD), "--max-seconds", "900", "--flip-log", str(self.flip_log)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.out,
            text=True,
        )
        self._expect("ready")

    def _expect(self, want: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != want:
            raise RuntimeError(f"the workload said {line!r}, not {want!r}; see workload.err")

    def phase(self, name: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{name}\n")
        self.proc.stdin.flush()
        self._expect(f"ok {name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.out.close()


def viewer_env(lab: LiteDeskLab, name: str) -> dict[str, str]:
    """The viewers' environment with a NAT type cache of their own, empty at first.

    The viewer keeps its NAT type per server and local address for a while
    (C{--nat-ttl}, in C{$XDG_CACHE_HOME/litedesk}); the lab's addresses are
    the same whatever NAT a scenario puts on them, so each scenario (C{name})
    starts with an empty cache, and its later runs use what the first found,
    as a viewer connecting again would.
    """
    cache = lab.dir / "nat-cache" / name.replace("/", "-").replace(" ", "-")
    cache.mkdir(parents=True, exist_ok=True)
    return dict(lab.env, XDG_CACHE_HOME=str(cache))


def run_session(
    lab: LiteDeskLab, peer: str, extra: tuple[str, ...], seconds: float, seed: int, flips: Path
) -> dict[str, Any]:
    """One scripted session from v2; the viewer's JSON, or C{error}."""
    argv = [
        *("ip", "netns", "exec", lab.net.ns("v2"), PYTHON, str(VIEWER)),
        *("--seconds", str(seconds), "--seed", str(seed), "--flip-log", str(flips), "--"),
        *(peer, "--rendezvous", lab.server, "--key", lab.key, "--password", "lab-password"),
        *("--headless", *extra),
    ]
    try:
        proc = subprocess.run(
            argv,
            env=viewer_env(lab, "lossy"),
            capture_output=True,
            text=True,
            timeout=seconds + 90,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def wait_ended(lab: LiteDeskLab, peer: str, sessions: int, timeout: float = 30.0) -> float:
    """Wait until the host has ended C{sessions} sessions (so none overlaps the
    next one); return how long that took, C{inf} when it did not happen."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if lab.host_log(peer).count(" ended after ") >= sessions:
            return time.monotonic() - t0
        time.sleep(0.1)
    return float("inf")


def host_summary(lab: LiteDeskLab, peer: str, index: int) -> str:
    """The host's summary of its C{index}th session (frames, fps, drops, round trips)."""
    ended = [line for line in lab.host_log(peer).splitlines() if " ended after " in line]
    return ended[index].split(" ended after ", 1)[1] if index < len(ended) else ""


def run_lossy(
    lab: LiteDeskLab, workdir: Path, seconds: float, rounds: int, link_shape: LinkShape = LINK
) -> dict[str, Any]:
    """The comparison: C{rounds} x (QUIC, TCP) sessions through the lossy link."""
    lab.net.set_nat("r1", "cone")
    lab.net.set_nat("r2", "cone")
    lab.net.set_ipv6(False)
    workload = Workload(lab.env, workdir)
    L = link_shape
    sessions: list[dict[str, Any]] = []
    try:
        workload.phase("moving")
        peer = lab.host("h1")
        try:
            with lossy_link(lab.net, "r2", L.delay, L.loss, L.rate, L.queue) as link:
                for r in range(rounds):
                    for transport, extra, path in MODES:
                        rec = run_session(lab, peer, extra, seconds, 4 + r, workload.flip_log)
                        rec["host_ended"] = wait_ended(lab, peer, len(sessions) + 1)
                        rec["host_summary"] = host_summary(lab, peer, len(sessions))
                        rec.update(mode=transport, expect=path, round=r)
                        rec["ok"] = rec.get("path") == path and rec.get("transport") == transport
                        sessions.append(rec)
                        print(brief(rec), flush=True)
        finally:
            lab.stop_host(peer)
    finally:
        workload.stop()
    return {"link": asdict(L), "seconds": seconds, "rounds": rounds, "sessions": sessions,
            "link_counters": link.counters, "by_mode": by_mode(sessions)}  # fmt: skip


def brief(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return f"  {rec['mode']} round {rec['round']}: failed: {rec['error']}"
    lat = rec["latencies_ms"]
    return (
        f"  {rec['mode']} round {rec['round']}: path {rec['path']}/{rec['transport']} "
        f"connect {rec['connect']:.2f} s, {rec['fps']:.1f} fps, {rec['video_mbps']:.2f} Mb/s, "
        f"click p50 {percentile(lat, 50) or float('nan'):.0f} ms "
        f"p99 {percentile(lat, 99) or float('nan'):.0f} ms, "
        f"{rec['missed']}/{rec['clicks']} missed; host: {rec.get('host_summary', '')}"
    )


def by_mode(sessions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per transport, over its sessions that took the expected path."""
    out: dict[str, dict[str, Any]] = {}
    for transport, _, _ in MODES:
        good = [s for s in sessions if s["mode"] == transport and s["ok"]]
        lat = [v for s in good for v in s["latencies_ms"]]
        out[transport] = {
            "sessions": len(good),
            "of": sum(1 for s in sessions if s["mode"] == transport),
            "fps": statistics.fmean(s["fps"] for s in good) if good else None,
            "video_mbps": statistics.fmean(s["video_mbps"] for s in good) if good else None,
            "clicks": sum(s["clicks"] for s in good),
            "missed": sum(s["missed"] for s in good),
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "input_p50_ms": percentile([v for s in good for v in s["input_ms"]], 50),
            "display_p50_ms": percentile([v for s in good for v in s["display_ms"]], 50),
        }
    return out


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f} x" if a is not None and b else "n/a"


def _num(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "n/a"


def print_lossy(result: dict[str, Any]) -> None:
    """The table: per transport, then QUIC / TCP and the goal."""
    m = result["by_mode"]
    print(
        f"lossy link r2<->pub: {result['link']} each way, {result['rounds']} x "
        f"{result['seconds']:.0f} s per transport, moving window + clicks"
    )
    print(f"{'':6} {'sessions':>8} {'fps':>6} {'Mb/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'input p50':>9} {'display p50':>11} {'missed':>8}")  # fmt: skip
    for t, r in m.items():
        print(
            f"{t:6} {r['sessions']:>4}/{r['of']:<3} {_num(r['fps'], '6.1f')} "
            f"{_num(r['video_mbps'], '6.2f')} {_num(r['p50_ms'], '7.0f')} "
            f"{_num(r['p99_ms'], '7.0f')} {_num(r['input_p50_ms'], '9.0f')} "
            f"{_num(r['display_p50_ms'], '11.0f')} {r['missed']:>4}/{r['clicks']:<4}"
        )
    q, t = m["quic"], m["tcp"]
    print(
        f"QUIC / TCP: fps {_ratio(q['fps'], t['fps'])}, "
        f"click p50 {_ratio(q['p50_ms'], t['p50_ms'])}, p99 {_ratio(q['p99_ms'], t['p99_ms'])}"
    )
    ok = q["p99_ms"] is not None and t["p99_ms"] and q["p99_ms"] <= GOAL_P99 * t["p99_ms"]
    print(f"goal: QUIC p99 <= {GOAL_P99} x TCP p99: {'PASS' if ok else 'MISS'}")
    print(f"link counters: {result['link_counters']}", flush=True)
