"""Local input-injection latency on Xvfb: injector call -> event in an X client.

Run from the repository root (needs Xvfb and tkinter)::

    .venv/bin/python bench/input_latency.py [--n 200] [--json FILE]

Starts an Xvfb (1920x1080, tests/support/xvfb.py) and the Tk event recorder used by the
input tests, then measures, for each kind of event, the time from just before
C{InputInjector.apply()} to the moment the recorder has printed the X event
(read from its stdout), which includes Tk's event handling and a pipe hop:

* click: move + button down (time to the ButtonPress);
* key: a named key press (Return, via pynput/XTEST);
* char: one character on the keyboard ("a", XTEST);
* char (borrowed): a character not on the keyboard, first use (keymap change
  plus the settle pause) and repeated use.

As a reference, the same click is sent by C{xdotool} (a process start plus
XTEST) in the same run.  Figures are p50/p99 in milliseconds; on a shared
2-core machine they vary up to 2x between runs, so report, do not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from litedesk.input import mouse
from litedesk.input.inject import InputInjector
from litedesk.input.keys import ControlKey, KeyInput
from tests.support.recorder import Recorder, start_xvfb


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _measure(
    rec: Recorder, n: int, send: Callable[[int], object], match: Callable[[dict[str, Any]], bool]
) -> dict[str, float]:
    times: list[float] = []
    for i in range(n):
        start = rec.mark()
        t0 = time.perf_counter()
        send(i)
        rec.wait_for(match, timeout=10, start=start)
        times.append((time.perf_counter() - t0) * 1000)
        # Let releases and other trailing events drain before the next round.
        rec.command("state")
    return {
        "n": n,
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(_pct(times, 0.99), 3),
        "max_ms": round(max(times), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="events per kind (default 200)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    if shutil.which("Xvfb") is None:
        sys.exit("Xvfb is not installed (apt-get install xvfb)")

    xvfb = start_xvfb()
    rec = Recorder(xvfb.env)
    inj = InputInjector(display=xvfb.display)
    cx, cy = rec.ready["canvas_x"] + 300, rec.ready["canvas_y"] + 200
    results: dict[str, Any] = {}
    try:
        inj.apply(mouse.move(cx, cy))

        def click(i: int) -> None:
            for ev in mouse.click(cx + i % 50, cy):
                inj.apply(ev)

        results["click"] = _measure(rec, args.n, click, lambda e: e["ev"] == "ButtonPress")
        results["key"] = _measure(
            rec,
            args.n,
            lambda i: inj.apply(KeyInput(press=True, control_key=ControlKey.F5)),
            lambda e: e["ev"] == "KeyPress" and e["keysym"] == "F5",
        )
        results["char"] = _measure(
            rec,
            args.n,
            lambda i: inj.apply(KeyInput(press=True, chr=ord("a"))),
            lambda e: e["ev"] == "KeyPress" and e["char"] == "a",
        )
        # Distinct characters missing from the keyboard: each is a first use.
        fresh = [chr(0x4E00 + i) for i in range(15)]  # fewer than the 19 spare keycodes
        results["char_borrowed_first_use"] = _measure(
            rec,
            len(fresh),
            lambda i: inj.apply(KeyInput(press=True, unicode=ord(fresh[i]))),
            lambda e: e["ev"] == "KeyPress" and e["char"] != "",
        )
        results["char_borrowed_repeat"] = _measure(
            rec,
            args.n,
            lambda i: inj.apply(KeyInput(press=True, unicode=ord(fresh[i % len(fresh)]))),
            lambda e: e["ev"] == "KeyPress" and e["char"] != "",
        )
        if shutil.which("xdotool"):

            def xdotool_click(i: int) -> None:
                subprocess.run(
                    ["xdotool", "mousemove", str(cx + i % 50), str(cy), "click", "1"],
                    env=xvfb.env,
                    check=True,
                )

            results["reference_xdotool_click"] = _measure(
                rec, min(args.n, 50), xdotool_click, lambda e: e["ev"] == "ButtonPress"
            )
    finally:
        inj.close()
        rec.stop()
        xvfb.stop()

    for name, r in results.items():
        print(
            f"{name:26s} n={r['n']:4d}  p50 {r['p50_ms']:7.2f} ms  "
            f"p99 {r['p99_ms']:7.2f} ms  max {r['max_ms']:7.2f} ms"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
