"""The streamer's damage path against its compare path, on the session benchmark's desktop.

Run from the repository root (C{bench/screen_pipeline.py --damage} runs this)::

    .venv/bin/python bench/screen_damage.py [--seconds 5] [--phases idle,typing,scrolling,moving]
        [--json FILE]

Starts its own Xvfb 1920x1080x24 and bench/session_workload.py on it (with
a click on its target every 0.15-0.35 s through xdotool, as bench/session.py
clicks), then for each phase runs the real L{ScreenStreamer} (H.264, image
quality Balanced, 30 fps ceiling, on this process's reactor) once per
variant, one after the other, in the same run (C{--variants}; by default
the first two):

  - C{compare}: the pipeline as it was before issue 15 (C{damage=False}): the
    whole monitor grabbed every frame slot, compared with the last grab,
    converted whole and encoded when it differs;
  - C{damage}: X DAMAGE drives the frames; only the damaged rectangles are
    grabbed and converted into the persistent picture;
  - encoder candidates on the damage path (L{VARIANTS}): C{threads1},
    C{superfast}, C{crf26}, C{crf30}.

Per variant: this process's CPU (all threads: reactor, worker, DAMAGE
watcher) in % of one core, frames delivered per second, Mb/s of video, and
the megapixels grabbed and converted per second (the damage path counts
them; the compare path grabs the whole screen every slot and converts it
for every frame); then the ratios to the compare path.  The X server's CPU is
shown too, because grabbing costs it as well.  Numbers move with the load of
a shared 2-core machine: run it under C{flock /tmp/bench.lock}, and read
the ratios of one run rather than figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
from collections.abc import Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from procfs import cpu_seconds  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from litedesk.screen import Codec, EncodedFrame, ScreenStreamer, VideoEncoder  # noqa: E402
from tests.support.xvfb import Xvfb  # noqa: E402

WORKLOAD = REPO / "bench" / "session_workload.py"
PHASES = ("idle", "typing", "scrolling", "moving")
# name -> (X DAMAGE on?, VideoEncoder keyword arguments over the streamer's
# default H.264 encoder).  The encoder candidates (issue 15 step 3) run on
# the damage path: libx264's threads (2: sliced threads, the default; 1: none),
# a slower preset, and capped CRF instead of average bitrate.
VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "compare": (False, {}),
    "damage": (True, {}),
    "threads1": (True, {"threads": 1}),
    "superfast": (True, {"h264_options": {"preset": "superfast"}}),
    "crf26": (True, {"h264_options": {"crf": "26"}}),
    "crf30": (True, {"h264_options": {"crf": "30"}}),
}
CLICK_AT = (1760, 80)
CLICK_GAP = (0.15, 0.35)
W, H = 1920, 1080


@dataclass
class Run:
    phase: str
    variant: str
    cpu: float  # % of one core, this process
    xvfb_cpu: float
    fps: float
    mbps: float
    mpix_s: float  # megapixels grabbed (damage: converted too) per second
    slots: int


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Clicker:
    """xdotool clicks on the workload's target at seeded intervals."""

    def __init__(self, clock: Any, env: dict[str, str]) -> None:
        self._clock = clock
        self._env = env
        self._rng = random.Random(4)
        self._tool = shutil.which("xdotool")
        self._call: Any = None
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        if self._tool is not None:
            self._call = self._clock.callLater(self._rng.uniform(*CLICK_GAP), self._click)

    def _click(self) -> None:
        assert self._tool is not None
        # Not waited for: xdotool takes a few ms.
        subprocess.Popen(
            [self._tool, "mousemove", *map(str, CLICK_AT), "click", "1"], env=self._env
        )
        self._call = self._clock.callLater(self._rng.uniform(*CLICK_GAP), self._click)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        for proc in self._procs:
            proc.wait(10)
        self._procs.clear()


