"""A host with two monitors, end to end: listing, switching, capture and input per monitor.

One real C{twistd litedesk-host --listen} runs on a 3840x1080 Xvfb split into two RandR
monitors side by side (L{tests.support.xvfb.dual_monitor_xvfb}), each showing its own
picture.  What a person with two screens would notice is checked with the headless
LiteDesk viewer (C{--monitor N}, C{--screenshot}, C{--click}, C{--stats-json}) and with
the stock RustDesk client emulator (tests/support/rustdesk_client.py): both monitors are
offered with their geometry, the picture is the chosen monitor's, a click at (x, y) of the
second monitor lands at (1920 + x, y) of the X screen, and a monitor the host does not
have is refused with the count, and monitors added after the agent started are offered at
the next login (a second host whose monitors are defined while it runs).  The host's side
on its own (the monitor list, SwitchDisplay answers) is in tests/test_host_monitors.py.
"""

from __future__ import annotations

import atexit
import base64
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import av
from PIL import Image, ImageOps
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.session.host_context import DISPLAYS_REUSED_FOR

from .support import rustdesk_client as rc
from .support.images import mean_error, paint_test_screen
from .support.listening_host import ListeningHost
from .support.polling import wait_until
from .support.recorder import RECORDER_TITLE, Recorder, pointer_position
from .support.skips import requires
from .support.xvfb import (
    DUAL_MONITORS,
    Xvfb,
    dual_monitor_xvfb,
    resize_screen,
    set_monitors,
    set_root_image,
)

PASSWORD = "two-monitors-Pw-5521"
#: The H.264/VP9 error between a sent picture and the decoded one stays far below this,
#: and the two monitors' pictures differ by far more.
SAME = 6.0


def monitor_pictures(directory: Path) -> tuple[Image.Image, Image.Image, Path]:
    """Two clearly different 1920x1080 pictures and the 3840x1080 root image made of them."""
    first = paint_test_screen(marker="MONITOR-ONE")
    # Turned upside down and inverted: every stripe and the disc move, every colour changes.
    second = ImageOps.invert(paint_test_screen(marker="MONITOR-TWO").rotate(180))
    root = Image.new("RGB", (3840, 1080))
    root.paste(first, (0, 0))
    root.paste(second, (1920, 0))
    path = directory / "root.png"
    root.save(path)
    return first, second, path


