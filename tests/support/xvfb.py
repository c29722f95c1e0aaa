"""A real Xvfb X server for tests: start on a free display, wait, stop.

Reusable by any test module that needs an X display (screen capture, input
injection, the end-to-end session tests)::

    from tests.support.skips import requires
    from tests.support.xvfb import Xvfb

    @requires("Xvfb")                  # skips without Xvfb (fails in CI)
    class MyTests(unittest.TestCase):
        def setUp(self):
            self.xvfb = Xvfb().start()
            self.addCleanup(self.xvfb.stop)

        def test_x(self):
            subprocess.run(["xdpyinfo"], env=self.xvfb.env, check=True)

Why it is done this way (measured on the 2-core CI box, see
docs/test-lab.rst section B):
  - C{-displayfd}: Xvfb picks a free display number itself and writes it to
    the given file descriptor once it accepts connections, so parallel trial
    jobs never race for C{:99} and nobody has to poll for readiness
    (ready in 0.15-0.2 s).
  - C{-noreset}: without it the server resets whenever its last client
    disconnects; 1-4 % of the connections made meanwhile failed, and the
    reset wipes the root window background that tests paint.
  - C{-nolisten tcp}: local Unix socket only.

Several monitors (L{dual_monitor_xvfb}, or C{monitors=} for any layout): one
wide Xvfb screen split into RandR 1.5 monitors with C{RRSetMonitor}, which is
what C{xrandr --setmonitor} sends.  mss lists RandR monitors (C{GetMonitors})
ahead of CRTCs, so the host agent sees exactly these rectangles, in this
order.  Xvfb's C{+xinerama} with two C{-screen}s was the alternative, but
on Debian's Xvfb mss then lists only the first screen's 1920x1080.  The request is
built here with python-xlib (a pynput dependency) because its own
C{xrandr_set_monitor} cannot pack its nested monitor record (0.33), and
Debian's C{xrandr} is not among the test packages.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DUAL_MONITORS",
    "Monitor",
    "Xvfb",
    "XvfbError",
    "dual_monitor_xvfb",
    "resize_screen",
    "set_monitors",
    "set_root_image",
    "shared_xvfb",
]


class XvfbError(Exception):
    """Xvfb could not be started."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.  A test process killed by a
    # CI timeout (SIGKILL runs no atexit handler) must not leave its X server
    # behind: ask Linux to send Xvfb SIGTERM when its parent dies.
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class Monitor:
    """One RandR monitor: a named rectangle of the X screen."""

    name: str
    x: int
    y: int
    width: int
    height: int


#: Two 1920x1080 monitors side by side; the left one is primary.
DUAL_MONITORS = (Monitor("A", 0, 0, 1920, 1080), Monitor("B", 1920, 0, 1920, 1080))


