"""Session benchmark: LiteDesk TLS, the RustDesk protocol and x11vnc on one display and script.

Run from the repository root::

    .venv/bin/python bench/session.py [--quick] [--json FILE] [--lan]
        [--nodelay] [--profile FILE] [--seconds S] [--seed N]

One run starts its own Xvfb 1920x1080x24 (C{-displayfd}, C{-noreset}) and a
scripted desktop (bench/session_workload.py: a wallpaper, a click target,
and one phase at a time of typing into an editor at 15 characters/s,
scrolling text at 20 lines/s, or a 640x480 text window moving at 395 px/s).
Then, one system after the other, with the same phases and durations
(15 s measured per phase after a 1.5 s warm-up; 5 s after 1 s with
C{--quick}):

  1. LiteDesk, the realistic path: C{twistd litedesk-relay} and
     C{twistd litedesk-host --password-file} on the display, and an
     in-process viewer (L{ViewerSession} over the pinned TLS, through the
     relay as with C{--force-relay}), default options (H.264, image quality
     Balanced, the host's 30 fps ceiling).  Then one extra phase,
     C{moving@60fps}: the same moving window after the viewer asked for
     C{custom_fps=60}, to show whether there is headroom above the ceiling;
  2. with C{--lan}, LiteDesk again over the LAN path (no relay);
  3. with C{--nodelay} (an experiment), LiteDesk through the relay with
     TCP_NODELAY on every socket of the host's process and on the viewer's
     (the host itself sets it on its session socket once the screen
     streams, since issue 15; the viewer does not);
  4. the RustDesk protocol: a stock RustDesk client
     (bench/rustdesk_session_client.py, from the stock-client emulators in
     tests/support/) logged in to the same host agent over RustDesk's own
     encrypted session; it announces VP9, VP8 and AV1 as a stock desktop
     client does, so the host sends VP9, which it decodes with PyAV.  Its
     path is L{RUSTDESK_VIA}; then, like LiteDesk, C{moving@60fps} after the
     client's frame-rate setting asked for 60;
  5. the reference: C{x11vnc} on the same display (flags in L{X11VNC_FLAGS})
     and an in-process vncdotool RFB client asking for ZRLE (the best
     encoding vncdotool speaks) and keeping one incremental update request
     outstanding, as real VNC viewers do.

For every phase it measures, over the same window of time:

  - C{fps}: pictures delivered to the viewer per second (LiteDesk and
    RustDesk: decoded video frames; VNC: framebuffer updates carrying pixels);
  - C{bytes/s}: everything the viewer received on its socket (LiteDesk: TLS
    records, i.e. video, cursor, keepalives; RustDesk: its sealed frames;
    VNC: RFB); for LiteDesk and RustDesk also the encoded video alone;
  - C{host CPU}: CPU time of the host agent process (C{twistd litedesk-host}
    or C{x11vnc}, all threads, from /proc/PID/stat) in % of one core; the X
    server's, the relay's and this process's (the viewer) are shown too;
  - C{latency}: input to pixel.  Every 0.15-0.35 s (seeded, identical for
    every system) the viewer clicks the target; the workload's Tk window
    flips its colour on the button press.  Latency runs from just before the
    click is written to the viewer's socket until the viewer has decoded a
    picture in which the target's centre shows the new colour (LiteDesk and
    RustDesk: the pixel of the decoded frame; VNC: the pixel of the decoded
    ZRLE tile).  A
    click with no change within 1.5 s counts as missed.  The workload logs
    the time of each flip, which splits the latency into C{input} (click to
    flip on the host) and C{display} (flip to pixels at the viewer);
  - C{RTT max}: the largest round trip the LiteDesk host measured with its
    TestDelay pings (both viewers echo them); its adaptive controller lowers
    the frame rate and bitrate when the queueing part exceeds 100 ms.

Then it prints a table per phase and overall (the three phases; not
C{moving@60fps}), the ratios LiteDesk through the relay / VNC and RustDesk /
LiteDesk through the relay, and PASS/MISS against the goals of issue 4
(LiteDesk) and of issue 11 (the RustDesk protocol's VP9 against LiteDesk's
H.264, as ratios measured in this run: motion >= 30 fps, bytes <= 1.5 x,
host CPU <= 1.5 x, click-to-pixel p50 at most 10 ms above).  C{--profile
FILE} runs py-spy on the host agent during the LiteDesk relay phase
C{--profile-phase} (default: moving) and prints its hottest frames.

Fairness notes: all processes share the same 2 cores, and every viewer runs
in this process, on the reactor's thread (the LiteDesk one decodes every
H.264 frame to RGB, the RustDesk one every VP9 frame; the VNC one decodes in
pure Python only the ZRLE rectangles that contain the sampled pixel and just
inflates the others, so the VNC client never becomes the bottleneck).  The
RustDesk client sets TCP_NODELAY on its socket, as RustDesk does; the
LiteDesk host does on its session socket, the LiteDesk viewer does not
(C{--nodelay} measures that).  The machine may be
running other work: the load average is printed at the start and the end,
and the numbers move with it.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import ctypes
import json
import os
import random
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from struct import unpack
from typing import Any, Protocol

from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import ClientFactory
from twisted.internet.task import deferLater, react
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from procfs import cpu_seconds  # noqa: E402
from rustdesk_session_client import (  # noqa: E402
    RustDeskStream,
    adopt,
    host_key_from_config,
    log_in,
    open_direct,
    open_via_relay,
)

from litedesk.heap import keep_freed_memory  # noqa: E402
from litedesk.input.mouse import MouseButton, encode_mask  # noqa: E402
from litedesk.proto import message_pb2 as pb  # noqa: E402
from litedesk.rustdesk.viewer_detect import HostDetector  # noqa: E402
from litedesk.screen.decode import DecodedFrame  # noqa: E402
from litedesk.session.links import connect_relay  # noqa: E402
from litedesk.session.pinning import viewer_context_factory  # noqa: E402
from litedesk.session.tls import wrap_client  # noqa: E402
from litedesk.session.viewer_session import ViewerSession  # noqa: E402
from litedesk.viewer.route import find_host  # noqa: E402

# vncdotool warns that subclasses overriding updateRectangle/fillRectangle may
# break in a later release; this benchmark pins nothing and accepts that.
warnings.filterwarnings("ignore", category=FutureWarning, module=__name__)
from vncdotool.rfb import Encoding, PixelFormat, RFBClient  # noqa: E402

W, H = 1920, 1080
WORKLOAD = REPO / "bench" / "session_workload.py"
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
# For the --nodelay experiment: the same twistd with TCP_NODELAY on every TCP
# socket it opens or accepts (litedesk/ sets it only on a session's socket
# once its screen streams: litedesk/screen/backpressure.py).
NODELAY_PATCH = """
import socket
from twisted.internet import tcp
_create = tcp.BaseClient.createInternetSocket
def _nodelay(self):
    s = _create(self)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s
