"""Hostile clients against a real ``twistd litedesk-relay``: early data on unpaired relay legs.

Issue 9, bug 6: 1,024 relay connections that each send a RequestRelay and then
256 KiB without a partner used to raise the relay's RSS from 54 to 440 MiB,
so the default max-unpaired of 10,000 allowed ~3.7 GiB.  Now a waiting leg
keeps at most --relay-early-buffer bytes and all of them together at most
--relay-early-budget (plus a small reserve each); the rest stays in the kernel
until the partner arrives (docs/protocol.rst §6).

The attacker lives in a child process bound to 127.0.0.2-127.0.0.6 (250
connections per address, under the default max-connections-per-ip of 256), so
the legitimate peers on 127.0.0.1 meet no per-source limit.  Takes a few seconds.
"""

from __future__ import annotations

import hashlib
import os
import random
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import encode_frame

from .support.ports import free_port_pair
from .support.processes import RelayProcess
from .support.relay import raise_nofile

LEGS = 1024
EARLY = 256 * 1024
SEED = 9
MIB = 1024 * 1024

# The flooding client.  Every leg sends its RequestRelay and then EARLY bytes:
# the shared block rotated by a per-leg offset, so that each leg's stream is
# distinct (a mix-up between legs would show) while the child holds one block.
# It keeps writing whatever the kernel accepts, reports when nothing moved for
# a second, and runs until its stdin closes (or 90 s pass).
_FLOOD = r"""
import random, resource, select, socket, sys, time
port, legs, size, seed = (int(x) for x in sys.argv[1:5])
sys.path.insert(0, sys.argv[5])
from litedesk.proto import rendezvous_pb2 as rz
from litedesk.wire.bytescodec import encode_frame

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < legs + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, legs + 64), hard))
block = memoryview(random.Random(seed).randbytes(size))
ep = select.epoll()
socks, pending = {}, {}
for i in range(legs):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 250}", 0))
    s.setblocking(False)
    s.connect_ex(("127.0.0.1", port))
    msg = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=f"flood-{i}"))
    k = i * 4099 % size
    socks[s.fileno()] = s
    pending[s.fileno()] = [memoryview(encode_frame(msg.SerializeToString())), block[k:], block[:k]]
    ep.register(s.fileno(), select.EPOLLOUT)
ep.register(sys.stdin.fileno(), select.EPOLLIN)
print("connected", legs, flush=True)
sent, last, told = 0, time.monotonic(), False
end = time.monotonic() + 90
while time.monotonic() < end:
    for fd, ev in ep.poll(0.1):
        if fd == sys.stdin.fileno():
            sys.exit(0)
        parts = pending.get(fd)
        if parts is None:
            continue
        try:
            n = socks[fd].send(parts[0][:65536])
        except BlockingIOError:
            continue
        except OSError as e:
            print("error", fd, e, flush=True)
            ep.unregister(fd)
            del pending[fd]
            continue
        sent += n
        last = time.monotonic()
        told = False
        parts[0] = parts[0][n:]
        while parts and not len(parts[0]):
            parts.pop(0)
        if not parts:
            ep.unregister(fd)
            del pending[fd]
    if not told and (not pending or time.monotonic() - last > 1.0):
        print("settled", sent, len(pending), flush=True)
        told = True
"""


def leg_stream(i: int) -> bytes:
    """What flood leg C{i} sends after its first frame."""
    block = random.Random(SEED).randbytes(EARLY)
    k = i * 4099 % EARLY
    return block[k:] + block[:k]


def request_relay(uuid: str) -> bytes:
    msg = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid))
    return encode_frame(msg.SerializeToString())


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of C{pid}, bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wait_quiet(pid: int, limit: float = 20.0) -> None:
    """Wait until C{pid} used no CPU over three 0.2 s polls: it has read what it will read."""
    deadline = time.monotonic() + limit
    quiet, last = 0, cpu_ticks(pid)
    while quiet < 3:
        if time.monotonic() > deadline:
            raise AssertionError(f"relay still busy after {limit} s")
        time.sleep(0.2)
        now = cpu_ticks(pid)
        quiet = quiet + 1 if now == last else 0
        last = now


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def relay_pair(port: int, uuid: str, early: bytes, a_to_b: bytes, b_to_a: bytes) -> None:
    """A legitimate pair: A sends C{early} bytes behind its first frame, B joins right
    away (whichever first frame the relay reads first waits), both exchange data.

    @raise AssertionError: anything arrives changed, short or out of order.
    """
    a = socket.create_connection(("127.0.0.1", port), timeout=20)
    b = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        a.sendall(request_relay(uuid) + early)
        b.sendall(request_relay(uuid) + b_to_a)
        # A writes from a thread while B reads here: both blocking sockets, and
        # more than the kernel buffers hold is on the way.
        writer = threading.Thread(target=a.sendall, args=(a_to_b,), daemon=True)
        writer.start()
        got_b = recv_exact(b, len(early) + len(a_to_b))
        got_a = recv_exact(a, len(b_to_a))
        writer.join(20)
    finally:
        a.close()
        b.close()
    if hashlib.sha256(got_b).digest() != hashlib.sha256(early + a_to_b).digest():
        raise AssertionError("A's bytes arrived changed")
    if got_a != b_to_a:
        raise AssertionError("B's bytes arrived changed")


