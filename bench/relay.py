#!/usr/bin/env python
"""Relay benchmark: LiteDesk relay against iperf3, socat and magic-wormhole-transit-relay.

Usage::

    .venv/bin/python bench/relay.py            # full run (about 5 minutes)
    .venv/bin/python bench/relay.py --quick    # throughput vs socat -b 262144 and iperf3 (< 2 min)

Every relay runs pinned to CPU 0 (``taskset -c 0``); this process and the
load generator pin themselves to CPU 1.  Everything talks to 127.0.0.1 only,
and every loop is bounded in count and in time.

The load generator of the throughput figures is bench/relay_load.c, compiled
with gcc into a temporary directory at run time (``--generator python`` or no
gcc: this process moves the bytes, and saturates its core before a relay
does).  This script opens the pairs and hands the sockets over; the C program
splices to the senders from pipes topped up with tee(2) (no copy, no page
lookups) and receives with recv(2) and MSG_TRUNC (the kernel discards the
bytes instead of copying them out) into 32 MiB receive buffers (the window
stays open, so the relay transmits its own sends).  On loopback the process
that transmits a segment pays for its receiver's TCP processing, so the
generator cannot cost much less than the relay at one pair; its share is
printed per pair count beside the relay's.  WebSocket targets
need whole frames and keep the Python generator.

Figures (MB = 10**6 bytes):

- throughput with 1, 8, 16 and 64 concurrent pairs, one direction per pair
  (A -> relay -> B), in MB/s, with its ratio to socat -b 262144 and to
  iperf3 of the same run; beside it the relay's CPU share of its core and its
  run-queue wait (runnable while another process held the core: a starved
  relay, not an idle one), the generator's CPU share, the bytes per receive
  at the receivers, and MB moved per CPU-second of the relay process tree
  (schedstat from /proc), the figure that a machine shared with other work
  disturbs least;
- 64-byte ping-pong round trip through the relay, p50 and p99 in microseconds;
- resident memory per idle pair with 5,000 pairs open (VmRSS delta / pairs);
- pairs set up per second (connect both ends, handshake, one byte through, close);
- for LiteDesk: a receiver that stops reading while the sender pushes 1 GiB
  (how far the sender gets, the relay's RSS growth, then everything drains).

The WebSocket relay (the same relay process with its WebSocket listener,
P+3) is measured for throughput only, in three directions: WebSocket to
WebSocket, WebSocket to TCP and TCP to WebSocket, with 64 KiB messages
(``--ws-message``); the sender writes whole masked frames (or BytesCodec
frames), the receiver counts the bytes it gets.  Each figure is printed with
its ratio to the TCP relay ("litedesk (default)") of the same run, and with
``--ws-reference`` also to the same relay without its fast path (autobahn
reading every frame).

iperf3 (client and server straight to each other, no relay) is the ceiling.
socat forwards A to a listener of ours (one process per connection, as
``fork`` does), with its default 8 KiB buffer and with ``-b 262144``.  The
transit relay pairs by ``please relay <64hex> for side <16hex>\\n`` / ``ok\\n``.
The LiteDesk relay runs with bandwidth limits off (hbbr's defaults would cap a
pair at 16 MiB/s) and is measured in several variants of how it reads and
writes; each figure is printed with its same-run reference as a ratio.

Throughput with the C generator, 1 / 8 / 16 / 64 pairs, and what the relay's
time goes to: bench/README.rst (``relay.py``).  The figures below predate it
(Python generator, read-sized splices).

Last full run (2026-11-22, 2 shared cores with other jobs running, so single
rounds vary up to 5x; medians of 3 rounds, ratio to socat -b 262144 same run):
default LiteDesk (read_mode auto, 256 KiB) 1514 / 1292 / 1568 MB/s at 1 / 8 /
64 pairs (2.40x / 1.22x / 4.16x; 3.8x / 7.6x / 6.1x transit-relay), 1.3-1.7x
socat's MB per CPU-second; plain Twisted (64 KiB reads) 250 / 422 / 132 MB/s;
64-byte RTT p50 123 us vs socat 87 us (1.42x); 2.55 KiB RSS per idle pair
(transit-relay 3.57); 3,223 pairs/s set up; 9,900 pairs held at once (the
container's hard RLIMIT_NOFILE of 20,000 stops 10,000); 1 GiB into a stalled
receiver: sender stalls after 12 MiB, relay RSS +604 KiB at peak, all 1 GiB
delivered once the receiver reads.

WebSocket column (2026-12-02, --quick --rounds 3 --ws-reference, 64 KiB
messages, shared 2-CPU machine with a stray process spinning on one CPU; ratio
to the TCP relay of the same run, 903 / 1335 / 1596 MB/s at 1 / 8 / 64
pairs): WebSocket to WebSocket 1111 / 1085 / 1241 MB/s (1.23x / 0.81x /
0.78x), WebSocket to TCP 917 / 1221 / 1154 (1.02x / 0.91x / 0.72x), TCP to
WebSocket 947 / 1084 / 1192 (1.05x / 0.81x / 0.75x), 1150-1600 MB per relay
CPU-second.  Without the fast path (autobahn reading every frame, the
--ws-reference rows) the directions that read WebSocket made 460-640 MB/s
(0.22x-0.71x): autobahn parsed and unmasked every frame in Python, copying
its input buffer at each frame boundary.  Before the outgoing side wrote
each message as one frame in one sendmsg (autobahn's message API sent a
header, the payload and an empty closing frame, three sends per message),
the same command gave 0.19x-0.43x reading WebSocket and 0.58x-1.09x writing
it.  The relay now spends about 60% of its time in recv and sendmsg.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import resource
import selectors
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
RELAY_CPU = 0
LOAD_CPU = 1
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1e6


# -- relay side: the LiteDesk relay as a process ---------------------------------------------


def serve_litedesk(
    port: int,
    read_size: int,
    read_mode: str,
    fast_write: bool,
    reads_per_turn: int,
    splice_max: int = 0,
    ws_port: int = 0,
    ws_fast: bool = True,
) -> None:
    """Run the LiteDesk relay on 127.0.0.1:port with limits off, until killed."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    from twisted.internet import epollreactor

    epollreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    # Log as a deployment would (formatted text), but to /dev/null.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - the log needs it until the process ends
    globalLogBeginner.beginLoggingTo([textFileLogObserver(devnull)])

    from litedesk.relay.limiter import BandwidthSettings
    from litedesk.relay.service import make_relay_service
    from litedesk.relay.settings import RelaySettings
    from litedesk.relay.table import ConnectionLimits, Deadlines

    settings = RelaySettings(
        deadlines=Deadlines(first_frame=600, partner=600, idle=600, drain=600),
        limits=ConnectionLimits(max_per_ip=0, max_unpaired=0),
        bandwidth=BandwidthSettings(0, 0, 0),
        read_size=read_size,
        early_buffer=read_size,
        read_mode=read_mode,
        fast_write=fast_write,
        reads_per_turn=reads_per_turn,
        splice_max=splice_max,
    )
    # In the run's directory, which the parent removes at the end (this
    # process is killed, so it cannot clean up itself).
    data_dir = Path(tempfile.mkdtemp(prefix="relay-", dir=os.environ.get(RUN_DIR_ENV)))
    svc = make_relay_service(
        reactor, f"tcp:{port}:interface=127.0.0.1:backlog=4096", settings, "", data_dir
    )
    svc.startService()
    if ws_port:
        # The WebSocket relay beside it, as twistd litedesk-relay runs it (P+3).
        from litedesk.websocket.proxy import TrustedProxies
        from litedesk.websocket.relay import RelayBridgeFactory

        ws = RelayBridgeFactory(
            svc.relay, proxies=TrustedProxies(), max_message=1 << 24, fast_path=ws_fast
        )
        reactor.listenTCP(ws_port, ws, backlog=4096, interface=HOST)
    reactor.run()