class _DualHost:
    """The host agent on the two-monitor display, with both pictures shown."""

    def __init__(self, xvfb: Xvfb | None = None) -> None:
        self.host = ListeningHost(
            PASSWORD, prefix="litedesk-multimon-", xvfb=xvfb or dual_monitor_xvfb()
        )
        self.env = self.host.env
        self.first, self.second, root = monitor_pictures(self.host.dir)
        set_root_image(self.host.xvfb, str(root))
        m = re.search(r"LiteDesk host id (\S+), key (\S+),", self.host.log_text())
        assert m is not None, self.host.log_text()
        self.peer_id = m.group(1)
        self.host_pk = base64.b64decode(m.group(2))

    def viewer(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The headless LiteDesk viewer, directly to the host, with C{args}."""
        return self.host.viewer(*args)


_shared: _DualHost | None = None


def dual_host() -> _DualHost:
    """One host for the module's tests (an Xvfb and an agent cost seconds); stopped at exit."""
    global _shared
    if _shared is None:
        _shared = _DualHost()
        atexit.register(_shared.host.stop)
    return _shared


@requires("Xvfb", "display", "xdotool")
class LiteDeskViewerTests(SynchronousTestCase):
    """The headless LiteDesk viewer against the two-monitor host."""

    def setUp(self) -> None:
        self.host = dual_host()
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir()

    def run_viewer(self, *args: str) -> dict[str, Any]:
        result = self.host.viewer(*args, "--stats-json")
        self.assertEqual(result.returncode, 0, f"viewer failed: {result.stderr}")
        stats: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return stats

    def screenshot(self, *args: str) -> tuple[Image.Image, dict[str, Any]]:
        shot = self.tmp / f"shot{len(list(self.tmp.iterdir()))}.png"
        stats = self.run_viewer(*args, "--screenshot", str(shot))
        return Image.open(shot).convert("RGB"), stats

    def test_viewer_lists_both_monitors(self) -> None:
        """Both monitors are offered, numbered from 1, with their place on the desktop."""
        stats = self.run_viewer()
        self.assertEqual(stats["monitor"], 1)
        self.assertEqual(
            [(m["number"], m["x"], m["y"], m["width"], m["height"]) for m in stats["monitors"]],
            [(1, 0, 0, 1920, 1080), (2, 1920, 0, 1920, 1080)],
        )

    def test_screenshot_is_the_chosen_monitors_picture(self) -> None:
        """Monitor 1 by default and with --monitor 1, monitor 2's own picture with --monitor 2."""
        for args, expected, other in (
            ((), self.host.first, self.host.second),
            (("--monitor", "1"), self.host.first, self.host.second),
            (("--monitor", "2"), self.host.second, self.host.first),
        ):
            got, stats = self.screenshot(*args)
            self.assertEqual(got.size, (1920, 1080), args)
            self.assertLess(mean_error(expected, got), SAME, args)
            self.assertGreater(mean_error(other, got), 10 * SAME, args)
            self.assertEqual(stats["monitor"], 2 if "2" in args else 1)

    def test_click_on_the_second_monitor_lands_on_it(self) -> None:
        """A click at (x, y) of monitor 2 reaches a window there at (1920 + x, y) of the screen."""
        rec = Recorder(self.host.env)
        self.addCleanup(rec.stop)
        # No window manager: xdotool moves the window itself, onto monitor 2.
        subprocess.run(
            ["xdotool", "search", "--name", RECORDER_TITLE, "windowmove", "--sync", "1920", "0"],
            env=self.host.env,
            check=True,
            timeout=10,
            capture_output=True,
        )
        x, y = rec.ready["canvas_x"] + 200, rec.ready["canvas_y"] + 150
        start = rec.mark()
        self.run_viewer("--monitor", "2", "--click", f"{x},{y}")
        press = rec.wait_for(lambda e: e["ev"] == "ButtonPress", start=start, timeout=10)
        self.assertEqual((press["num"], press["x_root"], press["y_root"]), (1, 1920 + x, y))
        self.assertEqual(pointer_position(self.host.host.xvfb.display), (1920 + x, y))

    def test_click_on_the_first_monitor_stays_there(self) -> None:
        """Without --monitor (and with --monitor 1) clicks use the first monitor's origin."""
        self.run_viewer("--monitor", "2", "--click", "10,10")
        self.run_viewer("--click", "123,45")
        self.assertEqual(pointer_position(self.host.host.xvfb.display), (123, 45))
        self.run_viewer("--monitor", "1", "--click", "321,54")
        self.assertEqual(pointer_position(self.host.host.xvfb.display), (321, 54))

    def test_a_monitor_the_host_lacks_is_refused(self) -> None:
        """--monitor 3 (or 0) fails with the number of monitors the host has."""
        for number in ("3", "0"):
            result = self.host.viewer("--monitor", number, "--screenshot", str(self.tmp / "x.png"))
            self.assertNotEqual(result.returncode, 0)
            self.assertIn(f"--monitor {number}: the host has 2 monitor(s)", result.stderr)
            self.assertFalse((self.tmp / "x.png").exists())


class _VP9Screen:
    """The host's VP9 video decoded as a stock client decodes it (libvpx through PyAV)."""

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("vp9", "r")
        self.image: Image.Image | None = None

    def feed(self, vf: pb.VideoFrame) -> None:
        for encoded in vf.vp9s.frames:
            for frame in self.decoder.decode(av.Packet(encoded.data)):
                self.image = frame.to_image().convert("RGB")


@requires("Xvfb", "display")
class StockRustDeskClientTests(SynchronousTestCase):
    """A stock RustDesk client (the emulator) switches the host's display."""

    def setUp(self) -> None:
        self.host = dual_host()

    def login(self) -> tuple[rc.RustDeskClient, pb.PeerInfo]:
        client = rc.RustDeskClient.connect(
            "127.0.0.1", self.host.host.port, self.host.peer_id, self.host.host_pk
        )
        self.addCleanup(client.close)
        self.assertTrue(client.handshake())
        result = client.login(PASSWORD)
        self.assertEqual(result.response.error, "")
        return client, result.response.peer_info

    def picture_after(self, client: rc.RustDeskClient, matches: Image.Image) -> Image.Image:
        """Decode video until the picture is C{matches} (or give up after 300 messages)."""
        screen = _VP9Screen()
        for _ in range(300):
            msg = client.recv()
            if msg.WhichOneof("union") != "video_frame":
                continue
            screen.feed(msg.video_frame)
            if screen.image is not None and mean_error(matches, screen.image) < SAME:
                return screen.image
        self.fail(
            f"no picture like it; last error {screen.image and mean_error(matches, screen.image)}"
        )

    def test_switch_display_streams_and_maps_the_second_monitor(self) -> None:
        """PeerInfo lists both; SwitchDisplay{1} is answered with monitor 2's geometry, its
        picture follows, and a click at desktop (1920 + x, y) lands there."""
        client, info = self.login()
        self.assertEqual(
            [(d.x, d.y, d.width, d.height) for d in info.displays],
            [(m.x, m.y, m.width, m.height) for m in DUAL_MONITORS],
        )
        self.assertEqual(info.current_display, 0)
        self.picture_after(client, self.host.first)

        # A display the host lacks: no answer (RustDesk has no refusal), a reason in the
        # log, and the session goes on.
        client.send_misc(switch_display=pb.SwitchDisplay(display=7))
        wait_until(
            lambda: "asked for monitor 7; there are 2: ignored" in self.host.host.log_text(),
            10,
            0.05,
            "the ignored switch in the host log",
        )
        client.send_misc(switch_display=pb.SwitchDisplay(display=1))
        answer = client.recv_until("misc").misc
        self.assertEqual(answer.WhichOneof("union"), "switch_display")
        sd = answer.switch_display
        self.assertEqual((sd.display, sd.x, sd.y, sd.width, sd.height), (1, 1920, 0, 1920, 1080))
        self.picture_after(client, self.host.second)

        # A stock client sends desktop coordinates: the display's origin plus the point.
        x, y = 1920 + 250, 333
        client.send_mouse(0, x, y)
        wait_until(
            lambda: pointer_position(self.host.host.xvfb.display) == (x, y),
            10,
            0.05,
            lambda: f"the pointer at {(x, y)}, not {pointer_position(self.host.host.xvfb.display)}",
        )

    def test_no_frame_of_the_first_monitor_follows_the_answer(self) -> None:
        """A switch right after login (while the first frame is being encoded): every
        picture after the host's answer is monitor 2's."""
        for delay in (0.0, 0.02, 0.05):
            client, _info = self.login()
            time.sleep(delay)
            client.send_misc(switch_display=pb.SwitchDisplay(display=1))
            screen = _VP9Screen()
            answered = False
            for _ in range(300):
                msg = client.recv()
                which = msg.WhichOneof("union")
                if which == "misc" and msg.misc.HasField("switch_display"):
                    answered = True
                elif which == "video_frame":
                    screen.feed(msg.video_frame)
                    if answered and screen.image is not None:
                        break
            assert screen.image is not None
            self.assertLess(mean_error(self.host.second, screen.image), SAME, delay)
            client.close()


@requires("Xvfb", "display")
class MonitorsAddedLaterTests(SynchronousTestCase):
    """Monitors defined after the agent started (a screen plugged in) are offered."""

    def test_next_login_offers_the_new_monitors(self) -> None:
        """One 3840x1080 monitor at first; split into two, the next viewer gets both, and
        monitor 2 shows its own picture."""
        host = _DualHost(Xvfb(3840, 1080, 24).start())
        self.addCleanup(host.host.stop)
        shot = Path(self.mktemp())
        before = host.viewer("--stats-json")
        self.assertEqual(before.returncode, 0, before.stderr)
        self.assertEqual(
            [(m["width"], m["height"]) for m in json.loads(before.stdout)["monitors"]],
            [(3840, 1080)],
        )
        set_monitors(host.host.xvfb.display or "", DUAL_MONITORS)
        # The host reuses a listing for this long (a flood of switches costs one a second).
        time.sleep(DISPLAYS_REUSED_FOR)
        after = host.viewer("--stats-json", "--monitor", "2", "--screenshot", str(shot))
        self.assertEqual(after.returncode, 0, after.stderr)
        self.assertEqual(
            [(m["x"], m["width"]) for m in json.loads(after.stdout)["monitors"]],
            [(0, 1920), (1920, 1920)],
        )
        self.assertLess(mean_error(host.second, Image.open(shot).convert("RGB")), SAME)
        self.assertIn(
            "Monitors changed: 3840x1080+0+0 -> 1920x1080+0+0, 1920x1080+1920+0",
            host.host.log_text(),
        )

    def test_clicks_reach_a_monitor_plugged_in_later(self) -> None:
        """The root window grows from 1920 to 3840 pixels wide after input has been
        injected (a screen plugged in): the new monitor is offered and a click at (x, y)
        of it lands at (1920 + x, y), not at the old desktop's right edge."""
        xvfb = Xvfb(3840, 1080, 24).start()
        display = xvfb.display or ""
        resize_screen(display, 1920, 1080)
        host = _DualHost(xvfb)
        self.addCleanup(host.host.stop)
        first = host.viewer("--click", "100,100")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(pointer_position(display), (100, 100))
        resize_screen(display, 3840, 1080)
        set_monitors(display, DUAL_MONITORS)
        time.sleep(DISPLAYS_REUSED_FOR)
        after = host.viewer("--stats-json", "--monitor", "2", "--click", "300,200")
        self.assertEqual(after.returncode, 0, after.stderr)
        self.assertEqual(len(json.loads(after.stdout)["monitors"]), 2)
        wait_until(
            lambda: pointer_position(display) == (2220, 200),
            10,
            0.05,
            lambda: f"the pointer at (2220, 200), not {pointer_position(display)}",
        )