class EarlyDataFloodTests(SynchronousTestCase):
    """1,024 unpaired legs with 256 KiB of early data each against the real relay process."""

    def setUp(self) -> None:
        # The relay raises its own limit; the flooding child inherits this
        # process's, raised here (root may raise the hard limit too).
        raise_nofile(LEGS + 64)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < LEGS + 64:
            self.fail(f"RLIMIT_NOFILE {soft} is below the {LEGS + 64} the flood needs")
        tmp = Path(self.mktemp())
        tmp.mkdir()
        self.log = tmp / "relay.log"
        port = free_port_pair()
        self.relay = RelayProcess(tmp / "data", port, self.log, "--key", "")
        self.addCleanup(self.relay.stop)
        self.port = port + 1

    def flood(self) -> subprocess.Popen[str]:
        root = str(Path(__file__).resolve().parent.parent)
        child = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, str(self.port), str(LEGS), str(EARLY), str(SEED), root],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

        def stop() -> None:
            if child.poll() is None:
                assert child.stdin is not None
                child.stdin.close()
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
            assert child.stdout is not None
            child.stdout.close()

        self.addCleanup(stop)
        return child

    def read_line(self, child: subprocess.Popen[str], prefix: str, limit: float = 40) -> str:
        assert child.stdout is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 0.5)
            if ready:
                line = child.stdout.readline()
                if not line:
                    break
                if line.startswith("error"):
                    self.fail(f"flood client: {line.strip()}")
                if line.startswith(prefix):
                    return line
        self.fail(f"flood client did not report {prefix!r}")

    def test_unpaired_flood_memory_bounded_and_nothing_lost(self) -> None:
        """1,024 unpaired legs each sending a RequestRelay and 256 KiB: the relay's RSS grows by
        at most 64 MiB (it grew by ~385 MiB before), one warning is logged, a legitimate pair
        relays correctly meanwhile, and flood legs that are paired later deliver every byte
        in order (SHA-256), although the budget was exhausted."""
        pid = self.relay.proc.pid
        # Warm-up: a pair that moves some data makes the relay allocate what any
        # paired leg uses (the shared read buffer and pipe) before the baseline.
        relay_pair(self.port, "warm-up", b"w" * 1000, os.urandom(512 * 1024), b"x" * 1000)
        wait_quiet(pid)
        before = proc_status(pid)
        files_before = open_files(pid)

        child = self.flood()
        self.read_line(child, "connected")
        self.read_line(child, "settled")
        wait_quiet(pid)
        during = proc_status(pid)
        files_during = open_files(pid)
        growth = during["VmHWM"] - before["VmRSS"]
        print(
            f"relay RSS {before['VmRSS'] / MIB:.1f} MiB before, peak {during['VmHWM'] / MIB:.1f}"
            f" MiB with {LEGS} unpaired legs (+{growth / MIB:.1f} MiB); open files "
            f"{files_before} -> {files_during}"
        )
        self.assertLessEqual(growth, 64 * MIB)
        self.assertGreaterEqual(files_during, files_before + LEGS)
        self.assertLessEqual(files_during, files_before + LEGS + 16)

        # A legitimate pair during the flood: early bytes (a ClientHello's worth)
        # and 4 MiB through, unchanged.
        relay_pair(self.port, "legit", os.urandom(2048), os.urandom(4 * MIB), os.urandom(65536))

        # Flood legs whose partner arrives after all deliver everything, in order.
        for i in (0, 1, LEGS // 2, LEGS - 1):
            with socket.create_connection(("127.0.0.1", self.port), timeout=20) as p:
                p.sendall(request_relay(f"flood-{i}"))
                got = recv_exact(p, EARLY)
            self.assertEqual(
                hashlib.sha256(got).hexdigest(), hashlib.sha256(leg_stream(i)).hexdigest(), i
            )
        after = proc_status(pid)
        self.assertLessEqual(after["VmHWM"] - before["VmRSS"], 64 * MIB)

        text = self.log.read_text()
        warnings = text.count("early-data budget of 16777216 bytes exhausted")
        # Rate-limited: one line per 10 s, not one per paused connection.
        self.assertGreaterEqual(warnings, 1)
        self.assertLessEqual(warnings, 3)
