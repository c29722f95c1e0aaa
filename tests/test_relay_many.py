"""10,000 silent connections at once: all closed at the first-frame deadline, others unharmed.

Slower than the other relay tests (about 10 s).
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

from twisted.internet import defer, protocol, reactor, task
from twisted.python.failure import Failure
from twisted.trial import unittest

from litedesk.relay.leg import RelayProtocol
from litedesk.relay.limiter import BandwidthSettings
from litedesk.relay.settings import RelaySettings
from litedesk.relay.table import ConnectionLimits, Deadlines
from tests.support.polling import until
from tests.support.relay import RelayFixture, request_relay

N = 10_000

# The silent clients live in a child process: this process may not raise its
# hard RLIMIT_NOFILE, and relay plus clients would need 20,000 descriptors.
_CLIENT = r"""
import errno, resource, select, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
socks = []
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    socks.append(s)
    if i % 1000 == 999:
        time.sleep(0.01)  # pace the burst so the listen backlog is not what is tested
print("connected", flush=True)
ep = select.epoll()
for s in socks:
    ep.register(s.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
closed = set()
deadline = time.monotonic() + 60
while len(closed) < n and time.monotonic() < deadline:
    for fd, ev in ep.poll(1.0):
        closed.add(fd)
        ep.unregister(fd)
print("closed", len(closed), flush=True)
"""


class _Child(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.buf = b""
        self.lines: list[str] = []
        self.done: defer.Deferred[None] = defer.Deferred()
        self.ended = False

    def outReceived(self, data: bytes) -> None:
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        self.lines.extend(x.decode() for x in lines)

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.done.callback(None)

    def kill(self) -> None:
        if not self.ended and self.transport is not None:
            self.transport.signalProcess("KILL")


class ManySilentTests(unittest.TestCase):
    """A flood of connections that never send anything."""

    timeout = 120

    async def test_10000_silent_connections(self) -> None:
        """10,000 silent connections are all held, then all closed at the deadline with the
        reason logged; a pair relaying meanwhile is unaffected; no relay objects leak."""
        settings = RelaySettings(
            deadlines=Deadlines(first_frame=6, partner=60, idle=60, drain=60),
            limits=ConnectionLimits(max_per_ip=0, max_unpaired=2 * N),
            bandwidth=BandwidthSettings(0, 0, 0),
        )
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        fx = RelayFixture(settings, data_dir)
        await fx.start()
        self.addCleanup(fx.stop)
        a = await fx.connect(request_relay("live"))
        await until(lambda: "live" in fx.service.relay.table.waiting)
        b = await fx.connect(request_relay("live"))
        await until(lambda: fx.service.stats().active_pairs == 1)

        child = _Child()
        reactor.spawnProcess(
            child,
            sys.executable,
            [sys.executable, "-c", _CLIENT, str(fx.port), str(N)],
            env=None,
        )
        self.addCleanup(child.kill)
        await until(lambda: "connected" in child.lines, timeout=60)
        peak = 0

        def all_held() -> bool:
            nonlocal peak
            peak = max(peak, fx.service.stats().handshaking)
            return peak >= N

        await until(all_held, timeout=30)
        self.assertEqual(fx.service.stats().connections, N + 2)

        # The pair keeps working while the flood sits there.
        assert a.transport is not None
        a.transport.write(b"during")
        await until(lambda: b.count >= 6)

        await until(lambda: fx.service.stats().handshaking == 0, timeout=30)
        await child.done
        self.assertIn(f"closed {N}", child.lines)
        reasons = [e["reason"] for e in fx.named("closed")]
        self.assertEqual(len(reasons), N)
        self.assertEqual(set(reasons), {"first-frame timeout"})

        a.transport.write(b"after")
        await until(lambda: b.count >= 11)
        self.assertEqual(bytes(b.received), b"duringafter")
        self.assertEqual(fx.service.stats().connections, 2)

        # Memory back to baseline: only the live pair's objects remain.
        await task.deferLater(reactor, 0.1)
        fx.service.relay.sweep()
        gc.collect()
        relay = fx.service.relay
        live = [o for o in gc.get_objects() if isinstance(o, RelayProtocol) and o._relay is relay]
        self.assertEqual(len(live), 2)
        self.assertLess(len(fx.service.relay.table._heap), 10)
        self.assertEqual(fx.service.relay.table.per_ip, {"127.0.0.1": 2})
