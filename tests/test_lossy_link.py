"""The NAT lab's lossy link (tests/support/lossy_link.py), which stands in for C{tc netem}.

One link direction is checked on its own with injected time (delay, rate,
tail drop, random loss, bounded memory); then the link is put between router
r2 and the public bridge of a real lab: ping from v2 sees the added round
trip, a UDP burst loses a few percent, a TCP transfer still completes through
the losses, and the plain link is back afterwards.
"""

from __future__ import annotations

import random
import re
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from .support.lossy_link import Direction, LinkShape, lossy_link
from .support.natlab import PUB_V4, PYTHON, NatLab
from .support.skips import requires

FRAME = b"\0" * 1250  # 10 ms at 1 Mbit/s


class DirectionTests(SynchronousTestCase):
    """What one direction does to frames, on a timeline the test chooses."""

    def test_delay(self) -> None:
        """A frame comes out the one-way delay after it went in, not before."""
        d = Direction(LinkShape(delay=0.020, loss=0.0, rate=None), random.Random(1).random)
        self.assertTrue(d.offer(5.0, b"frame"))
        self.assertEqual(d.take_due(5.019), [])
        self.assertEqual(d.take_due(5.020), [b"frame"])
        self.assertIsNone(d.next_due())

    def test_rate_spaces_frames(self) -> None:
        """At 1 Mbit/s a burst of 1250-byte frames leaves one per 10 ms, in order."""
        d = Direction(LinkShape(delay=0.0, loss=0.0, rate=1e6, queue=1.0), lambda: 1.0)
        frames = [bytes([i]) * 1250 for i in range(5)]
        for f in frames:
            d.offer(0.0, f)
        seen = []
        for k in range(1, 6):
            self.assertEqual(d.next_due(), k * 0.010)
            seen += d.take_due(k * 0.010)
            self.assertEqual(len(seen), k)
        self.assertEqual(seen, frames)

    def test_full_queue_drops_the_tail(self) -> None:
        """A burst beyond 50 ms of backlog is dropped; once drained, frames pass again."""
        d = Direction(LinkShape(delay=0.0, loss=0.0, rate=1e6, queue=0.050), lambda: 1.0)
        accepted = [d.offer(0.0, FRAME) for _ in range(10)]
        self.assertEqual(accepted, [True] * 5 + [False] * 5)
        self.assertEqual(d.counters.queue_dropped, 5)
        self.assertEqual(len(d.take_due(0.050)), 5)
        self.assertTrue(d.offer(0.050, FRAME))

    def test_random_loss(self) -> None:
        """About 2 % of frames are lost at random; every other frame is delivered."""
        d = Direction(LinkShape(delay=0.0, loss=0.02, rate=None), random.Random(7).random)
        delivered = []
        for i in range(10_000):
            d.offer(i * 0.001, FRAME)
            delivered += d.take_due(i * 0.001)
        c = d.counters
        self.assertTrue(150 <= c.lost <= 250, c.lost)
        self.assertEqual(len(delivered) + c.lost, 10_000)
        self.assertEqual(c.bytes_delivered, len(delivered) * len(FRAME))

    def test_memory_bounded_without_rate(self) -> None:
        """Without a rate limit the link still holds at most C{max_frames} frames."""
        shape = LinkShape(delay=1.0, loss=0.0, rate=None, max_frames=100)
        d = Direction(shape, lambda: 1.0)
        for _ in range(1000):
            d.offer(0.0, FRAME)
        self.assertEqual(d.counters.queue_dropped, 900)
        self.assertEqual(len(d.take_due(1.0)), 100)


# Counts numbered datagrams until 2 s pass without one, then prints how many.
_UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(2.0)
print('ready', flush=True)
seen = set()
s.settimeout(30.0)
while True:
    try:
        data, _ = s.recvfrom(2048)
    except socket.timeout:
        break
    seen.add(int(data[:8])); s.settimeout(2.0)