@defer.inlineCallbacks
def measure(
    reactor: Any, display: str, env: dict[str, str], xvfb_pid: int, phase: str, variant: str,
    seconds: float,
) -> Generator[Any, Any, Run]:  # fmt: skip
    sent: list[EncodedFrame] = []
    damage, encoder_kw = VARIANTS[variant]
    streamer = ScreenStreamer(
        reactor,
        sent.append,
        lambda: 0,
        display=display,
        damage=damage,
        encoder=VideoEncoder(Codec.H264, fps=30, **encoder_kw) if encoder_kw else None,
    )
    clicker = Clicker(reactor, env)
    streamer.start()
    clicker.start()
    yield task.deferLater(reactor, 1.0, lambda: None)  # warm-up: key frame, encoder open
    frames0, bytes0, slots0 = len(sent), sum(len(f.data) for f in sent), streamer.stats.slots
    pix0 = streamer.stats.captured_pixels
    cpu0, x0, t0 = _self_cpu(), cpu_seconds(xvfb_pid), reactor.seconds()
    yield task.deferLater(reactor, seconds, lambda: None)
    cpu1, x1, t1 = _self_cpu(), cpu_seconds(xvfb_pid), reactor.seconds()
    frames = len(sent) - frames0
    nbytes = sum(len(f.data) for f in sent) - bytes0
    slots = streamer.stats.slots - slots0
    # The compare path grabs the whole screen every slot.
    pixels = streamer.stats.captured_pixels - pix0 if damage else slots * W * H
    clicker.stop()
    yield streamer.stop()
    dt = t1 - t0
    return Run(
        phase=phase,
        variant=variant,
        cpu=100 * (cpu1 - cpu0) / dt,
        xvfb_cpu=100 * (x1 - x0) / dt,
        fps=frames / dt,
        mbps=nbytes * 8 / dt / 1e6,
        mpix_s=pixels / dt / 1e6,
        slots=slots,
    )


@defer.inlineCallbacks
def run_all(reactor: Any, args: argparse.Namespace) -> Generator[Any, Any, None]:
    xvfb = Xvfb(W, H, 24).start()
    # The X server's CPU counts too (grabs cost it); the fixture keeps its
    # process private, and a benchmark may look.
    proc = xvfb._proc
    assert xvfb.display is not None and proc is not None
    work = subprocess.Popen(
        [sys.executable, str(WORKLOAD), "--max-seconds", "600"],
        env=xvfb.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert work.stdin is not None and work.stdout is not None
    runs: list[Run] = []
    try:
        if work.stdout.readline().strip() != "ready":
            raise RuntimeError("session_workload.py did not start")
        for phase in args.phases.split(","):
            work.stdin.write(phase + "\n")
            work.stdin.flush()
            if work.stdout.readline().strip() != f"ok {phase}":
                raise RuntimeError(f"session_workload.py did not start {phase}")
            for variant in args.variants.split(","):
                r = yield measure(
                    reactor, xvfb.display, xvfb.env, proc.pid, phase, variant, args.seconds
                )
                runs.append(r)
                print(
                    f"  {phase:9} {variant:8} CPU {r.cpu:5.1f}%  Xvfb {r.xvfb_cpu:5.1f}%  "
                    f"{r.fps:5.1f} fps  {r.mbps:6.3f} Mb/s  {r.mpix_s:6.1f} Mpx/s",
                    flush=True,
                )
    finally:
        work.stdin.close()
        work.wait(10)
        xvfb.stop()
    report(runs, args.variants.split(","))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in runs], indent=2))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(runs: list[Run], variants: list[str]) -> None:
    """A table per phase: each variant, then its ratios to the compare path
    (or, without it, to the first variant) measured in the same run."""
    ref_name = "compare" if "compare" in variants else variants[0]
    print(f"\n1920x1080, session workload, H.264 Balanced 30 fps, {os.cpu_count()} cores")
    print(f"ratios: each variant / {ref_name}, same phase, same run")
    print(
        f"{'phase':9} {'variant':10} {'CPU':>7} {'Xvfb':>7} {'fps':>6} {'Mb/s':>7} {'Mpx/s':>7}"
        f"   {'CPU':>6} {'fps':>6} {'Mb/s':>6}"
    )
    by = {(r.phase, r.variant): r for r in runs}
    for phase in dict.fromkeys(r.phase for r in runs):
        ref = by[(phase, ref_name)]
        for variant in variants:
            r = by[(phase, variant)]
            print(
                f"{phase:9} {variant:10} {r.cpu:6.1f}% {r.xvfb_cpu:6.1f}% {r.fps:6.1f} "
                f"{r.mbps:7.3f} {r.mpix_s:7.1f}   {_ratio(r.cpu, ref.cpu):>6} "
                f"{_ratio(r.fps, ref.fps):>6} {_ratio(r.mbps, ref.mbps):>6}"
            )
    print("overall (sum over the phases):")
    for variant in variants:
        mine = [r for r in runs if r.variant == variant]
        refs = [r for r in runs if r.variant == ref_name]
        cpu, rcpu = sum(r.cpu for r in mine), sum(r.cpu for r in refs)
        mb, rmb = sum(r.mbps for r in mine), sum(r.mbps for r in refs)
        print(f"  {variant:10} CPU {_ratio(cpu, rcpu):>6}  Mb/s {_ratio(mb, rmb):>6}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured per phase and variant")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument(
        "--variants", default="compare,damage", help=f"of {','.join(VARIANTS)}, in this order"
    )
    ap.add_argument("--json", help="also write the runs here")
    args = ap.parse_args(argv)
    task.react(lambda reactor: run_all(reactor, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
