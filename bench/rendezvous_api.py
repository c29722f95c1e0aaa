"""Heartbeats with the HTTP listener on against off: the API and /metrics must cost nothing.

Run from the repository root::

    .venv/bin/python bench/rendezvous_api.py [--quick]

Two litedesk-relay servers (no relay), the same ids registered on both by
real UDP ``RegisterPk``: one with ``--no-api`` (the reference), one with the
HTTP listener on (API server, console, ``/metrics``) and a scraper reading
``/metrics`` and ``/health`` every second while it is measured (Prometheus
scrapes every 15 s by default: this is 15 times harsher).  Each is measured
with bench/rendezvous.py's heartbeat search (highest rate with loss < 0.1 %,
server pinned to one core, load generator on the other), alternating A, B,
then B, A, so drift hits both; the figure is the ratio of the medians,
next to the round-by-round ratios that show the noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from rendezvous import (
    CLIENT_CORE,
    SERVER_CORE,
    Children,
    _free_tcp_ports,
    config,
    heartbeat_sources,
    measure,
    raise_nofile,
    ratio,
    register_range,
    start_litedesk,
)


class Scraper:
    """GET /metrics and /health every C{interval} seconds in a thread; counts failures."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self.port = port
        self.interval = interval
        self.scrapes = 0
        self.failures = 0
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for path in ("/metrics", "/health"):
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.port}{path}", timeout=5
                    ) as r:
                        r.read()
                    self.seconds.append(time.perf_counter() - t0)
                    self.scrapes += 1
                except OSError:
                    self.failures += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="2 rounds of shorter trials")
    p.add_argument("--window", type=int, default=128, help="RegisterPk requests in flight")
    p.add_argument("--rounds", type=int, default=0, help="A/B rounds (default 3, --quick 2)")
    args = p.parse_args(argv)
    cfg = config(argparse.Namespace(quick=args.quick, window=args.window, heartbeat_runs=1))
    rounds = args.rounds or (2 if args.quick else 3)
    os.sched_setaffinity(0, {CLIENT_CORE})
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="litedesk-bench-api-"))
    children = Children()
    print(
        f"Heartbeats with the HTTP listener off (reference) and on (+ /metrics every 1 s); "
        f"servers on core {SERVER_CORE}, generator on core {CLIENT_CORE}; "
        f"{cfg.heartbeat_ids:,} ids, {rounds} rounds"
    )
    try:
        (api_port,) = _free_tcp_ports(1)
        off = start_litedesk(children, tmp, "api-off")
        on = start_litedesk(children, tmp, "api-on", api_port=api_port)
        base = 10
        sources = heartbeat_sources(0, cfg.heartbeat_ids, base)
        for server in (off, on):
            reg = register_range(server, 0, cfg.heartbeat_ids, base, window=cfg.window)
            print(f"  registered {reg.ok:,} ids on {server.child.name} in {reg.seconds:.1f} s")
        rates: dict[str, list[float]] = {"off": [], "on": []}
        scrape_seconds: list[float] = []
        failures = 0
        for r in range(rounds):
            # Every other round measures "on" first, so a machine getting busier
            # or quieter during a round does not always favour the same side.
            scraper = Scraper(api_port)
            if r % 2:
                with scraper:
                    rates["on"].append(measure(on, sources, cfg).rate)
                rates["off"].append(measure(off, sources, cfg).rate)
            else:
                rates["off"].append(measure(off, sources, cfg).rate)
                with scraper:
                    rates["on"].append(measure(on, sources, cfg).rate)
            scrape_seconds += scraper.seconds
            failures += scraper.failures
            print(
                f"  round {r + 1}: off {rates['off'][-1]:>9,.0f}/s  on {rates['on'][-1]:>9,.0f}/s"
                f"  on/off {ratio(rates['on'][-1], rates['off'][-1])}  "
                f"({scraper.scrapes} scrapes, {scraper.failures} failed)"
            )
        off_m, on_m = statistics.median(rates["off"]), statistics.median(rates["on"])
        print(
            f"\n  heartbeats/s, median: listener off {off_m:,.0f}, on {on_m:,.0f}; "
            f"ratio on/off {ratio(on_m, off_m)} (goal: no measurable change, ~1.00 within "
            f"the rounds' spread)"
        )
        if scrape_seconds:
            print(
                f"  scrapes under load: median {statistics.median(scrape_seconds) * 1000:.1f} ms, "
                f"max {max(scrape_seconds) * 1000:.1f} ms, {failures} failed"
            )
    except KeyboardInterrupt:
        return 130
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