print(len(seen), flush=True)
"""
# Sends argv[3] numbered 200-byte datagrams at about 1500 a second.
_UDP_SOURCE = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(sys.argv[3])
for i in range(n):
    s.sendto(b'%08d' % i + b'x' * 192, (sys.argv[1], int(sys.argv[2])))
    if i % 15 == 14:
        time.sleep(0.01)
"""
# Sends argv[3] random bytes to the one client, prints their sha256.
_TCP_SOURCE = """
import hashlib, os, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(30)
print('ready', flush=True)
data = os.urandom(int(sys.argv[3]))
c, _ = s.accept(); c.sendall(data); c.close()
print(hashlib.sha256(data).hexdigest(), flush=True)
"""
_TCP_SINK = """
import hashlib, socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest())
"""
_RTT = re.compile(r"rtt min/avg/max/mdev = ([\d.]+)/")


@requires("netns")
class LossyLinkLabTests(SynchronousTestCase):
    """The link between r2 and pub, seen from v2 (behind r2) talking to pub."""

    def setUp(self) -> None:
        self.lab = NatLab().up()
        self.addCleanup(self.lab.down)

    def _min_rtt(self, count: int) -> float:
        out = self.lab.x("v2", "ping", "-q", "-c", str(count), "-i", "0.05", PUB_V4, check=False)
        m = _RTT.search(out.stdout)
        self.assertIsNotNone(m, f"no reply to ping: {out.stdout} {out.stderr}")
        assert m is not None
        return float(m.group(1)) / 1000

    def _server(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        proc = self.lab.popen("pub", [PYTHON, "-c", script, *args], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        self.assertEqual(proc.stdout.readline().strip(), b"ready")
        return proc

    def test_ping_sees_the_round_trip_delay_and_the_plain_link_returns(self) -> None:
        """20 ms each way adds at least 35 ms to v2's ping; afterwards it is gone again."""
        before = self._min_rtt(5)
        with lossy_link(self.lab, "r2", delay=0.020, loss=0.02, rate=20e6) as link:
            during = self._min_rtt(40)
        after = self._min_rtt(5)
        self.assertGreaterEqual(during - before, 0.035)
        self.assertLess(after, before + 0.010)
        self.assertGreater(link.counters["up"]["delivered"], 30)
        self.assertGreater(link.counters["down"]["delivered"], 30)
        links = self.lab.x("pub", "ip", "-o", "link").stdout
        self.assertNotIn("lkr2", links)
        self.assertRegex(links, r"r2@\S+.* master br0 ")

    def test_udp_burst_loses_a_few_percent(self) -> None:
        """Of 3000 datagrams from v2 to pub, between 0.5 % and 5 % are lost."""
        sent = 3000
        sink = self._server(_UDP_SINK, PUB_V4, "40000")
        with lossy_link(self.lab, "r2", delay=0.020, loss=0.02, rate=20e6) as link:
            self.lab.x("v2", PYTHON, "-c", _UDP_SOURCE, PUB_V4, "40000", str(sent))
            out, _ = sink.communicate(timeout=30)
        lost = (sent - int(out.split()[-1])) / sent
        self.assertTrue(0.005 <= lost <= 0.05, f"lost {lost:.2%} {link.counters} {out!r}")
        self.assertEqual(link.counters["up"]["queue_dropped"], 0)

    def test_tcp_transfer_completes_through_losses(self) -> None:
        """1 MiB from pub reaches v2 intact although the link dropped some of its frames."""
        size = 1 << 20
        source = self._server(_TCP_SOURCE, PUB_V4, "40001", str(size))
        with lossy_link(self.lab, "r2", delay=0.020, loss=0.02, rate=20e6) as link:
            got = self.lab.x("v2", PYTHON, "-c", _TCP_SINK, PUB_V4, "40001").stdout.split()
            out, _ = source.communicate(timeout=30)
        self.assertEqual(got, [str(size), out.decode().strip()])
        self.assertGreater(link.counters["down"]["lost"], 0)