# -- /proc helpers ----------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], list[int]()
    while todo and len(seen) < 10000:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """CPU time of C{pid}'s threads (and its live descendants'), in seconds.

    Read from /proc/<pid>/task/<tid>/schedstat (nanoseconds): utime/stime are
    counted in 10 ms ticks per process, which rounds 64 lightly loaded socat
    children down to nothing.
    """
    total = 0
    for p in _tree(pid) if tree else [pid]:
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def free_port() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def _abort(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


# -- targets ----------------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    from litedesk.wire.bytescodec import encode_frame

    return encode_frame(payload)


def _request_relay(uuid: str) -> bytes:
    from litedesk.proto import rendezvous_pb2 as rz

    msg = rz.RendezvousMessage(request_relay=rz.RequestRelay(uuid=uuid))
    return _frame(msg.SerializeToString())


WS_MASK = b"\x37\xfa\x21\x3d"


def _ws_frame(payload: bytes) -> bytes:
    """One masked binary WebSocket frame, as a client sends it (RFC 6455 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x82, 0x80 | n))
    elif n < 65536:
        head = bytes((0x82, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x82, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = (WS_MASK * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + WS_MASK + masked


def _ws_open(port: int) -> socket.socket:
    """A WebSocket client connection to 127.0.0.1:port, handshake done."""
    s = _connect(port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws/relay HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the WebSocket handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"WebSocket handshake refused: {head[:80]!r}")
    return s


@dataclass
class Target:
    """A relay under test: how to start it and how to make one pair through it."""

    name: str
    argv: list[str]
    kind: str  # "litedesk" | "transit" | "socat" | "ws"
    env: dict[str, str] = field(default_factory=dict)
    # kind "ws": which legs are WebSocket, sender first: "ws>ws", "ws>tcp", "tcp>ws".
    mode: str = ""
    port: int = 0
    ws_port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    sink: socket.socket | None = None
    counter: int = 0

    def start(self) -> None:
        self.port = free_port()
        self.ws_port = free_port() if self.kind == "ws" else 0
        argv = [
            a.replace("{port}", str(self.port)).replace("{wsport}", str(self.ws_port))
            for a in self.argv
        ]
        if self.kind == "socat":
            self.sink = socket.socket()
            self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sink.bind((HOST, 0))
            self.sink.listen(4096)
            argv = [a.replace("{sink}", str(self.sink.getsockname()[1])) for a in argv]
        env = dict(os.environ, **self.env)
        self.proc = subprocess.Popen(
            ["taskset", "-c", str(RELAY_CPU), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"{self.name} did not start")
        time.sleep(0.2)
        if self.kind == "socat" and self.sink is not None:
            # the probe connection above reached the sink through socat: drop it
            self.sink.settimeout(2)
            with contextlib.suppress(OSError):
                self.sink.accept()[0].close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            for p in reversed(_tree(self.proc.pid)):
                with contextlib.suppress(OSError):
                    os.kill(p, 9)
            self.proc.wait(timeout=10)
            self.proc = None
        if self.sink is not None:
            self.sink.close()
            self.sink = None

    def open_pairs(self, n: int) -> list[tuple[socket.socket, socket.socket]]:
        """Open C{n} pairs; C{a} sends, C{b} receives; both ends ready for data."""
        pairs = []
        for _ in range(n):
            self.counter += 1
            tag = f"{self.counter:016x}"
            if self.kind == "socat":
                assert self.sink is not None
                a = _connect(self.port)
                self.sink.settimeout(10)
                b, _ = self.sink.accept()
                b.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            elif self.kind == "transit":
                token = hashlib.sha256(tag.encode()).hexdigest()
                a = _connect(self.port)
                a.sendall(f"please relay {token} for side {'a' * 16}\n".encode())
                b = _connect(self.port)
                b.sendall(f"please relay {token} for side {'b' * 16}\n".encode())
                if _recv_exact(a, 3) != b"ok\n" or _recv_exact(b, 3) != b"ok\n":
                    raise RuntimeError("transit relay did not say ok")
            elif self.kind == "ws":
                uuid = f"bench-{tag}"
                first = _request_relay(uuid)
                a = self._leg(self.mode.startswith("ws"), first)
                b = self._leg(self.mode.endswith("ws"), first)
            else:
                uuid = f"bench-{tag}"
                a = _connect(self.port)
                a.sendall(_request_relay(uuid))
                b = _connect(self.port)
                b.sendall(_request_relay(uuid))
            pairs.append((a, b))
        # one byte each way proves the pair is complete before timing starts
        probe, arrives = b"!", 1
        if self.kind == "ws":
            probe = _ws_frame(b"!") if self.mode.startswith("ws") else _frame(b"!")
            arrives = 3 if self.mode.endswith("ws") else 2
        for a, _b in pairs:
            a.sendall(probe)
        for _a, b in pairs:
            _recv_exact(b, arrives)
        return pairs

    def _leg(self, websocket: bool, first: bytes) -> socket.socket:
        """One relay leg: a WebSocket (its first frame sent as a message) or TCP."""
        if websocket:
            s = _ws_open(self.ws_port)
            s.sendall(_ws_frame(first[(first[0] & 3) + 1 :]))
            return s
        s = _connect(self.port)
        s.sendall(first)
        return s

    def send_buffer(self, message: int) -> bytes:
        """About 1 MiB the sender writes over and over; for a WebSocket target whole
        messages of C{message} bytes (masked frames, or frames for a TCP sender)."""
        if self.kind != "ws":
            return b"\x5a" * (1 << 20)
        payload = b"\x5a" * message
        one = _ws_frame(payload) if self.mode.startswith("ws") else _frame(payload)
        return one * max(1, (1 << 20) // len(one))


def close_pairs(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for a, b in pairs:
        _abort(a)
        _abort(b)


# -- measurements -----------------------------------------------------------------------------


@dataclass
class Flow:
    """One throughput window: what the receivers got and what it cost.

    @ivar mbps: MB/s received, all pairs together.
    @ivar per_cpu: MB moved per CPU-second of the relay (process tree).
    @ivar relay_share: the relay's CPU seconds per second of the window (1.0:
        its whole core).
    @ivar load_share: the load generator's CPU seconds per second of window.
    @ivar per_recv: bytes per receive call at the receivers.
    @ivar relay_wait: seconds per second of window the relay's threads were
        runnable but waiting for the CPU (other processes on its core; summed
        over socat's processes): a relay with a low C{relay_share} and a high
        C{relay_wait} is starved, not idle.
    """

    mbps: float
    per_cpu: float
    relay_share: float
    load_share: float
    per_recv: float
    relay_wait: float = float("nan")

    def figures(self) -> tuple[float, ...]:
        return (
            self.mbps,
            self.per_cpu,
            self.relay_share,
            self.load_share,
            self.per_recv,
            self.relay_wait,
        )


_LOAD_BINARY: list[str] = []
#: The environment variable naming the run's temporary directory.
RUN_DIR_ENV = "LITEDESK_RELAY_BENCH_DIR"


def run_dir() -> str:
    """This run's temporary directory (the generator's binary, the relays' data
    directories), made on first use and named in the environment so that the
    relay processes started later use it too; L{main} removes it."""
    path = os.environ.get(RUN_DIR_ENV)
    if path is None:
        path = tempfile.mkdtemp(prefix="litedesk-relay-bench-")
        os.environ[RUN_DIR_ENV] = path
    return path


def load_binary() -> str | None:
    """bench/relay_load.c compiled into a temporary directory (once per run), or None
    without gcc or when it does not build (the Python generator is used then)."""
    if _LOAD_BINARY:
        return _LOAD_BINARY[0] or None
    gcc = shutil.which("gcc")
    out = ""
    if gcc is not None:
        exe = os.path.join(run_dir(), "relay_load")
        src = str(Path(__file__).resolve().parent / "relay_load.c")
        built = subprocess.run([gcc, "-O2", "-o", exe, src], capture_output=True, check=False)
        if built.returncode == 0:
            out = exe
        else:
            print(f"# relay_load.c did not build: {built.stderr.decode()[:400]}", file=sys.stderr)
    _LOAD_BINARY.append(out)
    return out or None


def throughput(
    target: Target,
    npairs: int,
    seconds: float,
    warmup: float = 0.5,
    message: int = 65536,
    generator: str = "c",
) -> tuple[float, ...]:
    """L{Flow.figures} through C{npairs} pairs, A -> relay -> B.

    With C{generator} C{"c"} (and gcc at hand) the bytes are moved by
    bench/relay_load.c: splice out of tee'd pipes, recv with MSG_TRUNC in, the
    cheapest way to move them that we know of (the Python generator
    saturates its core first).  WebSocket targets
    need whole frames on the wire and keep the Python generator.
    """
    pairs = target.open_pairs(npairs)
    pids = _tree(target.pid) if target.kind == "socat" else [target.pid]
    exe = load_binary() if generator == "c" and target.kind != "ws" else None
    try:
        if exe is not None:
            flow = _c_flow(exe, pairs, pids, seconds, warmup)
        else:
            flow = _python_flow(target, pairs, pids, seconds, warmup, message)
    finally:
        close_pairs(pairs)
    time.sleep(0.3)
    return flow.figures()


def _c_flow(
    exe: str,
    pairs: list[tuple[socket.socket, socket.socket]],
    pids: list[int],
    seconds: float,
    warmup: float,
) -> Flow:
    fds_a = [a.fileno() for a, _b in pairs]
    fds_b = [b.fileno() for _a, b in pairs]
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
    res = subprocess.run(
        [
            "taskset",
            "-c",
            str(LOAD_CPU),
            exe,
            str(warmup),
            str(seconds),
            ",".join(map(str, fds_a)),
            ",".join(map(str, fds_b)),
            ",".join(map(str, pids)),
        ],
        pass_fds=fds_a + fds_b,
        capture_output=True,
        timeout=warmup + seconds + 30,
        check=True,
    )
    d = json.loads(res.stdout)
    mb = d["bytes"] / MB
    el = d["elapsed"]
    cpu = d["target_cpu"]
    return Flow(
        mb / el,
        mb / cpu if cpu > 0 else float("nan"),
        cpu / el,
        d["load_cpu"] / el,
        d["bytes"] / d["recvs"] if d["recvs"] else float("nan"),
        d["target_wait"] / el,
    )


def _python_flow(
    target: Target,
    pairs: list[tuple[socket.socket, socket.socket]],
    pids: list[int],
    seconds: float,
    warmup: float,
    message: int,
) -> Flow:
    """The same window driven from this process (WebSocket targets, or no gcc).

    B's received bytes are counted as they arrive (for a WebSocket or framed
    receiver that includes 4 or 3 header bytes per C{message} bytes).  The
    sender goes on from where its last partial send stopped, so frames stay
    whole.
    """
    sel = selectors.DefaultSelector()
    out = memoryview(target.send_buffer(message))
    pos: dict[socket.socket, int] = {}
    inbuf = bytearray(1 << 20)
    for a, b in pairs:
        a.setblocking(False)
        b.setblocking(False)
        sel.register(a, selectors.EVENT_WRITE, True)
        sel.register(b, selectors.EVENT_READ, False)
    received = recvs = 0
    t0 = time.monotonic()
    start = t0 + warmup
    end = start + seconds
    measuring = False
    cpu0 = own0 = 0.0
    t_start = start
    while True:
        now = time.monotonic()
        if not measuring and now >= start:
            measuring = True
            received = recvs = 0
            cpu0 = _cpu_of(pids)
            own0 = time.process_time()
            t_start = now
        if now >= end:
            break
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                if key.data:
                    at = pos.get(s, 0)
                    pos[s] = (at + s.send(out[at:])) % len(out)
                else:
                    n = s.recv_into(inbuf)
                    if measuring:
                        received += n
                        recvs += 1
            except (BlockingIOError, InterruptedError):
                pass
    elapsed = time.monotonic() - t_start
    cpu = _cpu_of(pids) - cpu0
    own = time.process_time() - own0
    sel.close()
    mb = received / MB
    return Flow(
        mb / elapsed,
        mb / cpu if cpu > 0 else float("nan"),
        cpu / elapsed,
        own / elapsed,
        received / recvs if recvs else float("nan"),
    )


def _cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def ping_pong(target: Target, count: int, limit: float) -> tuple[float, float]:
    """64-byte round trips A -> B -> A; p50 and p99 in microseconds."""
    [(a, b)] = target.open_pairs(1)
    msg = b"p" * 64
    samples: list[float] = []
    deadline = time.monotonic() + limit
    for i in range(count + 200):
        if time.monotonic() > deadline:
            break
        t = time.perf_counter()
        a.sendall(msg)
        _recv_exact(b, 64)
        b.sendall(msg)
        _recv_exact(a, 64)
        if i >= 200:
            samples.append((time.perf_counter() - t) * 1e6)
    close_pairs([(a, b)])
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def idle_rss(target: Target, npairs: int) -> float:
    """Relay RSS growth per idle pair, bytes, with C{npairs} pairs open."""
    warm = target.open_pairs(8)
    close_pairs(warm)
    time.sleep(0.5)
    before = rss_bytes(target.pid)
    pairs: list[tuple[socket.socket, socket.socket]] = []
    deadline = time.monotonic() + 120
    while len(pairs) < npairs and time.monotonic() < deadline:
        pairs.extend(target.open_pairs(min(250, npairs - len(pairs))))
    time.sleep(1.0)
    after = rss_bytes(target.pid)
    n = len(pairs)
    close_pairs(pairs)
    time.sleep(1.0)
    return (after - before) / max(n, 1)


def hold_pairs(target: Target, npairs: int, limit: float) -> dict[str, float]:
    """Open C{npairs} pairs at once, then push one byte each way through every one."""
    pairs: list[tuple[socket.socket, socket.socket]] = []
    t0 = time.monotonic()
    try:
        while len(pairs) < npairs and time.monotonic() - t0 < limit:
            pairs.extend(target.open_pairs(min(250, npairs - len(pairs))))
        opened = time.monotonic() - t0
        ok = 0
        for _a, b in pairs:
            b.sendall(b"?")
        for a, _b in pairs:
            if _recv_exact(a, 1) == b"?":
                ok += 1
        rss = rss_bytes(target.pid)
    finally:
        close_pairs(pairs)
    return {
        "pairs": float(len(pairs)),
        "working": float(ok),
        "seconds_to_open": opened,
        "relay_rss_MiB": rss / 2**20,
    }


def setup_rate(target: Target, total: int, limit: float, batch: int = 50) -> float:
    """Pairs per second: open both ends, handshake, one byte through, close."""
    done = 0
    t0 = time.monotonic()
    while done < total and time.monotonic() - t0 < limit:
        pairs = target.open_pairs(batch)
        close_pairs(pairs)
        done += batch
    return done / (time.monotonic() - t0)


def stalled_receiver(target: Target, total: int, limit: float) -> dict[str, float]:
    """Sender pushes C{total} bytes while the receiver reads nothing, then drains."""
    [(a, b)] = target.open_pairs(1)
    base = rss_bytes(target.pid)
    a.setblocking(False)
    b.setblocking(False)
    out = memoryview(b"\x33" * (1 << 20))
    sent = 0
    last_progress = time.monotonic()
    deadline = time.monotonic() + limit
    while sent < total and time.monotonic() < deadline:
        try:
            sent += a.send(out[: min(len(out), total - sent)])
            last_progress = time.monotonic()
        except BlockingIOError:
            if time.monotonic() - last_progress > 2.0:
                break
            time.sleep(0.01)
    stalled_at = sent
    stalled_rss = rss_bytes(target.pid) - base
    peak = stalled_rss
    got = 0
    inbuf = bytearray(1 << 20)
    sel = selectors.DefaultSelector()
    sel.register(a, selectors.EVENT_WRITE, True)
    sel.register(b, selectors.EVENT_READ, False)
    n_loops = 0
    while got < total and time.monotonic() < deadline:
        for key, _ in sel.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                if key.data:
                    if sent < total:
                        sent += s.send(out[: min(len(out), total - sent)])
                    else:
                        sel.unregister(s)
                else:
                    got += s.recv_into(inbuf)
            except BlockingIOError:
                pass
        n_loops += 1
        if n_loops % 200 == 0:
            peak = max(peak, rss_bytes(target.pid) - base)
    sel.close()
    close_pairs([(a, b)])
    return {
        "sent_before_stall_MiB": stalled_at / 2**20,
        "relay_rss_growth_at_stall_KiB": stalled_rss / 1024,
        "relay_rss_growth_peak_KiB": peak / 1024,
        "received_MiB": got / 2**20,
        "complete": float(got == total),
    }


def iperf3(npairs: int, seconds: float) -> tuple[float, ...]:
    """iperf3 server on CPU 0, client on CPU 1: L{Flow.figures} (bytes per receive unknown)."""
    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", str(RELAY_CPU), "iperf3", "-s", "-1", "-B", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        cpu0 = cpu_seconds(server.pid)
        res = subprocess.run(
            [
                "taskset",
                "-c",
                str(LOAD_CPU),
                "iperf3",
                "-c",
                HOST,
                "-p",
                str(port),
                "-J",
                "-t",
                str(seconds),
                "-O",
                "0.5",
                "-P",
                str(npairs),
            ],
            capture_output=True,
            timeout=seconds + 30,
        )
        cpu = cpu_seconds(server.pid) - cpu0
        data = json.loads(res.stdout)
        got = data["end"]["sum_received"]
        el = got["seconds"]
        # iperf3's own CPU figures (percent of one core over the test): the
        # server's is the reference's "relay" share, the client's its generator's.
        use = data["end"].get("cpu_utilization_percent", {})
        return (
            got["bytes"] / el / MB,
            (got["bytes"] / MB) / cpu if cpu else float("nan"),
            float(use.get("remote_total", float("nan"))) / 100,
            float(use.get("host_total", float("nan"))) / 100,
            float("nan"),
            float("nan"),
        )
    finally:
        server.kill()
        server.wait()


# -- the run ----------------------------------------------------------------------------------


def litedesk_target(
    name: str,
    read_size: int,
    mode: str,
    fast: bool,
    env: dict[str, str] | None = None,
    reads_per_turn: int = 1,
    splice_max: int = 0,
) -> Target:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "{port}",
        "--read-size",
        str(read_size),
        "--read-mode",
        mode,
    ]
    if not fast:
        argv.append("--no-fast-write")
    argv += ["--reads-per-turn", str(reads_per_turn), "--splice-max", str(splice_max)]
    return Target(name, argv, "litedesk", env=env or {})


def targets(variants: bool, fast: bool, ws_reference: bool = False) -> list[Target]:
    twistd = str(Path(sys.executable).parent / "twistd")
    out = [
        Target(
            "socat",
            [
                "socat",
                "TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                "TCP:127.0.0.1:{sink}",
            ],
            "socat",
        ),
        Target(
            "socat -b 262144",
            [
                "socat",
                "-b",
                "262144",
                "TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                "TCP:127.0.0.1:{sink}",
            ],
            "socat",
        ),
    ]
    if importlib.util.find_spec("wormhole_transit_relay") is not None:
        out.append(
            Target(
                "transit-relay",
                [
                    twistd,
                    "-n",
                    "--pidfile=",
                    "transitrelay",
                    "--port=tcp:{port}:interface=127.0.0.1",
                ],
                "transit",
            )
        )
    else:
        print("# magic-wormhole-transit-relay is not installed: no transit column", flush=True)
    if variants:
        out += [
            litedesk_target("litedesk plain 64K", 65536, "twisted", False),
            litedesk_target("litedesk 256K", 262144, "twisted", False),
            litedesk_target(
                "litedesk 256K mmap-thr",
                262144,
                "twisted",
                False,
                {"MALLOC_MMAP_THRESHOLD_": "4194304", "MALLOC_TRIM_THRESHOLD_": "16777216"},
            ),
            litedesk_target("litedesk splice 1M", 1 << 20, "splice", True),
        ]
    if variants or fast:
        out += [
            litedesk_target("litedesk fast-write 256K", 262144, "twisted", True),
            litedesk_target("litedesk recv_into 256K", 262144, "recv_into", True),
            litedesk_target("litedesk splice 256K", 262144, "splice", True),
            litedesk_target("litedesk auto 4 reads/turn", 262144, "auto", True, None, 4),
            litedesk_target("litedesk auto splice<=1M", 262144, "auto", True, None, 1, 1 << 20),
        ]
    from litedesk.relay.settings import RelaySettings

    d = RelaySettings()
    out.append(
        litedesk_target(
            "litedesk (default)",
            d.read_size,
            d.read_mode,
            d.fast_write,
            None,
            d.reads_per_turn,
            d.splice_max,
        )
    )
    # The WebSocket relay: the default relay with its WebSocket listener, one
    # process per direction (sender > receiver).
    # With --ws-reference, the same with autobahn reading every frame (no
    # fast path), as before the fast path existed.
    for fast_path in (True, False) if ws_reference else (True,):
        for mode in ("ws>ws", "ws>tcp", "tcp>ws"):
            name = f"litedesk websocket {mode}" + ("" if fast_path else " autobahn")
            t = litedesk_target(name, d.read_size, d.read_mode, d.fast_write)
            t.argv += ["--ws-serve", "{wsport}"] + ([] if fast_path else ["--ws-autobahn"])
            t.kind = "ws"
            t.mode = mode
            out.append(t)
    return out


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def ratio(x: float, ref: float) -> str:
    return f"{x / ref:5.2f}x" if ref and ref == ref else "  n/a"


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--read-size", type=int, default=262144, help=argparse.SUPPRESS)
    ap.add_argument("--read-mode", default="auto", help=argparse.SUPPRESS)
    ap.add_argument("--no-fast-write", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reads-per-turn", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--splice-max", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ws-serve", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--ws-autobahn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--ws-reference",
        action="store_true",
        help="also measure the WebSocket relay with autobahn reading every frame "
        "(no fast path), for a same-run reference",
    )
    ap.add_argument(
        "--ws-message",
        type=int,
        default=65536,
        help="WebSocket targets: bytes per message (frame for a TCP sender)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="throughput only, of socat -b 262144, the default relay and iperf3, in 1 s "
        "windows (under 2 minutes); --only, --skip and --variants still apply",
    )
    ap.add_argument(
        "--generator",
        choices=["c", "python"],
        default="c",
        help="load generator: c (bench/relay_load.c, built with gcc at run time: splice "
        "out, MSG_TRUNC in) or python (this process; saturates before the relays do)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="repeat each figure; report the median")
    ap.add_argument(
        "--variants",
        choices=["all", "fast", "none"],
        default=None,
        help="LiteDesk variants: all (incl. plain Twisted, allocator), fast (the fast "
        "read/write paths only), none (only the default)",
    )
    ap.add_argument("--only", default=None, help="comma-separated target name substrings")
    ap.add_argument(
        "--hold",
        type=int,
        default=9900,
        help="pairs to hold at once (each costs the relay and this process 2 descriptors; "
        "9,900 fits a hard RLIMIT_NOFILE of 20,000)",
    )
    ap.add_argument(
        "--skip",
        default=None,
        help="comma-separated sections to skip: tput,rtt,rss,setup,stall,hold",
    )
    args = ap.parse_args()
    # --quick: the throughput table against its two references only.
    if args.variants is None:
        args.variants = "none" if args.quick else "all"
    if args.only is None:
        args.only = "socat -b 262144,litedesk (default)" if args.quick else ""
    if args.skip is None:
        args.skip = "rtt,rss,setup,stall,hold" if args.quick else ""
    return args


def main() -> int:
    args = _parse_args()
    if args.serve:
        serve_litedesk(
            args.serve,
            args.read_size,
            args.read_mode,
            not args.no_fast_write,
            args.reads_per_turn,
            args.splice_max,
            args.ws_serve,
            not args.ws_autobahn,
        )
        return 0

    for tool in ("taskset", "socat", "iperf3"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: apt-get install -y iperf3 socat util-linux", file=sys.stderr)
            return 1
    ours = RUN_DIR_ENV not in os.environ
    tmp = run_dir()
    try:
        return _run(args)
    finally:
        if ours:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    """The benchmark proper (L{main} without its argument handling and clean-up)."""
    os.sched_setaffinity(0, {LOAD_CPU})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    seconds = 1.0 if args.quick else 2.0
    idle_pairs = 1000 if args.quick else 5000
    skip = set(filter(None, args.skip.split(",")))
    only = [x for x in args.only.split(",") if x]

    print(
        f"# relay bench: relay on CPU {RELAY_CPU}, load generator on CPU {LOAD_CPU}; "
        f"{seconds:g} s windows, {args.rounds} rounds (median); MB = 10^6 bytes",
        flush=True,
    )
    chosen = [
        t
        for t in targets(args.variants == "all", args.variants == "fast", args.ws_reference)
        if not only or any(o in t.name for o in only)
    ]
    samples = _run_rounds(
        chosen, args.rounds, args.quick, skip, seconds, args.ws_message, args.generator
    )
    results = _medians(samples)
    _memory_figures(chosen, results, skip, idle_pairs, args.hold)
    report(results, idle_pairs)
    return 0


Samples = dict[str, dict[str, list[tuple[float, ...]]]]


def _run_rounds(
    chosen: list[Target],
    rounds: int,
    quick: bool,
    skip: set[str],
    seconds: float,
    ws_message: int = 65536,
    generator: str = "c",
) -> Samples:
    """Throughput, round trip and set-up rate of each target, C{rounds} times."""
    pair_counts = [1, 8, 16, 64]
    samples: Samples = {}

    def add(name: str, key: str, value: tuple[float, ...]) -> None:
        samples.setdefault(name, {}).setdefault(key, []).append(value)

    # All relays run side by side (idle ones cost nothing) and every round visits
    # each in turn, so noise from other work on the machine hits them alike.
    for t in chosen:
        t.start()
    try:
        for rnd in range(rounds):
            if "tput" not in skip:
                for n in pair_counts:
                    add("iperf3 (no relay)", f"tput{n}", iperf3(n, seconds))
            for t in chosen:
                if "tput" not in skip:
                    for n in pair_counts:
                        add(
                            t.name,
                            f"tput{n}",
                            throughput(t, n, seconds, message=ws_message, generator=generator),
                        )
                # WebSocket targets: throughput only (these probes speak raw TCP).
                if "rtt" not in skip and t.kind != "ws":
                    add(t.name, "rtt", ping_pong(t, 2000 if quick else 5000, 10))
                if "setup" not in skip and t.kind != "ws":
                    add(t.name, "setup", (setup_rate(t, 500 if quick else 1000, 10),))
                print(f"round {rnd + 1}: {t.name} done", flush=True)
    finally:
        for t in chosen:
            t.stop()
    return samples


def _medians(samples: Samples) -> dict[str, dict[str, object]]:
    """Per target and figure: the median of the rounds, all rounds, and the best one."""
    results: dict[str, dict[str, object]] = {}
    for name, keys in samples.items():
        r = results.setdefault(name, {})
        for key, vals in keys.items():
            r[key] = tuple(median([v[i] for v in vals]) for i in range(len(vals[0])))
            r[key + ":all"] = vals
            best = min if key == "rtt" else max
            r[key + ":best"] = best(vals, key=lambda v: v[0])
        print(name, {k: v for k, v in r.items() if ":" not in k}, flush=True)
    return results


def _memory_figures(
    chosen: list[Target],
    results: dict[str, dict[str, object]],
    skip: set[str],
    idle_pairs: int,
    hold: int,
) -> None:
    """Idle RSS, a stalled receiver and pairs held: each needs a fresh relay process."""
    for t in chosen:
        if t.kind == "socat":
            continue
        if t.name.startswith("litedesk (") or t.kind == "transit":
            t.start()
            try:
                if "rss" not in skip:
                    results.setdefault(t.name, {})["rss"] = idle_rss(t, idle_pairs)
                if "stall" not in skip and t.kind == "litedesk":
                    results[t.name]["stall"] = stalled_receiver(t, 1 << 30, 120)
                if "hold" not in skip:
                    results[t.name]["hold"] = hold_pairs(t, hold, 120)
            finally:
                t.stop()
            print(t.name, {k: results[t.name].get(k) for k in ("rss", "stall", "hold")}, flush=True)


def _get(r: dict[str, object], key: str, i: int = 0) -> float:
    """Figure C{i} of C{r[key]} (a tuple or a number); NaN when it was not measured."""
    v = r.get(key)
    if isinstance(v, tuple):
        return float(v[i])
    return float(v) if isinstance(v, (int, float)) else float("nan")


def report(results: dict[str, dict[str, object]], idle_pairs: int) -> None:
    print()
    _report_throughput(results)
    _report_websocket(results)
    _report_latency_and_setup(results)
    print(f"## relay RSS per idle pair with {idle_pairs} pairs (ratio to transit); goal <= 3 KiB")
    tr = results.get("transit-relay", {})
    for name, r in results.items():
        if "rss" in r:
            v = _get(r, "rss")
            print(f"  {name:28s} {v / 1024:8.2f} KiB  ({ratio(v, _get(tr, 'rss'))})")
    for name, r in results.items():
        if "stall" in r:
            print(f"## {name}: receiver stopped while sender pushes 1 GiB: {r['stall']}")
    for name, r in results.items():
        if "hold" in r:
            print(f"## {name}: pairs held at once: {r['hold']}")


def _report_throughput(results: dict[str, dict[str, object]]) -> None:
    sb = results.get("socat -b 262144", {})
    sd = results.get("socat", {})
    tr = results.get("transit-relay", {})
    ip = results.get("iperf3 (no relay)", {})
    get = _get
    for n in (1, 8, 16, 64):
        k = f"tput{n}"
        print(
            f"## throughput, {n} pair(s), median of rounds: MB/s (ratio to socat -b 262144 | "
            "iperf3 | socat | transit; goals >= 1.2x socat -b 262144, >= 0.7x iperf3)  "
            "relay CPU share of its core (its run-queue wait: other work on that core)  "
            "generator's share of its core (goal < ~0.5)  bytes per receive  "
            "MB per relay CPU-s (ratio to socat -b 262144)  best round (ratio to socat -b "
            "262144's best)"
        )
        for name, r in results.items():
            if k not in r:
                continue
            v, eff = get(r, k, 0), get(r, k, 1)
            share, load, per_recv = get(r, k, 2), get(r, k, 3), get(r, k, 4)
            wait = get(r, k, 5)
            vb = get(r, k + ":best")
            print(
                f"  {name:28s} {v:8.1f} MB/s ({ratio(v, get(sb, k))} | {ratio(v, get(ip, k))} "
                f"| {ratio(v, get(sd, k))} | {ratio(v, get(tr, k))})  relay {share:4.2f} "
                f"(wait {wait:4.2f})  gen {load:4.2f}  {per_recv / 1024:7.1f} KiB/recv  "
                f"{eff:7.1f} MB/CPU-s "
                f"({ratio(eff, get(sb, k, 1))})  best {vb:7.1f} ({ratio(vb, get(sb, k + ':best'))})"
            )


def _report_websocket(results: dict[str, dict[str, object]]) -> None:
    ref = results.get("litedesk (default)", {})
    ws = {name: r for name, r in results.items() if name.startswith("litedesk websocket")}
    if not ws:
        return
    print(
        "## WebSocket relay throughput, MB/s (ratio to the TCP relay, litedesk (default), "
        "same run; goal >= 0.7x)   MB per relay CPU-s (ratio)   [ratio to autobahn alone]"
    )
    for n in (1, 8, 16, 64):
        k = f"tput{n}"
        for name, r in ws.items():
            if k not in r:
                continue
            v, eff = _get(r, k, 0), _get(r, k, 1)
            alone = results.get(name + " autobahn", {})
            extra = (
                f"   [{ratio(v, _get(alone, k))} | {ratio(eff, _get(alone, k, 1))}]"
                if k in alone
                else ""
            )
            print(
                f"  {n:2d} pair(s) {name:34s} {v:8.1f} MB/s ({ratio(v, _get(ref, k))})   "
                f"{eff:8.1f} MB/CPU-s ({ratio(eff, _get(ref, k, 1))}){extra}"
            )


def _report_latency_and_setup(results: dict[str, dict[str, object]]) -> None:
    sb = results.get("socat -b 262144", {})
    sd = results.get("socat", {})
    tr = results.get("transit-relay", {})
    get = _get
    print("## 64-byte ping-pong round trip, us: p50 p99 (p50 ratio to socat | socat -b 262144)")
    for name, r in results.items():
        if "rtt" in r:
            p50, p99 = get(r, "rtt", 0), get(r, "rtt", 1)
            print(
                f"  {name:28s} {p50:8.1f} {p99:8.1f}   ({ratio(p50, get(sd, 'rtt'))} | "
                f"{ratio(p50, get(sb, 'rtt'))})"
            )
    print("## pairs set up per second (ratio to socat -b 262144 | transit)")
    for name, r in results.items():
        if "setup" in r:
            v = get(r, "setup")
            print(
                f"  {name:28s} {v:8.0f}/s  ({ratio(v, get(sb, 'setup'))} | "
                f"{ratio(v, get(tr, 'setup'))})"
            )


if __name__ == "__main__":
    sys.exit(main())