tcp.BaseClient.createInternetSocket = _nodelay
_init = tcp.Server.__init__
def _server(self, sock, *args, **kw):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _init(self, sock, *args, **kw)
tcp.Server.__init__ = _server
from twisted.scripts.twistd import run
run()
"""
TWISTD_NODELAY = [sys.executable, "-c", NODELAY_PATCH]
PHASES = ("typing", "scrolling", "moving")
# LiteDesk's host caps the frame rate at 30 fps unless the viewer asks for
# more (custom_fps, up to 60): this extra phase, LiteDesk through the relay
# only, repeats "moving" with custom_fps=60 to show the headroom above the cap.
CAPACITY = "moving@60fps"
# Where the RustDesk client (bench/rustdesk_session_client.py) reaches the
# host, in this one place.  "relay": as the LiteDesk viewer, through the
# rendezvous server and the relay (a stock client with "force relay", the
# host key the server signs); "listen": the host's direct --listen port, no
# server in the way (the key exchange with the key the host's config dir
# holds), which leaves the relay out of the comparison.
RUSTDESK_VIA = "relay"
RUSTDESK = f"rustdesk-{RUSTDESK_VIA}"
PASSWORD = "bench-password-4"
PEER_ID = "bench04"
PEER_ID_NODELAY = "bench05"  # a second agent (own config dir) for the --nodelay run

# The click target of session_workload.py: click in its top-left quarter,
# sample its centre (never under the pointer).
TARGET_X, TARGET_Y, TARGET_W, TARGET_H = 1720, 40, 160, 160
CLICK = (TARGET_X + 40, TARGET_Y + 40)
SAMPLE = (TARGET_X + TARGET_W // 2, TARGET_Y + TARGET_H // 2)
CLICK_GAP = (0.15, 0.35)
CLICK_TIMEOUT = 1.5

# x11vnc, tuned to be as responsive as it gets rather than as frugal as its
# defaults: poll every 10 ms and send after 10 ms (defaults 20/20), never
# nap or back off when idle or busy, poll the whole screen rather than trust
# X DAMAGE hints, no wireframe (always the real window contents) and no
# client-side cache (vncdotool has none).
X11VNC_FLAGS = (
    "-localhost",
    "-nopw",
    "-forever",
    "-shared",
    "-noxdamage",
    "-nonap",
    "-nowait_bog",
    "-wait",
    "10",
    "-defer",
    "10",
    "-nowf",
    "-ncache",
    "0",
    "-quiet",
)

GOAL_FPS = 30.0
GOAL_MBPS = 1.0
GOAL_BYTES_RATIO = 0.3
GOAL_P50_MS = 50.0
# Issue 11: the RustDesk protocol (VP9) against LiteDesk's TLS session (H.264).
GOAL_VP9_BYTES_RATIO = 1.5
GOAL_VP9_CPU_RATIO = 1.5
GOAL_VP9_P50_MARGIN_MS = 10.0

PR_SET_PDEATHSIG = 1


# -- processes ------------------------------------------------------------------


def _die_with_parent() -> None:
    # In the child between fork and exec: if this benchmark is killed, the
    # kernel sends its children SIGTERM, so nothing outlives it.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Processes:
    """Every child process this benchmark starts, stopped in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        *,
        pipes: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.out", "wb")  # noqa: SIM115 - closed below
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipes else log,
                stderr=log,
                pass_fds=pass_fds,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()


