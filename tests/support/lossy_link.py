"""A slow, lossy, rate-limited link for the NAT lab: what C{tc netem} would do.

The lab's kernel has no netem qdisc (C{CONFIG_NET_SCH_NETEM} unset), so a
link with delay, loss and a bottleneck is emulated in user space.  The
router's WAN veth keeps its name, address and firewall rules; only its peer
in C{pub} is taken off the public bridge C{br0}::

    [r2] wan ==veth== r2 --(bridge lkr2)-- TAP lkr2a   <- this program ->   TAP lkr2b --br0 [pub]

One process in C{pub} holds both TAP devices and forwards Ethernet frames
each way through a L{Direction}: random loss, then a FIFO drained at the
link rate with a bounded backlog (tail drop, as a router's queue), then the
one-way delay.  Both TCP and UDP (and ARP, ping) take this path, in the
kernel's real forwarding path on either side.  TAP devices without offload
features get frames the kernel has already segmented to the MTU, so no
64 KiB GSO super-frames have to be handled here.

L{lossy_link} puts the link in place and restores the plain veth-on-bridge
link afterwards::

    with lossy_link(lab.net, "r2", delay=0.020, loss=0.02, rate=20e6) as link:
        ...
    link.counters  # per direction: frames in, lost, queue drops, delivered

Run as a program (C{python -m tests.support.lossy_link A B ...}) it is the
forwarder; L{lossy_link} starts it in the lab's C{pub} namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import os
import random
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .natlab import PYTHON, NatLab

ROOT = Path(__file__).resolve().parents[2]

#: From <linux/if_tun.h>.
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000
#: An Ethernet frame read from a TAP device is at most MTU + header (+ VLAN tag).
_MAX_FRAME = 65536
#: Frames read per readiness event before the reactor gets a turn.
_READ_BATCH = 64
#: While the link is in place: the MACs of the bridge that holds the router's
#: veth and of that veth's end in pub (locally administered).
_BRIDGE_MAC = "02:4c:4b:00:00:01"
_VETH_MAC = "02:4c:4b:00:00:02"

log = Logger()


@dataclass(frozen=True)
class LinkShape:
    """What one direction of the link does to the frames it carries.

    @ivar delay: one-way propagation delay in seconds (20 ms each way gives
        a 40 ms round trip).
    @ivar loss: probability that a frame is dropped at random.
    @ivar rate: the bottleneck in bits per second, or C{None} for none.
    @ivar queue: the longest backlog, in seconds at C{rate}, before frames
        are tail-dropped (50 ms, as a router's buffer).
    @ivar max_frames: the most frames in flight, so that even without a
        rate the link holds bounded memory.
    """

    delay: float = 0.020
    loss: float = 0.02
    rate: float | None = 20e6
    queue: float = 0.050
    max_frames: int = 8192


@dataclass
class LinkCounters:
    """What happened to the frames of one direction."""

    frames_in: int = 0
    bytes_in: int = 0
    lost: int = 0
    queue_dropped: int = 0
    delivered: int = 0
    bytes_delivered: int = 0


class Direction:
    """One direction of the link, sans I/O: frames in with a time, frames out when due.

    A frame is first lost at random (C{shape.loss}), then queued behind the
    frames still being sent at C{shape.rate}; if that backlog would exceed
    C{shape.queue} seconds (or C{shape.max_frames} frames) it is dropped.
    It is due C{shape.delay} seconds after its last bit leaves the queue.
    Frames leave in the order they came (constant delay, one FIFO).
    """

    def __init__(self, shape: LinkShape, draw: Callable[[], float]) -> None:
        """
        @param shape: the delay, loss, rate and queue bound.
        @param draw: a source of uniform numbers in [0, 1), e.g.
            C{random.Random(seed).random}, for the random loss.
        """
        self.shape = shape
        self.counters = LinkCounters()
        self._draw = draw
        self._busy_until = 0.0
        self._pending: deque[tuple[float, bytes]] = deque()

    def offer(self, now: float, frame: bytes) -> bool:
        """A frame arrives at C{now}; return whether it was queued (not dropped)."""
        c = self.counters
        c.frames_in += 1
        c.bytes_in += len(frame)
        if self._draw() < self.shape.loss:
            c.lost += 1
            return False
        if len(self._pending) >= self.shape.max_frames:
            c.queue_dropped += 1
            return False
        start = max(now, self._busy_until)
        if self.shape.rate is None:
            leaves = start
        else:
            leaves = start + len(frame) * 8 / self.shape.rate
            # The backlog this frame would sit behind, counted at the link rate.
            if leaves - now > self.shape.queue:
                c.queue_dropped += 1
                return False
        self._busy_until = leaves
        self._pending.append((leaves + self.shape.delay, frame))
        return True

    def next_due(self) -> float | None:
        """When the oldest queued frame is due, or C{None} when none is queued."""
        return self._pending[0][0] if self._pending else None

    def take_due(self, now: float) -> list[bytes]:
        """Remove and return the frames due at or before C{now}, oldest first."""
        out = []
        while self._pending and self._pending[0][0] <= now:
            frame = self._pending.popleft()[1]
            out.append(frame)
            self.counters.delivered += 1
            self.counters.bytes_delivered += len(frame)
        return out


# -- the forwarder process -------------------------------------------------------


def open_tap(name: str) -> int:
    """Create (or attach to) the TAP device C{name}; return its non-blocking fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        ifr = struct.pack("16sH", name.encode(), _IFF_TAP | _IFF_NO_PI)
        fcntl.ioctl(fd, _TUNSETIFF, ifr)
    except OSError:
        os.close(fd)
        raise
    return fd


@implementer(IReadDescriptor)
class Pump:
    """Frames read from one TAP fd go through a L{Direction} and out of another fd."""

    def __init__(
        self, reactor: IReactorTime, name: str, src: int, dst: int, direction: Direction
    ) -> None:
        self._reactor = reactor
        self.name = name
        self._src = src
        self._dst = dst
        self.direction = direction
        self._timer: IDelayedCall | None = None

    def fileno(self) -> int:
        return self._src

    def logPrefix(self) -> str:
        return f"lossy-link {self.name}"

    def connectionLost(self, reason: Failure) -> None:
        log.warn("link {name} stopped reading: {reason}", name=self.name, reason=reason)

    def doRead(self) -> None:
        now = self._reactor.seconds()
        for _ in range(_READ_BATCH):
            try:
                frame = os.read(self._src, _MAX_FRAME)
            except BlockingIOError:
                break
            self.direction.offer(now, frame)
        self._schedule()

    def _schedule(self) -> None:
        due = self.direction.next_due()
        if due is None or (self._timer is not None and self._timer.active()):
            return
        delay = max(0.0, due - self._reactor.seconds())
        self._timer = self._reactor.callLater(delay, self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        for frame in self.direction.take_due(self._reactor.seconds()):
            try:
                os.write(self._dst, frame)
            except OSError as e:
                # A full or downed device drops the frame, as a wire would.
                if e.errno not in (errno.EAGAIN, errno.EIO, errno.ENOBUFS):
                    raise
        self._schedule()


def _arguments(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Forward frames between two TAP devices.")
    p.add_argument("up_tap", help="the router side (frames read here go up)")
    p.add_argument("down_tap", help="the bridge side (frames read here go down)")
    p.add_argument("--delay", type=float, default=0.020)
    p.add_argument("--loss", type=float, default=0.02)
    p.add_argument("--rate", type=float, default=20e6, help="bits/s, 0 for no limit")
    p.add_argument("--queue", type=float, default=0.050)
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Forward until SIGTERM, then print the counters as one JSON line."""
    from twisted.internet import reactor

    args = _arguments(sys.argv[1:] if argv is None else argv)
    shape = LinkShape(args.delay, args.loss, args.rate or None, args.queue)
    rng = random.Random(args.seed)
    up_fd, down_fd = open_tap(args.up_tap), open_tap(args.down_tap)
    pumps = [
        Pump(reactor, "up", up_fd, down_fd, Direction(shape, rng.random)),
        Pump(reactor, "down", down_fd, up_fd, Direction(shape, rng.random)),
    ]
    for pump in pumps:
        reactor.addReader(pump)
    print(json.dumps({"ready": True}), flush=True)
    reactor.run()
    print(json.dumps({p.name: asdict(p.direction.counters) for p in pumps}), flush=True)


# -- placing the link in the lab ---------------------------------------------------


class LossyLink:
    """The emulated link between C{router}'s WAN side and the lab's public bridge.

    @ivar counters: after L{stop}, per direction (C{up}: from the router,
        C{down}: towards it) the forwarder's L{LinkCounters} as a dict.
    """

    def __init__(self, net: NatLab, router: str, shape: LinkShape, seed: int | None = None):
        self.net = net
        self.router = router
        self.shape = shape
        self.seed = seed
        self.bridge = f"lk{router}"
        self.up_tap = f"lk{router}a"
        self.down_tap = f"lk{router}b"
        self.counters: dict[str, dict[str, int]] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._veth_mac = ""

    def _pub(self, *args: str, check: bool = True) -> None:
        self.net.x("pub", "ip", *args, check=check)

    def _mac(self, dev: str) -> str:
        out = self.net.x("pub", "cat", f"/sys/class/net/{dev}/address").stdout
        return out.strip()

    def start(self) -> None:
        """Start the forwarder in C{pub} and move the router's veth peer behind it."""
        s = self.shape
        argv = [
            *("ip", "netns", "exec", self.net.ns("pub"), PYTHON, "-m", __name__),
            *(self.up_tap, self.down_tap, "--delay", str(s.delay), "--loss", str(s.loss)),
            *("--rate", str(s.rate or 0), "--queue", str(s.queue)),
            *(("--seed", str(self.seed)) if self.seed is not None else ()),
        ]
        self._proc = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        self.net.procs.append(self._proc)  # type: ignore[arg-type]
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.strip().startswith('{"ready"'):
            self._proc.kill()
            raise RuntimeError(f"the lossy link's forwarder did not start: {line!r}")
        # Nothing may reach pub's own stack through the new bridge, or it
        # would bypass the link.  A bridge takes in frames addressed to its
        # ports' own MACs, and br0 may have taken the veth's MAC as its own
        # (r2's ARP cache holds it): br0 keeps its MAC, the veth and the new
        # bridge get locally administered ones.  And pub answers ARP and
        # neighbour solicitations for its addresses on any interface: the new
        # bridge does neither (NOARP, no IPv6).
        self._pub("link", "set", "br0", "address", self._mac("br0"))
        self._veth_mac = self._mac(self.router)
        self._pub("link", "set", self.router, "nomaster")
        self._pub("link", "set", self.router, "address", _VETH_MAC)
        self._pub("link", "add", self.bridge, "address", _BRIDGE_MAC, "type", "bridge")
        self._pub("link", "set", self.bridge, "arp", "off")
        self.net.x("pub", "sysctl", "-qw", f"net.ipv6.conf.{self.bridge}.disable_ipv6=1")
        self._pub("link", "set", self.router, "master", self.bridge)
        self._pub("link", "set", self.up_tap, "master", self.bridge, "up")
        self._pub("link", "set", self.down_tap, "master", "br0", "up")
        self._pub("link", "set", self.bridge, "up")

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop the forwarder, put the veth back on C{br0}; return the counters."""
        self._pub("link", "set", self.router, "nomaster", check=False)
        if self._veth_mac:
            self._pub("link", "set", self.router, "address", self._veth_mac, check=False)
        self._pub("link", "set", self.router, "master", "br0", check=False)
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            with contextlib.suppress(ValueError):
                self.net.procs.remove(proc)  # type: ignore[arg-type]
            lines = out.strip().splitlines()
            with contextlib.suppress(IndexError, ValueError):
                self.counters = json.loads(lines[-1])
        # The TAP devices went with the process; the bridge stays unless removed.
        self._pub("link", "delete", self.bridge, check=False)
        return self.counters


@contextlib.contextmanager
def lossy_link(
    net: NatLab,
    router: str,
    delay: float = 0.020,
    loss: float = 0.02,
    rate: float | None = 20e6,
    queue: float = 0.050,
    seed: int | None = None,
) -> Iterator[LossyLink]:
    """Put a L{LossyLink} between C{router} (C{"r1"} or C{"r2"}) and C{pub} for the block.

    @param delay: one-way delay in seconds (each direction).
    @param loss: random loss probability (each direction).
    @param rate: bottleneck in bits/s (each direction), C{None} for none.
    @param queue: the bottleneck's buffer, in seconds at C{rate}.
    @param seed: for a repeatable loss pattern.
    """
    link = LossyLink(net, router, LinkShape(delay, loss, rate, queue), seed)
    try:
        link.start()
        yield link
    finally:
        link.stop()


if __name__ == "__main__":
    main()
