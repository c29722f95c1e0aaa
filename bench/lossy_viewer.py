"""The viewer of bench/connect.py --lossy: one scripted session, run inside a lab namespace.

Run by bench/connect_lossy.py as::

    ip netns exec NS python bench/lossy_viewer.py --seconds S --seed N [--flip-log FILE] \\
        -- PEER --rendezvous ADDR --key KEY --password PW --headless [--no-udp]

Everything after C{--} is the viewer's command line.  It connects as
C{litedesk-viewer --headless} does (the viewer's C{connection.connect}),
waits until it sees the click target of bench/session_workload.py, and
after a warm-up clicks that target for C{--seconds} at bench/session.py's
seeded gaps, timing click to changed pixel with session.py's L{Probe} and
counting decoded frames.  It must run in the viewer's namespace (so it takes
the lab's paths), which is why it is a program of its own and not part of
bench/connect.py.  It prints one JSON line: path, transport, fps, click
latencies (and their split at the flip the workload logs), missed clicks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from session import (  # noqa: E402
    CLICK,
    CLICK_GAP,
    CLICK_TIMEOUT,
    SAMPLE,
    Probe,
    sleep,
    split_latencies,
    wait_probe,
)
from twisted.internet.defer import ensureDeferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from litedesk.input.mouse import MouseButton, encode_mask  # noqa: E402
from litedesk.screen.decode import DecodedFrame  # noqa: E402
from litedesk.session.viewer_session import ViewerSession  # noqa: E402
from litedesk.viewer import cli, connection  # noqa: E402


def click(session: ViewerSession) -> None:
    """Move to the target, press and release the left button (as session.py's viewers)."""
    x, y = CLICK
    session.send_mouse(encode_mask(0), x, y)
    session.send_mouse(encode_mask(1, MouseButton.LEFT), x, y)
    session.send_mouse(encode_mask(2, MouseButton.LEFT), x, y)


def flips(path: Path | None) -> list[float]:
    """The wall-clock times the workload flipped the target, if it logs them."""
    if path is None:
        return []
    try:
        return [float(x) for x in path.read_text().split()]
    except OSError:
        return []


async def clicks(reactor: Any, session: ViewerSession, probe: Probe, end: float, seed: int) -> int:
    """Click at seeded gaps until C{end}; return how many clicks went unanswered."""
    rng = random.Random(seed)
    missed = 0
    while reactor.seconds() + CLICK_GAP[1] < end:
        await sleep(reactor, rng.uniform(*CLICK_GAP))
        d = probe.arm()
        click(session)
        d.addTimeout(CLICK_TIMEOUT, reactor)
        try:
            await d
        except Exception:
            probe.disarm()
            missed += 1
    await sleep(reactor, end - reactor.seconds())
    return missed


async def run(reactor: Any, opts: argparse.Namespace, args: argparse.Namespace) -> None:
    probe = Probe(reactor)
    frame_times: list[float] = []

    def on_frame(frame: DecodedFrame) -> None:
        frame_times.append(reactor.seconds())
        px = frame.image.getpixel(SAMPLE)
        assert isinstance(px, tuple)
        probe.observe((int(px[0]), int(px[1]), int(px[2])))

    session = ViewerSession(
        reactor, args.target, args.password, codec=args.codec, on_frame=on_frame
    )
    t_connect = reactor.seconds()
    path = await connection.connect(reactor, args, session)
    await session.logged_in
    await wait_probe(reactor, probe, timeout=30.0)
    connected = reactor.seconds() - t_connect
    await sleep(reactor, opts.warmup)
    t0 = reactor.seconds()
    bytes0 = session.stats.video_bytes
    missed = await clicks(reactor, session, probe, t0 + opts.seconds, opts.seed)
    t1 = reactor.seconds()
    window = [(sent, seen) for sent, seen in probe.clicks if sent >= t0]
    input_ms, display_ms = split_latencies(window, flips(opts.flip_log))
    result = {
        "path": path,
        "transport": connection.transport_name(session),
        "connect": connected,
        "seconds": t1 - t0,
        "fps": sum(1 for t in frame_times if t0 <= t <= t1) / (t1 - t0),
        "video_mbps": (session.stats.video_bytes - bytes0) * 8 / (t1 - t0) / 1e6,
        "clicks": len(window),
        "missed": missed,
        "latencies_ms": [(seen - sent) * 1000 for sent, seen in window if seen is not None],
        "input_ms": input_ms,
        "display_ms": display_ms,
    }
    print(json.dumps(result), flush=True)
    # As litedesk-viewer does: wait for the close to reach the host, which
    # otherwise holds a QUIC session (and streams into it) until its timeout.
    session.disconnect()
    ended = session.ended
    ended.addTimeout(5, reactor)
    with contextlib.suppress(Exception):
        await ended


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=1.5)
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--flip-log", type=Path)
    opts = p.parse_args(argv[:split])
    args = cli.build_parser().parse_args(argv[split + 1 :])
    react(lambda reactor: ensureDeferred(run(reactor, opts, args)))


if __name__ == "__main__":
    main()