def start_xvfb(procs: Processes, timeout: float = 15.0) -> tuple[subprocess.Popen[bytes], str]:
    """Xvfb on a display number it picks itself (C{-displayfd})."""
    rfd, wfd = os.pipe()
    try:
        proc = procs.spawn(
            "xvfb",
            [
                "Xvfb",
                "-displayfd",
                str(wfd),
                "-screen",
                "0",
                f"{W}x{H}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            dict(os.environ),
            pass_fds=(wfd,),
        )
    finally:
        os.close(wfd)
    try:
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([rfd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError("Xvfb did not start")
            chunk = os.read(rfd, 64)
            if not chunk:
                raise RuntimeError("Xvfb exited; see its log")
            buf += chunk
    finally:
        os.close(rfd)
    return proc, f":{int(buf.strip())}"


def free_port_pair() -> int:
    """A port P with P-1, P (TCP and UDP) and P+1 free: litedesk-relay's set."""
    for _ in range(200):
        # Below Linux's ephemeral range (32768-60999), where outgoing
        # connections of other processes could take a port after our check.
        base = 20000 + int.from_bytes(os.urandom(2), "big") % 12000
        socks = []
        try:
            for port, kind in (
                (base - 1, socket.SOCK_STREAM),
                (base, socket.SOCK_STREAM),
                (base, socket.SOCK_DGRAM),
                (base + 1, socket.SOCK_STREAM),
            ):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def _server_settled(proc: subprocess.Popen[bytes], pub: Path, port: int) -> bool:
    """litedesk-relay exited, or it is up (key written, TCP ports open)."""
    if proc.poll() is not None:
        return True
    return pub.exists() and tcp_open(port) and tcp_open(port + 1)


def tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# -- the workload ---------------------------------------------------------------


class Workload:
    """session_workload.py on the display, one phase at a time."""

    def __init__(self, procs: Processes, env: dict[str, str], reactor: Any) -> None:
        self.reactor = reactor
        self.flip_log = procs.workdir / "flips.txt"
        self.proc = procs.spawn(
            "workload",
            [
                sys.executable,
                str(WORKLOAD),
                "--max-seconds",
                "900",
                "--flip-log",
                str(self.flip_log),
            ],
            env,
            pipes=True,
        )

    def flips(self) -> list[float]:
        """Wall-clock times at which the target flipped, so far."""
        try:
            text = self.flip_log.read_text()
        except OSError:
            return []
        return [float(x) for x in text.split()]

    async def _line(self, timeout: float = 20.0) -> str:
        assert self.proc.stdout is not None
        d: Deferred[bytes] = deferToThread(self.proc.stdout.readline)
        d.addTimeout(timeout, self.reactor)
        line = (await d).decode().strip()
        if not line:
            raise RuntimeError("the workload exited; see workload.out")
        return line

    async def ready(self) -> None:
        line = await self._line()
        if line != "ready":
            raise RuntimeError(f"workload said {line!r}")

    async def phase(self, name: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{name}\n".encode())
        self.proc.stdin.flush()
        line = await self._line()
        if line != f"ok {name}":
            raise RuntimeError(f"workload said {line!r} to {name!r}")


# -- input-to-pixel probe -------------------------------------------------------


def colour_class(r: int, g: int, b: int) -> int | None:
    """0 = red, 1 = blue (the target's two colours), None = neither."""
    if r > 150 and g < 100 and b < 100:
        return 0
    if b > 150 and r < 100 and g < 100:
        return 1
    return None


class Probe:
    """Watches the sampled pixel; times how long a click takes to flip it."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.current: int | None = None
        self._from: int | None = None
        self._sent = 0.0
        self._waiter: Deferred[float] | None = None
        self.clicks: list[tuple[float, float | None]] = []  # (sent, pixels seen)

    def observe(self, rgb: tuple[int, int, int]) -> None:
        cls = colour_class(*rgb)
        if cls is None:
            return
        self.current = cls
        waiter = self._waiter
        if waiter is not None and cls != self._from:
            self._waiter = None
            now = self.clock.seconds()
            self.clicks[-1] = (self._sent, now)
            waiter.callback(now - self._sent)

    def arm(self) -> Deferred[float]:
        """Call right before sending the click; fires with the latency (s)."""
        self._from = self.current
        self._sent = self.clock.seconds()
        self.clicks.append((self._sent, None))
        d: Deferred[float] = Deferred()
        self._waiter = d
        return d

    def disarm(self) -> None:
        self._waiter = None


# -- the systems under test ------------------------------------------------------


@dataclass
class Counters:
    frames: int = 0
    wire_bytes: int = 0
    video_bytes: int = 0
    rtts: int = 0
    decodes: int = 0


class Viewer(Protocol):
    probe: Probe
    rtts_ms: list[float]
    rtt_times: list[float]
    frame_times: list[float]

    def counters(self) -> Counters: ...

    def click(self, x: int, y: int) -> None: ...

    def close(self) -> Deferred[None] | None: ...


class LiteDeskViewer:
    """An in-process LiteDesk viewer: the headless viewer's connect, plus
    a frame callback that samples the target pixel."""

    def __init__(self, reactor: Any, peer_id: str = PEER_ID, custom_fps: int = 0) -> None:
        self.reactor = reactor
        self.peer_id = peer_id
        self.probe = Probe(reactor)
        self.wire_bytes = 0
        self.path = ""
        self.protocol = ""
        self.session = ViewerSession(
            reactor, peer_id, PASSWORD, custom_fps=custom_fps, on_frame=self._frame
        )
        # The host measures the round trip of its TestDelay pings and sends
        # the last one back in the next ping: the RTT its adaptive controller
        # sees (a queueing delay above 100 ms lowers the frame rate).
        self.rtts_ms: list[float] = []
        self.rtt_times: list[float] = []
        self.frame_times: list[float] = []
        echo = self.session._test_delay

        def record(msg: pb.Message) -> None:
            echo(msg)
            td = msg.test_delay
            if not td.from_client and td.last_delay:
                self.rtts_ms.append(float(td.last_delay))
                self.rtt_times.append(self.reactor.seconds())

        self.session._test_delay = record  # type: ignore[method-assign]
        # Time the viewer spends per VideoFrame message (H.264 decode and the
        # conversion to an RGB image), part of every "display" latency.
        self.decode_ms: list[float] = []
        video = self.session._video

        def timed(vf: pb.VideoFrame) -> None:
            t = time.perf_counter()
            video(vf)
            self.decode_ms.append((time.perf_counter() - t) * 1000)

        self.session._video = timed  # type: ignore[method-assign]

    def _frame(self, frame: DecodedFrame) -> None:
        self.frame_times.append(self.reactor.seconds())
        px = frame.image.getpixel(SAMPLE)
        assert isinstance(px, tuple)
        self.probe.observe((int(px[0]), int(px[1]), int(px[2])))

    async def connect(
        self, server: tuple[str, int], key: str, force_relay: bool, nodelay: bool = False
    ) -> float:
        t0 = self.reactor.seconds()
        route = await find_host(self.reactor, server, key, self.peer_id, force_relay)
        creator = viewer_context_factory(route.host_pk, detail=self.peer_id)
        # The host speaks first (docs/protocol.rst §11.5): its SignedId, marked
        # for LiteDesk's TLS, then the TLS session as the headless viewer runs it.
        detector = HostDetector(
            self.session,
            lambda: wrap_client(self.session, creator),
            VerifyKey(route.host_pk),
            self.peer_id,
            self.reactor,
        )
        inner: Callable[[bytes], None] = detector.dataReceived

        def counting(data: bytes) -> None:
            self.wire_bytes += len(data)
            inner(data)

        detector.dataReceived = counting  # type: ignore[method-assign]
        if route.path == "relay":
            assert route.relay is not None
            await connect_relay(self.reactor, route.relay, route.uuid, key, detector)
        else:
            assert route.addr is not None
            ep = HostnameEndpoint(self.reactor, route.addr[0], route.addr[1], timeout=5)
            await connectProtocol(ep, detector)
        self.path = route.path
        if nodelay:
            transport: Any = detector.transport  # the TCP transport under the TLS
            transport.setTcpNoDelay(True)
        d = self.session.logged_in
        d.addTimeout(20, self.reactor)
        await d
        self.protocol = detector.protocol or ""
        return float(self.reactor.seconds() - t0)

    def counters(self) -> Counters:
        st = self.session.stats
        return Counters(
            st.frames, self.wire_bytes, st.video_bytes, len(self.rtts_ms), len(self.decode_ms)
        )

    def click(self, x: int, y: int) -> None:
        s = self.session
        s.send_mouse(encode_mask(0), x, y)
        s.send_mouse(encode_mask(1, MouseButton.LEFT), x, y)
        s.send_mouse(encode_mask(2, MouseButton.LEFT), x, y)

    def close(self) -> Deferred[None]:
        self.session.disconnect()
        return self.session.ended


_PIXEL_ENCODINGS = {
    Encoding.RAW,
    Encoding.COPY_RECTANGLE,
    Encoding.RRE,
    Encoding.CORRE,
    Encoding.HEXTILE,
    Encoding.ZRLE,
}


def _contains(x: int, y: int, w: int, h: int, point: tuple[int, int]) -> bool:
    return x <= point[0] < x + w and y <= point[1] < y + h


class CountingRFBClient(RFBClient):  # type: ignore[misc]
    """vncdotool's RFB client keeping one incremental update request
    outstanding, counting bytes and pixel-carrying updates, and decoding
    only what covers the sampled pixel."""

    def __init__(
        self, probe: Probe, ready: Deferred[CountingRFBClient], frame_times: list[float]
    ) -> None:
        super().__init__()
        self.probe = probe
        self.frame_times = frame_times
        self.ready = ready
        self.wire_bytes = 0
        self.updates = 0
        self.pixel_bytes = 0
        self._pixels = False

    def dataReceived(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        super().dataReceived(data)

    def vncConnectionMade(self) -> None:
        self.setPixelFormat(PixelFormat())  # 32 bpp, R at byte 0
        self.setEncodings(
            [
                Encoding.ZRLE,
                Encoding.COPY_RECTANGLE,
                Encoding.RAW,
                Encoding.PSEUDO_CURSOR,
                Encoding.PSEUDO_DESKTOP_SIZE,
                Encoding.PSEUDO_LAST_RECT,
            ]
        )
        self.framebufferUpdateRequest()
        if not self.ready.called:
            self.ready.callback(self)

    def _handleRectangle(self, block: bytes) -> None:
        (encoding,) = unpack("!i", block[8:12])
        if encoding in _PIXEL_ENCODINGS:
            self._pixels = True
        super()._handleRectangle(block)

    def _handleDecodeZRLEdata(self, block: bytes, x: int, y: int, width: int, height: int) -> None:
        if _contains(x, y, width, height, SAMPLE):
            super()._handleDecodeZRLEdata(block, x, y, width, height)
            return
        # Keep the zlib stream in step, skip the (pure Python) tile decoding.
        self._zlib_stream.decompress(block)
        self._doConnection()

    def updateRectangle(self, x: int, y: int, width: int, height: int, data: bytes) -> None:
        if _contains(x, y, width, height, SAMPLE):
            off = ((SAMPLE[1] - y) * width + (SAMPLE[0] - x)) * self.bypp
            self.probe.observe((data[off], data[off + 1], data[off + 2]))

    def fillRectangle(self, x: int, y: int, width: int, height: int, color: bytes) -> None:
        if _contains(x, y, width, height, SAMPLE):
            self.probe.observe((color[0], color[1], color[2]))

    def commitUpdate(self, rectangles: list[tuple[int, int, int, int]] | None = None) -> None:
        if self._pixels:
            self.updates += 1
            self.frame_times.append(self.probe.clock.seconds())
            self._pixels = False
        self.framebufferUpdateRequest(incremental=True)


class VncViewer:
    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.probe = Probe(reactor)
        self.rtts_ms: list[float] = []  # RFB has no round-trip measurement
        self.rtt_times: list[float] = []
        self.frame_times: list[float] = []
        self.client: CountingRFBClient | None = None

    async def connect(self, port: int) -> float:
        t0 = self.reactor.seconds()
        ready: Deferred[CountingRFBClient] = Deferred()
        probe = self.probe
        frame_times = self.frame_times

        class Factory(ClientFactory):
            password = None
            shared = True

            def buildProtocol(self, addr: Any) -> CountingRFBClient:
                p = CountingRFBClient(probe, ready, frame_times)
                p.factory = self
                return p

            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                if not ready.called:
                    ready.errback(reason)

        self.reactor.connectTCP("127.0.0.1", port, Factory(), timeout=5)
        ready.addTimeout(20, self.reactor)
        self.client = await ready
        return float(self.reactor.seconds() - t0)

    def counters(self) -> Counters:
        c = self.client
        assert c is not None
        return Counters(c.updates, c.wire_bytes, 0)

    def click(self, x: int, y: int) -> None:
        c = self.client
        assert c is not None
        c.pointerEvent(x, y, 0)
        c.pointerEvent(x, y, 1)
        c.pointerEvent(x, y, 0)

    def close(self) -> None:
        if self.client is not None and self.client.transport is not None:
            self.client.transport.loseConnection()


class RustDeskViewer:
    """A stock RustDesk client (bench/rustdesk_session_client.py) in this
    process, sampling the target pixel of every decoded picture."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.probe = Probe(reactor)
        self.frame_times: list[float] = []
        self.rtts_ms: list[float] = []
        self.rtt_times: list[float] = []
        self.decode_ms: list[float] = []
        self.stream: RustDeskStream | None = None
        self.path = ""

    def _picture(self, when: float, rows: bytes, stride: int) -> None:
        self.frame_times.append(when)
        off = SAMPLE[1] * stride + SAMPLE[0] * 3
        self.probe.observe((rows[off], rows[off + 1], rows[off + 2]))

    async def connect(
        self, server: tuple[str, int], key: str, listen: tuple[str, int], host_config: Path
    ) -> float:
        """Reach the host the way L{RUSTDESK_VIA} says, exchange keys, log in."""
        t0 = self.reactor.seconds()
        if RUSTDESK_VIA == "relay":
            client, how = await deferToThread(
                open_via_relay, f"{server[0]}:{server[1]}", key, PEER_ID
            )
            self.path = f"relay ({how})"
        else:
            # No rendezvous server in the way: the key the server would sign
            # comes from the host's config dir.
            client = await deferToThread(
                open_direct, listen, PEER_ID, host_key_from_config(host_config)
            )
            self.path = "listen"
        await deferToThread(log_in, client, PASSWORD)
        stream = RustDeskStream(client, self.reactor, self._picture, direct=RUSTDESK_VIA != "relay")
        self.stream = stream
        # The stream's own lists, so that run_phase reads them as they grow.
        self.rtts_ms, self.rtt_times = stream.stats.rtts_ms, stream.stats.rtt_times
        self.decode_ms = stream.stats.decode_ms
        adopt(self.reactor, stream)
        return float(self.reactor.seconds() - t0)

    def counters(self) -> Counters:
        assert self.stream is not None
        st = self.stream.stats
        return Counters(
            st.frames, st.wire_bytes, st.video_bytes, len(st.rtts_ms), len(st.decode_ms)
        )

    def click(self, x: int, y: int) -> None:
        assert self.stream is not None
        self.stream.click(x, y)

    def close(self) -> Deferred[None]:
        assert self.stream is not None
        return self.stream.close()


# -- measuring ----------------------------------------------------------------------


@dataclass
class PhaseResult:
    system: str
    phase: str
    seconds: float
    frames: int
    fps: float
    wire_bytes: int
    wire_bps: float
    video_bps: float | None
    host_cpu_pct: float
    xvfb_cpu_pct: float
    relay_cpu_pct: float | None
    viewer_cpu_pct: float
    clicks: int
    missed: int
    latencies_ms: list[float] = field(repr=False)
    host_rtts_ms: list[float] = field(default_factory=list, repr=False)
    # Each latency split at the moment the target flipped on the host.
    input_ms: list[float] = field(default_factory=list, repr=False)
    display_ms: list[float] = field(default_factory=list, repr=False)
    # Pictures delivered in each second of the phase, and (seconds into the
    # phase, RTT ms) of each round trip the LiteDesk host reported.
    fps_timeline: list[int] = field(default_factory=list, repr=False)
    decode_ms: list[float] = field(default_factory=list, repr=False)
    rtt_timeline: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def mbps(self) -> float:
        return self.wire_bps * 8 / 1e6

    @property
    def p50(self) -> float | None:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float | None:
        return percentile(self.latencies_ms, 99)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (p99 of fewer than 100 samples is the maximum)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


async def sleep(reactor: Any, seconds: float) -> None:
    await deferLater(reactor, max(0.0, seconds), lambda: None)


async def wait_probe(reactor: Any, probe: Probe, timeout: float = 10.0) -> None:
    end = reactor.seconds() + timeout
    while probe.current is None:
        if reactor.seconds() > end:
            raise RuntimeError("the viewer never saw the click target")
        await sleep(reactor, 0.05)


async def run_phase(
    reactor: Any,
    system: str,
    phase: str,
    viewer: Viewer,
    workload: Workload,
    pids: dict[str, int],
    seconds: float,
    warmup: float,
    seed: int,
    label: str | None = None,
) -> PhaseResult:
    await workload.phase(phase)
    await sleep(reactor, warmup)
    rng = random.Random(seed)
    n0 = len(viewer.probe.clicks)
    c0 = viewer.counters()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    me0 = time.process_time()
    t0 = reactor.seconds()
    end = t0 + seconds
    latencies: list[float] = []
    clicks = missed = 0
    while reactor.seconds() + CLICK_GAP[1] < end:
        await sleep(reactor, rng.uniform(*CLICK_GAP))
        d = viewer.probe.arm()
        viewer.click(*CLICK)
        clicks += 1
        d.addTimeout(CLICK_TIMEOUT, reactor)
        try:
            latencies.append(await d * 1000.0)
        except Exception:
            viewer.probe.disarm()
            missed += 1
    await sleep(reactor, end - reactor.seconds())
    t1 = reactor.seconds()
    c1 = viewer.counters()
    elapsed = t1 - t0
    cpu = {name: (cpu_seconds(pid) - cpu0[name]) / elapsed * 100 for name, pid in pids.items()}
    frames = c1.frames - c0.frames
    wire = c1.wire_bytes - c0.wire_bytes
    input_ms, display_ms = split_latencies(viewer.probe.clicks[n0:], workload.flips())
    fps_timeline = [0] * max(1, int(elapsed))
    for t in viewer.frame_times:
        i = int(t - t0)
        if t >= t0 and i < len(fps_timeline):
            fps_timeline[i] += 1
    rtt_timeline = [
        (round(t - t0, 2), v)
        for t, v in zip(viewer.rtt_times, viewer.rtts_ms, strict=True)
        if t0 <= t <= t1
    ]
    return PhaseResult(
        system=system,
        phase=label or phase,
        seconds=round(elapsed, 2),
        frames=frames,
        fps=frames / elapsed,
        wire_bytes=wire,
        wire_bps=wire / elapsed,
        video_bps=(c1.video_bytes - c0.video_bytes) / elapsed if system != "vnc" else None,
        host_cpu_pct=cpu["host"],
        xvfb_cpu_pct=cpu["xvfb"],
        relay_cpu_pct=cpu.get("relay"),
        viewer_cpu_pct=(time.process_time() - me0) / elapsed * 100,
        clicks=clicks,
        missed=missed,
        latencies_ms=latencies,
        host_rtts_ms=viewer.rtts_ms[c0.rtts : c1.rtts],
        input_ms=input_ms,
        display_ms=display_ms,
        fps_timeline=fps_timeline,
        rtt_timeline=rtt_timeline,
        decode_ms=getattr(viewer, "decode_ms", [])[c0.decodes : c1.decodes],
    )


def split_latencies(
    clicks: list[tuple[float, float | None]], flips: list[float]
) -> tuple[list[float], list[float]]:
    """Split each click's latency at the target's flip on the host.

    Both are wall-clock times on this machine (the reactor's clock is
    C{time.time()}, as is the workload's), so C{input} is click written to
    the viewer's socket -> Tk recolours the target, and C{display} is that
    -> the viewer holds the new pixels.
    """
    input_ms: list[float] = []
    display_ms: list[float] = []
    for sent, seen in clicks:
        if seen is None:
            continue
        i = bisect.bisect_left(flips, sent)
        if i < len(flips) and flips[i] <= seen:
            input_ms.append((flips[i] - sent) * 1000)
            display_ms.append((seen - flips[i]) * 1000)
    return input_ms, display_ms


def overall(results: list[PhaseResult]) -> PhaseResult:
    """All phases of one system together (time-weighted)."""
    secs = sum(r.seconds for r in results)
    frames = sum(r.frames for r in results)
    wire = sum(r.wire_bytes for r in results)
    first = results[0]

    def mean(get: Callable[[PhaseResult], float | None]) -> float | None:
        vals = [(get(r), r.seconds) for r in results]
        if any(v is None for v, _ in vals):
            return None
        return sum(float(v or 0) * s for v, s in vals) / secs

    return PhaseResult(
        system=first.system,
        phase="overall",
        seconds=round(secs, 2),
        frames=frames,
        fps=frames / secs,
        wire_bytes=wire,
        wire_bps=wire / secs,
        video_bps=mean(lambda r: r.video_bps),
        host_cpu_pct=mean(lambda r: r.host_cpu_pct) or 0.0,
        xvfb_cpu_pct=mean(lambda r: r.xvfb_cpu_pct) or 0.0,
        relay_cpu_pct=mean(lambda r: r.relay_cpu_pct),
        viewer_cpu_pct=mean(lambda r: r.viewer_cpu_pct) or 0.0,
        clicks=sum(r.clicks for r in results),
        missed=sum(r.missed for r in results),
        latencies_ms=[v for r in results for v in r.latencies_ms],
        host_rtts_ms=[v for r in results for v in r.host_rtts_ms],
        input_ms=[v for r in results for v in r.input_ms],
        display_ms=[v for r in results for v in r.display_ms],
    )


# -- the run ------------------------------------------------------------------------


@dataclass
class Config:
    seconds: float
    warmup: float
    lan: bool
    seed: int
    profile: Path | None = None
    nodelay: bool = False
    profile_phase: str = "moving"


class Bench:
    def __init__(self, reactor: Any, cfg: Config) -> None:
        self.reactor = reactor
        self.cfg = cfg
        self.workdir = Path(tempfile.mkdtemp(prefix="litedesk-bench-session-"))
        self.procs = Processes(self.workdir)
        self.results: list[PhaseResult] = []
        self.info: dict[str, Any] = {}
        self.idle_cpu: dict[str, tuple[float, float]] = {}  # name: (CPU s, wall s)

    async def run(self) -> None:
        xvfb, display = start_xvfb(self.procs)
        self.env = dict(os.environ, DISPLAY=display)
        self.xvfb_pid = xvfb.pid
        self.info["display"] = display
        self.workload = Workload(self.procs, self.env, self.reactor)
        await self.workload.ready()
        relay, self.key = self.start_litedesk_server()
        self.relay_pid = relay.pid
        self.listen_port = free_port()
        self.host_pids = {PEER_ID: self.start_litedesk_host(self.port, self.key).pid}
        if self.cfg.nodelay:
            host = self.start_litedesk_host(self.port, self.key, nodelay=True)
            self.host_pids[PEER_ID_NODELAY] = host.pid
        self.vnc_port = free_port()
        argv = ["x11vnc", "-display", display, "-rfbport", str(self.vnc_port), *X11VNC_FLAGS]
        self.info["x11vnc"] = " ".join(argv[1:])
        self.x11vnc_pid = self.procs.spawn("x11vnc", argv, self.env).pid
        wait_for(lambda: tcp_open(self.vnc_port), 30, "x11vnc")
        systems = self.systems()
        # Interleaved: each phase is measured on every system in turn, and the
        # order flips from phase to phase, so a change in the machine's load
        # during the run hits both systems alike.  Every measurement starts
        # from the same screen (the workload restarts the phase) and a fresh
        # connection; the agent that is not measured has no viewer.
        for i, phase in enumerate(PHASES):
            for system in systems if i % 2 == 0 else systems[::-1]:
                await self.measure(system, phase, self.cfg.seed + i)
        for system in ("litedesk-relay", RUSTDESK):
            await self.measure(system, "moving", self.cfg.seed + len(PHASES), CAPACITY)
        await self.workload.phase("idle")
        self.info["idle_cpu_pct"] = {
            name: round(100 * cpu / max(1e-9, secs), 2)
            for name, (cpu, secs) in self.idle_cpu.items()
        }

    def systems(self) -> list[str]:
        return [
            "litedesk-relay",
            *(["litedesk-lan"] if self.cfg.lan else []),
            *(["ld-relay-nodelay"] if self.cfg.nodelay else []),
            RUSTDESK,
            "vnc",
        ]

    async def open_rustdesk(self, custom_fps: int) -> tuple[Viewer, dict[str, int]]:
        rd = RustDeskViewer(self.reactor)
        connect = await rd.connect(
            ("127.0.0.1", self.port),
            self.key,
            ("127.0.0.1", self.listen_port),
            self.workdir / "host",
        )
        assert rd.stream is not None
        if custom_fps:
            # As a stock client whose user sets the frame rate (client.rs set_custom_fps).
            rd.stream.set_custom_fps(custom_fps)
        self.info[f"{RUSTDESK}_path"] = rd.path
        self.info[f"{RUSTDESK}_connect_s"] = round(connect, 3)
        await wait_probe(self.reactor, rd.probe)
        pids = {"host": self.host_pids[PEER_ID], "xvfb": self.xvfb_pid}
        if RUSTDESK_VIA == "relay":
            pids["relay"] = self.relay_pid
        return rd, pids

    async def open(self, system: str, custom_fps: int) -> tuple[Viewer, dict[str, int]]:
        if system == "vnc":
            vnc = VncViewer(self.reactor)
            self.info[f"{system}_connect_s"] = round(await vnc.connect(self.vnc_port), 3)
            await wait_probe(self.reactor, vnc.probe)
            return vnc, {"host": self.x11vnc_pid, "xvfb": self.xvfb_pid}
        if system == RUSTDESK:
            return await self.open_rustdesk(custom_fps)
        nodelay = system == "ld-relay-nodelay"
        peer_id = PEER_ID_NODELAY if nodelay else PEER_ID
        ld = LiteDeskViewer(self.reactor, peer_id, custom_fps)
        relayed = system != "litedesk-lan"
        connect = await ld.connect(("127.0.0.1", self.port), self.key, relayed, nodelay)
        self.info[f"{system}_path"] = ld.path
        self.info[f"{system}_protocol"] = ld.protocol
        self.info[f"{system}_connect_s"] = round(connect, 3)
        await wait_probe(self.reactor, ld.probe)
        pids = {"host": self.host_pids[peer_id], "xvfb": self.xvfb_pid}
        if ld.path == "relay":
            pids["relay"] = self.relay_pid
        return ld, pids

    async def close(self, viewer: Viewer) -> None:
        if isinstance(viewer, LiteDeskViewer):
            st = viewer.session.stats
            self.info["decode_errors"] = self.info.get("decode_errors", 0) + st.decode_errors
            ended = viewer.close()
            ended.addTimeout(5, self.reactor)
            await ended
        elif isinstance(viewer, RustDeskViewer):
            assert viewer.stream is not None
            rs = viewer.stream.stats
            rd = self.info.setdefault(RUSTDESK, {"codecs": [], "custom_fps_sent": []})
            rd["codecs"] = sorted(set(rd["codecs"]) | rs.codecs)
            rd["custom_fps_sent"].append(rs.custom_fps_sent)
            rd["decode_errors"] = rd.get("decode_errors", 0) + rs.decode_errors
            rd["key_frames"] = rd.get("key_frames", 0) + rs.key_frames
            if rs.close_reason:
                rd.setdefault("close_reasons", []).append(rs.close_reason)
            ended = viewer.close()
            ended.addTimeout(5, self.reactor)
            await ended
        else:
            viewer.close()
            await sleep(self.reactor, 0.2)

    async def measure(self, system: str, phase: str, seed: int, label: str | None = None) -> None:
        viewer, pids = await self.open(system, 60 if label == CAPACITY else 0)
        spy = None
        if (
            self.cfg.profile is not None
            and system == "litedesk-relay"
            and phase == self.cfg.profile_phase
            and label is None
        ):
            spy = self.start_profile(pids["host"])
        # The agents that are up but have no viewer now: their idle CPU.
        idle = {"x11vnc": self.x11vnc_pid, **{f"host {k}": v for k, v in self.host_pids.items()}}
        idle = {k: v for k, v in idle.items() if v not in pids.values()}
        idle0 = {k: cpu_seconds(v) for k, v in idle.items()}
        t0 = time.monotonic()
        r = await run_phase(
            self.reactor,
            system,
            phase,
            viewer,
            self.workload,
            pids,
            self.cfg.seconds,
            self.cfg.warmup,
            seed,
            label=label,
        )
        secs = time.monotonic() - t0
        for k, v in idle.items():
            cpu, total = self.idle_cpu.get(k, (0.0, 0.0))
            self.idle_cpu[k] = (cpu + cpu_seconds(v) - idle0[k], total + secs)
        if spy is not None:
            self.stop_profile(spy)
        await self.close(viewer)
        self.results.append(r)
        print(f"  {system:16s} {r.phase:12s} {brief(r)}", flush=True)

    def start_litedesk_server(self) -> tuple[subprocess.Popen[bytes], str]:
        """litedesk-relay on a free port set (retried if a port was taken meanwhile)."""
        for attempt in range(3):
            self.port = free_port_pair()
            relay = self._spawn_server(self.port, attempt)
            pub = self.workdir / "server" / "id_ed25519.pub"
            with contextlib.suppress(RuntimeError):
                wait_for(partial(_server_settled, relay, pub, self.port), 30, "litedesk-relay")
            if relay.poll() is None and tcp_open(self.port) and tcp_open(self.port + 1):
                return relay, pub.read_text().strip()
            self.procs.stop(relay)
        raise RuntimeError(f"litedesk-relay did not start; see {self.workdir}")

    def _spawn_server(self, port: int, attempt: int) -> subprocess.Popen[bytes]:
        data = self.workdir / "server"
        return self.procs.spawn(
            f"relay-{attempt}",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(self.workdir / f"relay-{attempt}.log"),
                "litedesk-relay",
                "--data-dir",
                str(data),
                "--port",
                str(port),
                "--interface",
                "127.0.0.1",
                "--relay-servers",
                f"127.0.0.1:{port + 1}",
            ],
            self.env,
        )

    def start_litedesk_host(
        self, port: int, key: str, *, nodelay: bool = False
    ) -> subprocess.Popen[bytes]:
        name = "host-nodelay" if nodelay else "host"
        peer_id = PEER_ID_NODELAY if nodelay else PEER_ID
        pwfile = self.workdir / "host.pw"
        pwfile.write_text(PASSWORD)
        log = self.workdir / f"{name}.log"
        host = self.procs.spawn(
            name,
            [
                *(TWISTD_NODELAY if nodelay else TWISTD),
                "-n",
                "--pidfile=",
                "--logfile",
                str(log),
                "litedesk-host",
                "--config-dir",
                str(self.workdir / name),
                "--rendezvous",
                f"127.0.0.1:{port}",
                "--key",
                key,
                "--id",
                peer_id,
                "--password-file",
                str(pwfile),
                "--display",
                self.env["DISPLAY"],
                *([] if nodelay else self.rustdesk_host_args()),
            ],
            self.env,
        )
        wait_for(
            lambda: log.exists() and f"as id {peer_id}" in log.read_text(),
            30,
            "litedesk-host to register",
        )
        return host

    def rustdesk_host_args(self) -> list[str]:
        """What the measured host needs to serve the RustDesk client (L{RUSTDESK_VIA})."""
        if RUSTDESK_VIA == "relay":
            return []
        return ["--listen", f"tcp:{self.listen_port}:interface=127.0.0.1"]

    def start_profile(self, pid: int) -> subprocess.Popen[bytes]:
        """py-spy on the host agent (all threads, Python frames, active samples only)."""
        assert self.cfg.profile is not None
        argv = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "50",
            "--threads",
            "--format",
            "raw",
            "--output",
            str(self.cfg.profile),
        ]
        return self.procs.spawn("py-spy", argv, self.env)

    def stop_profile(self, spy: subprocess.Popen[bytes]) -> None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            self.procs.stop(spy)
        assert self.cfg.profile is not None
        if self.cfg.profile.exists():
            print_profile(self.cfg.profile)


def print_profile(path: Path, top: int = 15) -> None:
    """The hottest frames of a py-spy raw (collapsed stacks) profile."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0]] = threads.get(frames[0], 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames[1:]):
            inclusive[f] = inclusive.get(f, 0) + n
    if not total:
        return
    print(f"\nprofile of the host agent ({total} samples at 50/s, {path}):")
    print("  by thread:")
    for name, n in sorted(threads.items(), key=lambda kv: -kv[1])[:4]:
        print(f"    {100 * n / total:5.1f}%  {name}")
    print("  self (leaf frames):")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f}%  {name[:110]}")
    print("  inclusive (litedesk frames):")
    ours = [(k, v) for k, v in inclusive.items() if "litedesk" in k]
    for name, n in sorted(ours, key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f}%  {name[:110]}")


# -- the report -------------------------------------------------------------------


def brief(r: PhaseResult) -> str:
    lat = "-" if r.p50 is None else f"{r.p50:.0f}/{r.p99:.0f} ms"
    rtt = ""
    if r.host_rtts_ms:
        med, top = statistics.median(r.host_rtts_ms), max(r.host_rtts_ms)
        rtt = f"  host RTT med/max {med:.0f}/{top:.0f} ms"
    split = ""
    if r.input_ms:
        split = (
            f" = input {statistics.median(r.input_ms):.0f} + "
            f"display {statistics.median(r.display_ms):.0f} (medians)"
        )
    if r.decode_ms:
        split += f" [viewer decode {statistics.median(r.decode_ms):.1f} ms/frame]"
    worst = f" (worst second {min(r.fps_timeline)})" if r.fps_timeline else ""
    return (
        f"{r.fps:5.1f} fps{worst}  {r.mbps:6.2f} Mb/s  host CPU {r.host_cpu_pct:5.1f}%  "
        f"viewer CPU {r.viewer_cpu_pct:5.1f}%  p50/p99 {lat}{split} "
        f"({r.clicks - r.missed}/{r.clicks} clicks){rtt}"
    )


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def _ratio_line(name: str, a: PhaseResult, b: PhaseResult) -> None:
    print(
        f"{'':10s} {name:15s} {_ratio(a.fps, b.fps):>6s} "
        f"{_ratio(a.wire_bps, b.wire_bps):>8s} {'':7s} {_ratio(a.video_bps, b.video_bps):>10s} "
        f"{_ratio(a.host_cpu_pct, b.host_cpu_pct):>8s} {'':8s} {'':6s} {'':7s} "
        f"{_ratio(a.p50, b.p50):>7s} {_ratio(a.p99, b.p99):>7s}"
    )


def report(results: list[PhaseResult], systems: list[str]) -> list[dict[str, Any]]:
    by = {(r.system, r.phase): r for r in results}
    for s in systems:
        mine = [r for r in results if r.system == s and r.phase in PHASES]
        if mine:
            by[(s, "overall")] = overall(mine)
    rows: list[dict[str, Any]] = []
    header = (
        f"{'phase':10s} {'system':15s} {'fps':>6s} {'kB/s':>8s} {'Mb/s':>7s} {'video Mb/s':>10s} "
        f"{'host CPU':>8s} {'Xvfb CPU':>8s} {'relay':>6s} {'viewer':>7s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'in p50':>6s} {'out p50':>7s} {'clicks':>7s} {'RTT max':>7s}"
    )
    print()
    print(header)
    print("-" * len(header))
    for phase in (*PHASES, "overall", CAPACITY):
        for s in systems:
            r = by.get((s, phase))
            if r is None:
                continue
            video = None if r.video_bps is None else r.video_bps * 8 / 1e6
            print(
                f"{phase:10s} {s:15s} {r.fps:6.1f} {r.wire_bps / 1e3:8.1f} {r.mbps:7.3f} "
                f"{_fmt(video, '10.3f'):>10s} {r.host_cpu_pct:7.1f}% {r.xvfb_cpu_pct:7.1f}% "
                f"{_fmt(r.relay_cpu_pct, '5.1f'):>6s} {r.viewer_cpu_pct:6.1f}% "
                f"{_fmt(r.p50, '7.1f'):>7s} {_fmt(r.p99, '7.1f'):>7s} "
                f"{_fmt(percentile(r.input_ms, 50), '6.1f'):>6s} "
                f"{_fmt(percentile(r.display_ms, 50), '7.1f'):>7s} "
                f"{r.clicks - r.missed:3d}/{r.clicks:<3d} "
                f"{_fmt(max(r.host_rtts_ms) if r.host_rtts_ms else None, '7.0f'):>7s}"
            )
            row = asdict(r)
            row.update(mbps=r.mbps, p50_ms=r.p50, p99_ms=r.p99)
            rows.append(row)
        ld, vnc, rd = (by.get((s, phase)) for s in ("litedesk-relay", "vnc", RUSTDESK))
        if ld is not None and vnc is not None:
            _ratio_line("LiteDesk/VNC", ld, vnc)
        if rd is not None and ld is not None:
            _ratio_line("RustDesk/LiteDesk", rd, ld)
    return rows


Check = tuple[str, float | None, str, bool | None]


def _print_checks(title: str, checks: list[Check]) -> list[dict[str, Any]]:
    print(f"\n{title}")
    out = []
    for name, value, shown, ok in checks:
        verdict = "n/a" if ok is None else ("PASS" if ok else "MISS")
        print(f"  {verdict:4s}  {name:52s} {shown}")
        out.append({"goal": name, "value": value, "shown": shown, "pass": ok})
    return out


def _fps_checks(by: dict[tuple[str, str], PhaseResult], system: str, what: str) -> list[Check]:
    checks: list[Check] = []
    # At the host's 30 fps cap the count of frames in the window decides the
    # last digit (29.99 or 30.01 for the same stream), so that row allows 1 %;
    # the custom_fps=60 row, where the cap does not bound it, is strict.
    for label, how, margin in (
        ("moving", "default: host cap 30, 1 % margin", 0.99),
        (CAPACITY, "viewer custom_fps=60", 1.0),
    ):
        r = by.get((system, label))
        if r:
            name = f"{what} 1080p motion >= 30 fps ({how})"
            checks.append((name, r.fps, f"{r.fps:.2f} fps", r.fps >= GOAL_FPS * margin))
    return checks


def _bytes_checks(
    results: list[PhaseResult], a: str, b: str, limit: float, what: str
) -> list[Check]:
    """Bytes of system C{a} against C{b} on the same script: all phases, then each."""
    a_all = [r for r in results if r.system == a and r.phase in PHASES]
    b_all = [r for r in results if r.system == b and r.phase in PHASES]
    if not a_all or not b_all:
        return []
    a_b, b_b = sum(r.wire_bytes for r in a_all), sum(r.wire_bytes for r in b_all)
    ratio = a_b / b_b if b_b else None
    checks: list[Check] = [
        (
            f"{what} (all phases)",
            ratio,
            f"{ratio:.3f} x ({a_b / 1e6:.2f} MB vs {b_b / 1e6:.2f} MB)" if ratio else "-",
            None if ratio is None else ratio <= limit,
        )
    ]
    by = {(r.system, r.phase): r for r in results}
    for phase in PHASES:
        ra, rb = by.get((a, phase)), by.get((b, phase))
        if ra and rb and rb.wire_bytes:
            q = ra.wire_bytes / rb.wire_bytes
            checks.append((f"  {phase}: {what.split(',')[0]}", q, f"{q:.3f} x", q <= limit))
    return checks


def issue4_goals(results: list[PhaseResult]) -> list[Check]:
    by = {(r.system, r.phase): r for r in results}
    checks = _fps_checks(by, "litedesk-relay", "LiteDesk")
    for phase in ("typing", "scrolling"):
        r = by.get(("litedesk-relay", phase))
        if r:
            checks.append((f"{phase} <= 1 Mb/s", r.mbps, f"{r.mbps:.3f} Mb/s", r.mbps <= GOAL_MBPS))
    checks += _bytes_checks(
        results, "litedesk-relay", "vnc", GOAL_BYTES_RATIO, "bytes <= 0.3 x VNC, same script"
    )
    ld_all = [r for r in results if r.system == "litedesk-relay" and r.phase in PHASES]
    if ld_all:
        o = overall(ld_all)
        checks.append(
            (
                "input-to-pixel p50 <= 50 ms (loopback, relay)",
                o.p50,
                f"{_fmt(o.p50, '.1f')} ms",
                None if o.p50 is None else o.p50 <= GOAL_P50_MS,
            )
        )
    return checks


def issue11_goals(results: list[PhaseResult], codecs: list[str]) -> list[Check]:
    """The RustDesk protocol against LiteDesk's TLS session, as ratios in this run."""
    by = {(r.system, r.phase): r for r in results}
    rd_all = [r for r in results if r.system == RUSTDESK and r.phase in PHASES]
    ld_all = [r for r in results if r.system == "litedesk-relay" and r.phase in PHASES]
    shown = ", ".join(codecs) or "none"
    checks: list[Check] = [
        ("the host sent the RustDesk client VP9", None, shown, codecs == ["vp9"])
    ]
    checks += _fps_checks(by, RUSTDESK, "VP9")
    checks += _bytes_checks(
        results,
        RUSTDESK,
        "litedesk-relay",
        GOAL_VP9_BYTES_RATIO,
        "VP9 bytes <= 1.5 x H.264, same script",
    )
    if not rd_all or not ld_all:
        return checks
    rd, ld = overall(rd_all), overall(ld_all)
    cpu = rd.host_cpu_pct / ld.host_cpu_pct if ld.host_cpu_pct else None
    checks.append(
        (
            "VP9 host CPU <= 1.5 x H.264 (all phases)",
            cpu,
            f"{_fmt(cpu, '.3f')} x ({rd.host_cpu_pct:.1f}% vs {ld.host_cpu_pct:.1f}%)",
            None if cpu is None else cpu <= GOAL_VP9_CPU_RATIO,
        )
    )
    for phase in PHASES:
        a, b = by.get((RUSTDESK, phase)), by.get(("litedesk-relay", phase))
        if a and b and b.host_cpu_pct:
            q = a.host_cpu_pct / b.host_cpu_pct
            checks.append((f"  {phase}: host CPU", q, f"{q:.3f} x", q <= GOAL_VP9_CPU_RATIO))
    diff = None if rd.p50 is None or ld.p50 is None else rd.p50 - ld.p50
    checks.append(
        (
            "VP9 click-to-pixel p50 <= H.264 p50 + 10 ms",
            diff,
            f"{_fmt(diff, '+.1f')} ms ({_fmt(rd.p50, '.1f')} vs {_fmt(ld.p50, '.1f')} ms; "
            f"p99 {_fmt(rd.p99, '.1f')} vs {_fmt(ld.p99, '.1f')} ms)",
            None if diff is None else diff <= GOAL_VP9_P50_MARGIN_MS,
        )
    )
    return checks


def goals(results: list[PhaseResult], codecs: list[str]) -> list[dict[str, Any]]:
    out = _print_checks("Goals (issue 4), LiteDesk through the relay:", issue4_goals(results))
    out += _print_checks(
        f"Goals (issue 11), RustDesk protocol ({RUSTDESK}) against LiteDesk TLS (relay), same run:",
        issue11_goals(results, codecs),
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="5 s phases (about 80 s in all)")
    p.add_argument("--seconds", type=float, help="seconds measured per phase (default 15)")
    p.add_argument("--lan", action="store_true", help="also measure LiteDesk's LAN path")
    p.add_argument("--seed", type=int, default=4)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="py-spy record the host agent during the relay phases into FILE (raw "
        "collapsed stacks) and print its hottest frames; sampling costs some CPU",
    )
    p.add_argument(
        "--profile-phase",
        default="moving",
        choices=PHASES,
        help="the phase --profile records (default: moving)",
    )
    p.add_argument(
        "--nodelay",
        action="store_true",
        help="experiment: LiteDesk again with TCP_NODELAY on the host's and the viewer's "
        "sockets (the host's twistd is patched at start-up; litedesk/ is unchanged)",
    )
    p.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the temporary directory with every process's log (kept anyway on failure)",
    )
    args = p.parse_args()
    # The in-process LiteDesk viewer keeps freed heap memory as litedesk-viewer
    # does (litedesk.heap): without it every picture of a tile message (a
    # 3 MB copy of the shown one) came from fresh pages.
    keep_freed_memory()
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    cfg = Config(
        seconds=seconds,
        warmup=1.0 if args.quick else 1.5,
        lan=args.lan,
        seed=args.seed,
        profile=args.profile,
        profile_phase=args.profile_phase,
        nodelay=args.nodelay,
    )
    started = time.monotonic()
    load0 = os.getloadavg()
    print(
        f"bench/session.py: {len(PHASES)} phases x {seconds:g} s per system; "
        f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )

    async def run(reactor: Any) -> None:
        bench = Bench(reactor, cfg)
        try:
            await bench.run()
        except BaseException:
            print(f"bench/session.py failed; logs kept in {bench.workdir}", file=sys.stderr)
            raise
        finally:
            bench.procs.stop_all()
        load1 = os.getloadavg()
        rows = report(bench.results, bench.systems())
        verdicts = goals(bench.results, bench.info.get(RUSTDESK, {}).get("codecs", []))
        wall = time.monotonic() - started
        print(f"\nx11vnc {bench.info.get('x11vnc', '')}")
        ld_protocol = bench.info.get("litedesk-relay_protocol")
        if ld_protocol:
            print(f"LiteDesk viewer: session protocol {ld_protocol}")
        rd = bench.info.get(RUSTDESK)
        if rd:
            print(
                f"RustDesk client: path {bench.info.get(f'{RUSTDESK}_path')}, codecs "
                f"{', '.join(rd['codecs']) or 'none'}, custom_fps sent per session "
                f"{rd['custom_fps_sent']}, key frames {rd['key_frames']}, decode errors "
                f"{rd['decode_errors']}, sessions closed by the host "
                f"{rd.get('close_reasons', [])}"
            )
        idle = bench.info.get("idle_cpu_pct", {})
        if idle:
            shown = ", ".join(f"{k} {v:.1f}%" for k, v in idle.items())
            print(f"CPU of the agents while another system was measured (no viewer): {shown}")
        if args.keep_logs:
            where = f"logs in {bench.workdir}"
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
            where = "logs removed (--keep-logs keeps them)"
        print(
            f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; "
            f"run time {wall:.0f} s; {where}"
        )
        if args.json:
            args.json.write_text(
                json.dumps(
                    {
                        "config": asdict(cfg),
                        "load_start": load0,
                        "load_end": load1,
                        "run_seconds": wall,
                        "info": bench.info,
                        "results": rows,
                        "goals": verdicts,
                    },
                    indent=2,
                )
            )

    react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