class Xvfb:
    """One Xvfb process.

    @ivar display: C{":N"} once started.
    @ivar env: a copy of C{os.environ} with C{DISPLAY} set, for subprocesses.
    """

    def __init__(
        self,
        width: int = 1920,
        height: int = 1080,
        depth: int = 24,
        extra_args: Sequence[str] = (),
        monitors: Sequence[Monitor] = (),
    ) -> None:
        """
        @param monitors: RandR monitors to define once the server is up
            (L{set_monitors}); none keeps Xvfb's one monitor per screen.
        """
        self.width = width
        self.height = height
        self.depth = depth
        self.extra_args = list(extra_args)
        self.monitors = tuple(monitors)
        self.display: str | None = None
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Xvfb:
        """Start the server and wait until it accepts connections."""
        if shutil.which("Xvfb") is None:
            raise XvfbError("Xvfb is not installed")
        rfd, wfd = os.pipe()
        args = [
            "Xvfb",
            "-displayfd",
            str(wfd),
            "-screen",
            "0",
            f"{self.width}x{self.height}x{self.depth}",
            "-nolisten",
            "tcp",
            "-noreset",
            # Debian's Xvfb has RandR on by default; say so for other builds.
            *(("+extension", "RANDR") if self.monitors else ()),
            *self.extra_args,
        ]
        try:
            self._proc = subprocess.Popen(
                args,
                pass_fds=(wfd,),
                preexec_fn=_die_with_parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finally:
            os.close(wfd)  # only Xvfb holds the write end: EOF means it died
        try:
            number = self._read_display(rfd, timeout)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(rfd)
        self.display = f":{number}"
        self.env = dict(os.environ, DISPLAY=self.display)
        if self.monitors:
            try:
                set_monitors(self.display, self.monitors)
            except BaseException:
                self.stop()
                raise
        return self

    def _read_display(self, rfd: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise XvfbError(f"Xvfb did not become ready within {timeout} s")
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 64)
            if not chunk:
                err = b""
                if self._proc is not None and self._proc.stderr is not None:
                    self._proc.wait(5)
                    err = self._proc.stderr.read()[-2000:]
                raise XvfbError(f"Xvfb exited before it was ready: {err.decode(errors='replace')}")
            buf += chunk
        return int(buf.strip())

    def stop(self) -> None:
        """Terminate the server (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> Xvfb:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def set_root_image(xvfb: Xvfb, path: str) -> None:
    """Show an image file as the root window background (ImageMagick C{display}).

    C{display -window root} exits with status 1 when no window manager runs,
    but has set the background by then, so the status is not checked; the
    caller should verify with a capture.  Use an image of the screen's size:
    C{display} shrinks larger ones.
    """
    subprocess.run(
        ["display", "-window", "root", path],
        env=xvfb.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )


def _set_monitor_request() -> Any:
    # python-xlib has no type stubs here (hence importlib and Any); the
    # fields are RRSetMonitor's wire layout (randrproto 1.5), flattened.
    rq: Any = importlib.import_module("Xlib.protocol.rq")

    class SetMonitor(rq.Request):  # type: ignore[misc]
        _request = rq.Struct(
            rq.Card8("opcode"),
            rq.Opcode(43),
            rq.RequestLength(),
            rq.Window("window"),
            rq.Card32("name"),
            rq.Bool("primary"),
            rq.Bool("automatic"),
            rq.LengthOf("outputs", 2),
            rq.Int16("x"),
            rq.Int16("y"),
            rq.Card16("width"),
            rq.Card16("height"),
            rq.Card32("width_mm"),
            rq.Card32("height_mm"),
            rq.List("outputs", rq.Card32Obj),
        )

    return SetMonitor


def set_monitors(display: str, monitors: Sequence[Monitor]) -> None:
    """Define RandR monitors on a running X server (C{xrandr --setmonitor}).

    The first monitor takes over Xvfb's only output (C{screen}), which
    replaces the automatic monitor covering the whole screen, and is
    primary; the others have no output, as C{--setmonitor NAME GEOMETRY
    none} gives.  Monitors live in the server, so they outlast this
    connection (Xvfb runs with C{-noreset}).  Physical sizes assume 96 dpi.

    @raise XvfbError: the server has no RandR 1.5.
    """
    xdisplay: Any = importlib.import_module("Xlib.display").Display(display)
    try:
        if not xdisplay.has_extension("RANDR"):
            raise XvfbError(f"{display} has no RandR extension")
        version = xdisplay.xrandr_query_version()
        if (version.major_version, version.minor_version) < (1, 5):
            raise XvfbError(f"{display} has RandR {version.major_version}.{version.minor_version}")
        root = xdisplay.screen().root
        outputs = list(root.xrandr_get_screen_resources().outputs)
        opcode = xdisplay.display.get_extension_major("RANDR")
        request = _set_monitor_request()
        for i, m in enumerate(monitors):
            request(
                display=xdisplay.display,
                opcode=opcode,
                window=root,
                name=xdisplay.intern_atom(m.name),
                primary=i == 0,
                automatic=False,
                x=m.x,
                y=m.y,
                width=m.width,
                height=m.height,
                width_mm=round(m.width * 25.4 / 96),
                height_mm=round(m.height * 25.4 / 96),
                outputs=outputs[:1] if i == 0 else [],
            )
        # A round trip: an X error in the requests above is raised here.
        xdisplay.sync()
    finally:
        xdisplay.close()


def resize_screen(display: str, width: int, height: int) -> None:
    """Resize the root window with RandR, as plugging a monitor in or out does.

    Xvfb allocates its framebuffer once, at the C{-screen} size, so sizes up
    to that one work.  Its only CRTC is switched off first (a CRTC larger
    than the screen is refused) and on again with the mode of exactly the
    new size if there is one (Xvfb has the C{-screen} size's); without it
    the root window is the only monitor mss sees.
    """
    xdisplay: Any = importlib.import_module("Xlib.display").Display(display)
    randr: Any = importlib.import_module("Xlib.ext.randr")
    try:
        root = xdisplay.screen().root
        res = root.xrandr_get_screen_resources()
        crtc = res.crtcs[0]
        outputs = list(res.outputs[:1])
        xdisplay.xrandr_set_crtc_config(crtc, res.config_timestamp, 0, 0, 0, randr.Rotate_0, [])
        root.xrandr_set_screen_size(
            width, height, round(width * 25.4 / 96), round(height * 25.4 / 96)
        )
        res = root.xrandr_get_screen_resources()
        for mode in res.modes:
            if (mode.width, mode.height) == (width, height):
                xdisplay.xrandr_set_crtc_config(
                    crtc, res.config_timestamp, 0, 0, mode.id, randr.Rotate_0, outputs
                )
                break
        xdisplay.sync()
    finally:
        xdisplay.close()


def dual_monitor_xvfb() -> Xvfb:
    """A started 3840x1080 Xvfb showing L{DUAL_MONITORS}; the caller stops it."""
    return Xvfb(3840, 1080, 24, monitors=DUAL_MONITORS).start()


_shared: Xvfb | None = None


def shared_xvfb() -> Xvfb:
    """One 1920x1080x24 Xvfb per test process, started on first use.

    trial has no module-level fixtures, and starting a server per test costs
    0.15-0.2 s, so test modules share this one; it is stopped when the
    process exits.  Tests must not rely on what other tests left on screen:
    paint what you need first.
    """
    global _shared
    if _shared is None:
        server = Xvfb(1920, 1080, 24).start()
        atexit.register(server.stop)
        _shared = server
    return _shared


def shared_desktop(seed: int) -> str:
    """The shared Xvfb showing L{desktop_image} with C{seed}; its display name.

    The screen tests paint a realistic desktop first, then draw on it.
    """
    from litedesk.screen.testpattern import desktop_image

    xvfb = shared_xvfb()
    assert xvfb.display is not None
    directory = tempfile.mkdtemp(prefix="litedesk-desktop-")
    path = os.path.join(directory, "desktop.png")
    desktop_image(1920, 1080, seed=seed).save(path)
    set_root_image(xvfb, path)
    return xvfb.display
