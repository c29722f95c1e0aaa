"""End to end: the viewer window, driven with xdotool like a person would.

Server and host agent run as in L{tests.test_e2e_session} (the host on the
lab's Xvfb, display A).  The windowed viewer runs on a second, smaller Xvfb
(display B, 1280x900), for three reasons:

  - keyboard input injected on the host would go to whatever window has the
    X focus on that display; with the viewer on the host's own display that
    could be the viewer itself, which would send it back: a feedback loop;
  - the viewer would show itself inside itself, so screenshot comparisons
    would depend on timing;
  - a screen smaller than the host's makes the window scale the picture
    (0.625 here), so clicks exercise the mapping through scaling.

xdotool drives display B (click, type, F8 menu); the input recorder from
L{tests.support.recorder} on display A sees what arrived on the host.

Every test starts its own display B and viewer and stops them in its
cleanups (the lab's server and host are shared per process, as in the
other end-to-end modules), so the tests do not depend on their order nor
on how C{trial -j} distributes them.  Waits poll the state they wait for
(a log line, a visible menu, the recorder's state); none sleeps a fixed
time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image
from twisted.trial.unittest import SynchronousTestCase

from .support.e2e_lab import NEEDS, VIEWER, Lab, lab
from .support.images import mean_error, paint_test_screen
from .support.polling import wait_until
from .support.ports import free_port_pair
from .support.processes import TWISTD
from .support.recorder import Recorder
from .support.skips import requires
from .support.xvfb import Xvfb, _die_with_parent, set_root_image

WINDOW_NEEDS = (*NEEDS, "import", "tkinter")
SHOWING = re.compile(
    r"Showing (\d+)x(\d+) at scale ([\d.]+), offset ([-\d.]+),([-\d.]+); "
    r"canvas at (-?\d+),(-?\d+) size (\d+)x(\d+)"
)


class ViewerProcess:
    """One windowed viewer on display B, with its log file."""

    def __init__(self, the_lab: Lab, xvfb: Xvfb, tmp: Path, peer: str, *extra: str) -> None:
        self.env = dict(xvfb.env)
        self.log = tmp / "viewer.log"
        self.log.write_text("")
        self.shots = tmp / "shots"
        argv = [
            *VIEWER,
            peer,
            "--rendezvous",
            f"127.0.0.1:{the_lab.port}",
            "--key",
            the_lab.key,
            "--geometry",
            "1200x800+0+0",
            "--log-file",
            str(self.log),
            "--config",
            str(tmp / "viewer.json"),
            "--screenshot-dir",
            str(self.shots),
            *extra,
        ]
        out = open(tmp / "viewer.out", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )
        out.close()

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern)

        def found() -> re.Match[str] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"viewer exited ({self.proc.returncode}):\n{self.text()}")
            return rx.search(self.text(), start)

        return wait_until(
            found, timeout, 0.1, lambda: f"{pattern!r} in the viewer log:\n{self.text()}"
        )

    def xdotool(self, *args: str) -> str:
        return subprocess.run(
            ["xdotool", *args], env=self.env, check=True, capture_output=True, text=True, timeout=10
        ).stdout

    def visible_menus(self) -> int:
        """How many Tk menus are mapped on display B (the popup and its cascades)."""
        out = subprocess.run(
            ["xdotool", "search", "--onlyvisible", "--class", "Menu"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        return len(out.split())

    def menu(self, *keys: str) -> None:
        """Open the host-key menu (F8) and type C{keys}, each cascade letter once
        its menu is on screen (keys typed before a menu is mapped go elsewhere)."""
        self.xdotool("key", "F8")
        for depth, key in enumerate(keys, start=1):
            self._wait_menus(depth, key)
            self.xdotool("key", key)

    def _wait_menus(self, depth: int, key: str) -> None:
        wait_until(
            lambda: self.visible_menus() >= depth, 10, message=f"menu level {depth} for {key!r}"
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


#: keysymdef.h values of the characters typed in the viewer.  By number, not
#: by name: python-xlib's C{XK.string_to_keysym} only knows the keysym groups
#: it loads (no "currency"), so C{"EuroSign"} came back as 0 (NoSymbol).
EACUTE, EURO_SIGN, SSHARP = 0x00E9, 0x20AC, 0x00DF


def _map_keysyms(env: dict[str, str], *keysyms: int) -> None:
    """Give each keysym a keycode of its own on the display in C{env}.

    Without one, xdotool borrows a spare keycode per character and maps it
    back right after the release; Tk re-reads the keymap only when it looks
    the key up, so on a loaded machine (another trial worker busy) the
    viewer can read the reverted map, see NoSymbol and drop the character.
    A person's keyboard has its keys mapped all along.  The map is read
    back: a keysym that did not land would bring that race back silently.
    """
    from Xlib import display as xdisplay

    if not all(keysyms):
        raise ValueError(f"NoSymbol among the keysyms to map: {keysyms!r}")
    d = xdisplay.Display(env["DISPLAY"])
    try:
        first = d.display.info.min_keycode
        count = d.display.info.max_keycode - first + 1
        mapping = d.get_keyboard_mapping(first, count)
        free = [first + i for i, syms in enumerate(mapping) if not any(syms)]
        if len(free) < len(keysyms):
            raise AssertionError(f"{len(free)} spare keycodes for {len(keysyms)} keysyms")
        width = len(mapping[0])
        for keycode, keysym in zip(free, keysyms, strict=False):
            d.change_keyboard_mapping(keycode, [(keysym,) * width])
        d.sync()
        after = d.get_keyboard_mapping(first, count)
        mapped = {after[kc - first][0] for kc in free[: len(keysyms)]}
    finally:
        d.close()
    if mapped != set(keysyms):
        raise AssertionError(f"keysyms {keysyms!r} mapped as {sorted(mapped)!r}")


def _capture(env: dict[str, str], window: str, path: Path) -> Image.Image:
    subprocess.run(["import", "-window", window, str(path)], env=env, check=True, timeout=30)
    return Image.open(path).convert("RGB")


def _config_with_recent(path: Path) -> dict[str, Any]:
    """The viewer's config file once it lists a recent host.

    The viewer logs "Connected to ..." before it saves the host as recent
    (the file may also exist from before), so reading it at that log line
    raced with the save on a loaded machine.  Saves are atomic (rename).
    """

    def read() -> dict[str, Any] | None:
        if not path.exists():
            return None
        cfg: dict[str, Any] = json.loads(path.read_text())
        return cfg if cfg.get("recent") else None

    return wait_until(read, 10, 0.05, lambda: f"a recent host in {path}")


def _display_b(case: SynchronousTestCase) -> Xvfb:
    xb = Xvfb(1280, 900, 24).start()
    case.addCleanup(xb.stop)
    return xb


def _viewer(
    case: SynchronousTestCase, the_lab: Lab, peer: str, *extra: str
) -> tuple[ViewerProcess, Path]:
    """A windowed viewer on a fresh display B, stopped after the test."""
    tmp = Path(case.mktemp())
    tmp.mkdir(parents=True)
    xb = _display_b(case)
    v = ViewerProcess(the_lab, xb, tmp, peer, *extra)
    case.addCleanup(v.stop)
    return v, tmp


@requires(*WINDOW_NEEDS)
class ViewerWindowTests(SynchronousTestCase):
    """A viewer on the patterned host screen, scaled to fit (0.625)."""

    def setUp(self) -> None:
        self.lab = lab()
        self.peer = self.lab.host("main")
        # Paint the test screen first: other tests may have left anything there.
        desk = Path(self.lab.dir) / "viewer-window-desk.png"
        paint_test_screen(desk)
        set_root_image(self.lab.xvfb, str(desk))
        self.viewer, self.tmp = _viewer(
            self, self.lab, self.peer, "--password", "e2e-password", "--force-relay"
        )
        m = self.viewer.wait_log(SHOWING.pattern, timeout=30)
        _w, _h, scale, ox, oy, cx, cy, _cw, _ch = m.groups()
        self.scale = float(scale)
        self.offset = (float(ox), float(oy))
        self.canvas = (int(cx), int(cy))

    def recorder(self) -> Recorder:
        """The input recorder on the host display, at (0,0)-(1000,800), for this test."""
        rec = Recorder(self.lab.env)
        self.addCleanup(rec.stop)
        return rec

    def to_viewer(self, rx: int, ry: int) -> tuple[int, int]:
        """Root coordinates on display B where remote pixel (rx, ry) is drawn."""
        lx = self.offset[0] + (rx + 0.5) * self.scale - 0.5
        ly = self.offset[1] + (ry + 0.5) * self.scale - 0.5
        return self.canvas[0] + round(lx), self.canvas[1] + round(ly)

    def typed(self, rec: Recorder, want: str) -> str:
        """The recorder's entry text once it is C{want} (or what it is at the deadline)."""
        last = [""]

        def check() -> bool:
            last[0] = rec.command("state")["text"]
            return last[0] == want

        with contextlib.suppress(AssertionError):
            wait_until(check, 10, 0.1, f"{want!r} typed on the host")
        return last[0]

    def test_a_window_shows_remote_screen(self) -> None:
        """A screenshot of the viewer window shows the host's screen, scaled to fit:
        the picture region matches a capture of the host display, and the letterbox
        bands around it do not."""
        self.assertAlmostEqual(self.scale, 1200 / 1920, places=3)
        host = _capture(self.lab.env, "root", self.tmp / "host.png")
        wid = self.viewer.xdotool("search", "--name", f"^{self.peer} - LiteDesk$").split()[0]
        geo = self.viewer.xdotool("getwindowgeometry", "--shell", wid)
        wx = int(re.search(r"X=(-?\d+)", geo).group(1))  # type: ignore[union-attr]
        wy = int(re.search(r"Y=(-?\d+)", geo).group(1))  # type: ignore[union-attr]
        left = self.canvas[0] - wx + round(self.offset[0])
        top = self.canvas[1] - wy + round(self.offset[1])
        size = (round(1920 * self.scale), round(1080 * self.scale))
        expected = host.resize(size, Image.Resampling.BILINEAR)
        seen: dict[str, Any] = {}

        def settled() -> bool:
            # The first frames after connecting are still refining (H.264).
            shot = _capture(self.viewer.env, wid, self.tmp / "window.png")
            picture = shot.crop((left, top, left + size[0], top + size[1]))
            seen["shot"], seen["err"] = shot, mean_error(picture, expected)
            return bool(seen["err"] < 12.0)

        with contextlib.suppress(AssertionError):
            wait_until(settled, 15, 0.2, "the window picture to match the host screen")
        shot, err = seen["shot"], seen["err"]
        self.assertLess(err, 12.0, f"window picture differs from the host screen ({err:.1f})")
        # Sanity: the comparison can fail: shifted by 40 px it no longer matches.
        shifted = shot.crop((left + 40, top, left + 40 + size[0], top + size[1]))
        self.assertGreater(mean_error(shifted, expected), err + 10)
        # Regions: the green disc (host 1300-1700, 600-1000) is green in the window.
        gx, gy = self.to_viewer(1500, 800)
        px: Any = shot.getpixel((gx - wx, gy - wy))
        self.assertLess(abs(px[1] - 200) + abs(px[0] - 20) + abs(px[2] - 90), 60, px)

    def test_b_click_and_typing_reach_host(self) -> None:
        """A click inside the remote screen lands on the same host pixel (through
        the 0.625 scaling); typed text, Ctrl+A, Return and non-ASCII characters reach
        the focused host window."""
        rec = self.recorder()
        ready = rec.ready
        rec.command("clear")
        start = rec.mark()
        rx, ry = ready["canvas_x"] + 400, ready["canvas_y"] + 300
        vx, vy = self.to_viewer(rx, ry)
        self.viewer.xdotool("mousemove", "--sync", str(vx), str(vy))
        self.viewer.xdotool("click", "1")
        press = rec.wait_for(lambda e: e["ev"] == "ButtonPress", start=start, timeout=10)
        tol = int(1 / self.scale) + 1
        self.assertEqual(press["num"], 1)
        self.assertLessEqual(abs(press["x_root"] - rx), tol, (press, rx, ry))
        self.assertLessEqual(abs(press["y_root"] - ry), tol, (press, rx, ry))
        # No window manager on the host: give the entry the focus back.
        rec.command("clear")
        start = rec.mark()
        self.viewer.xdotool("type", "--delay", "40", "Hello LiteDesk 123")
        self.assertEqual(self.typed(rec, "Hello LiteDesk 123"), "Hello LiteDesk 123")
        self.viewer.xdotool("key", "--delay", "60", "ctrl+a", "Return")
        sel = rec.wait_for(lambda e: e["ev"] == "selectall", start=start, timeout=10)
        self.assertEqual(sel["selection"], "Hello LiteDesk 123")
        submit = rec.wait_for(lambda e: e["ev"] == "submit", start=start, timeout=10)
        self.assertEqual(submit["text"], "Hello LiteDesk 123")
        # Characters without a key of their own on the host travel as unicode
        # and are typed there.
        _map_keysyms(self.viewer.env, EACUTE, EURO_SIGN, SSHARP)
        rec.command("clear")
        self.viewer.xdotool("type", "--delay", "80", "é€ß")
        self.assertEqual(self.typed(rec, "é€ß"), "é€ß")

    def test_b2_wheel_and_drag_reach_host(self) -> None:
        """The wheel scrolls on the host (button 4 up, 5 down), and a drag in the window
        is a press, moves with the button held, and a release at the mapped end point."""
        rec = self.recorder()
        ready = rec.ready
        start = rec.mark()
        rx, ry = ready["canvas_x"] + 300, ready["canvas_y"] + 200
        vx, vy = self.to_viewer(rx, ry)
        self.viewer.xdotool("mousemove", "--sync", str(vx), str(vy))
        self.viewer.xdotool("click", "4")
        self.viewer.xdotool("click", "5")
        up = rec.wait_for(lambda e: e["ev"] == "ButtonPress" and e["num"] == 4, start=start)
        down = rec.wait_for(lambda e: e["ev"] == "ButtonPress" and e["num"] == 5, start=start)
        self.assertLess(rec.events.index(up), rec.events.index(down))
        start = rec.mark()
        ex, ey = ready["canvas_x"] + 600, ready["canvas_y"] + 450
        self.viewer.xdotool("mousedown", "1")
        rec.wait_for(lambda e: e["ev"] == "ButtonPress" and e["num"] == 1, start=start)
        for k in range(1, 6):
            # One step at a time: each move reaches the host before the next,
            # so X does not merge them into one.
            step = rec.mark()
            px, py = self.to_viewer(rx + (ex - rx) * k // 5, ry + (ey - ry) * k // 5)
            self.viewer.xdotool("mousemove", "--sync", str(px), str(py))
            rec.wait_for(lambda e: e["ev"] == "Motion", start=step, timeout=10)
        self.viewer.xdotool("mouseup", "1")
        # Button 1's: the wheel's releases (4, 5) may arrive after the mark.
        release = rec.wait_for(
            lambda e: e["ev"] == "ButtonRelease" and e["num"] == 1, start=start, timeout=10
        )
        tol = int(1 / self.scale) + 1
        self.assertLessEqual(abs(release["x_root"] - ex), tol, release)
        self.assertLessEqual(abs(release["y_root"] - ey), tol, release)
        drags = rec.since(start, "Motion")
        self.assertGreaterEqual(len(drags), 3)  # moves with button 1 held (state bit 0x100)
        self.assertTrue(all(e["state"] & 0x100 for e in drags))

    def test_c_host_key_menu_quality_and_screenshot(self) -> None:
        """F8 opens the menu without reaching the host; Quality > Best makes the host
        send a new key frame; Screenshot saves the remote screen at full size."""
        rec = self.recorder()
        start = rec.mark()
        log_start = len(self.viewer.text())
        self.viewer.menu("q", "t")
        self.viewer.wait_log(r"Quality set to best", start=log_start)
        kf = self.viewer.wait_log(r"Key frames received: (\d+)", start=log_start, timeout=10)
        self.assertGreaterEqual(int(kf.group(1)), 2)
        wait_until(lambda: self.viewer.visible_menus() == 0, 10, message="the menu to close")
        self.viewer.menu("s")
        saved = self.viewer.wait_log(r"Screenshot saved to (\S+\.png)", start=log_start)
        got = Image.open(saved.group(1)).convert("RGB")
        self.assertEqual(got.size, (1920, 1080))
        host = _capture(self.lab.env, "root", self.tmp / "host2.png")
        err = mean_error(got, host)
        self.assertLess(err, 8.0, f"screenshot differs from the host screen ({err:.1f})")
        # The host key and the menu letters never reached the host.
        rec.sync(0.3)
        keys = [e for e in rec.since(start) if e["ev"] in ("KeyPress", "KeyRelease")]
        self.assertEqual(keys, [])

    def test_d_status_bar_and_config(self) -> None:
        """After connecting, the host is in the recent list of the 0600 config file,
        with the server and key remembered; the password is not stored."""
        cfg_path = self.tmp / "viewer.json"
        cfg = _config_with_recent(cfg_path)
        self.assertEqual(cfg["recent"][0]["peer_id"], self.peer)
        self.assertEqual(cfg["server"], f"127.0.0.1:{self.lab.port}")
        self.assertEqual(cfg["key"], self.lab.key)
        self.assertNotIn("e2e-password", cfg_path.read_text())
        self.assertEqual(stat.S_IMODE(os.stat(cfg_path).st_mode), 0o600)

    def test_e_one_to_one_toggle(self) -> None:
        """View > 1:1 (from the F8 menu) shows the remote screen unscaled with scroll
        bars, and clicks then land on exactly the pixel under the pointer; Scale to
        fit restores the scaled view."""
        rec = self.recorder()
        ready = rec.ready
        log_start = len(self.viewer.text())
        self.viewer.menu("v", "1")
        self.viewer.wait_log(
            r"Showing 1920x1080 at scale 1\.00000, offset 0\.0,0\.0", start=log_start
        )
        start = rec.mark()
        rx, ry = ready["canvas_x"] + 300, ready["canvas_y"] + 200
        vx, vy = self.canvas[0] + rx, self.canvas[1] + ry
        self.viewer.xdotool("mousemove", "--sync", str(vx), str(vy))
        self.viewer.xdotool("click", "1")
        press = rec.wait_for(lambda e: e["ev"] == "ButtonPress", start=start, timeout=10)
        self.assertEqual((press["x_root"], press["y_root"]), (rx, ry))
        log_start = len(self.viewer.text())
        self.viewer.menu("v", "s")
        self.viewer.wait_log(r"Showing 1920x1080 at scale 0\.62500", start=log_start)


@requires(*WINDOW_NEEDS)
class ViewerWindowErrorTests(SynchronousTestCase):
    def test_wrong_password_dialog(self) -> None:
        """A wrong password opens an error window titled with the headless mode's
        reason ("wrong password"), and the viewer does not retry on its own."""
        the_lab = lab()
        peer = the_lab.host("winpw")
        v, _ = _viewer(self, the_lab, peer, "--password", "not-it", "--force-relay")
        v.wait_log(r"Connection failed: wrong password", timeout=30)
        out = v.xdotool("search", "--sync", "--name", "^LiteDesk: wrong password$")
        self.assertTrue(out.split())
        # A retry would have been scheduled (and logged) when the failure was
        # handled, before the dialog was shown (the timing is on a Clock in
        # tests.test_viewer_controller).
        self.assertNotIn("Reconnecting in", v.text())
        self.assertEqual(v.text().count("Connection failed"), 1)

    def test_view_only_indicator(self) -> None:
        """Against a --view-only host the picture is shown, and the first input is
        answered by the host's notice, which the window shows as VIEW ONLY."""
        the_lab = lab()
        peer = the_lab.host("viewonly", "--view-only")
        v, tmp = _viewer(self, the_lab, peer, "--password", "e2e-password")
        v.wait_log(SHOWING.pattern, timeout=30)
        v.xdotool("mousemove", "--sync", "600", "400")
        v.xdotool("click", "1")
        v.wait_log(r"View only: view only", timeout=10)
        wid = v.xdotool("search", "--name", f"^{peer} - LiteDesk$").split()[0]

        def red_label() -> int:
            shot = _capture(v.env, wid, tmp / "window.png")
            # The red VIEW ONLY label sits in the status bar (bottom 30 px).
            bar = shot.crop((0, shot.height - 30, shot.width, shot.height))
            pixels: list[Any] = list(bar.getdata())
            return len([p for p in pixels if p[0] > 150 and p[1] < 80 and p[2] < 80])

        reds = [0]

        def shown() -> bool:
            reds[0] = red_label()
            return reds[0] > 50

        with contextlib.suppress(AssertionError):
            wait_until(shown, 10, 0.2, "VIEW ONLY in the status bar")
        self.assertGreater(reds[0], 50)

    def test_reconnect_countdown_after_drop(self) -> None:
        """When the host goes away the window counts down and reconnects by itself
        once the host is back."""
        the_lab = lab()
        port = free_port_pair()
        the_lab.host("winre", "--listen", f"tcp:{port}:interface=127.0.0.1")
        host_proc = the_lab.procs[-1]
        tmp = Path(self.mktemp())
        tmp.mkdir()
        known = str(tmp / "known_hosts")
        v, _ = _viewer(
            self,
            the_lab,
            f"127.0.0.1:{port}",
            "--password",
            "e2e-password",
            "--known-hosts",
            known,
        )
        v.wait_log(r"Connected to 127\.0\.0\.1:\d+ via direct", timeout=30)
        argv = [str(a) for a in host_proc.args]  # type: ignore[union-attr]
        host_proc.terminate()
        host_proc.wait(10)
        v.wait_log(r"Reconnecting in \d+ s", timeout=15)
        # Bring the same host (same config dir, so the same key) back.
        the_lab._spawn("host-winre-2", argv)
        n = v.text().count("via direct")
        wait_until(
            lambda: v.text().count("via direct") > n, 40, 0.2, lambda: "reconnect:\n" + v.text()
        )
        self.assertEqual(v.text().count("via direct"), n + 1, v.text())


@requires(*WINDOW_NEEDS)
class ConnectDialogTests(SynchronousTestCase):
    def test_dialog_browse_and_connect(self) -> None:
        """Started without id and password, the viewer opens the connect dialog; Browse
        lists a --discoverable host from the server's discovery listener; typing the id
        and the (hidden) password and pressing Return connects, and the config then
        remembers server, key and the host as recent."""
        the_lab = lab()
        tmp = Path(self.mktemp())
        tmp.mkdir()
        # A second server, only for its LiteDesk v1 discovery listener.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dport = s.getsockname()[1]
        sport = free_port_pair()
        disco = the_lab._spawn(
            "discovery",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "--logfile",
                str(tmp / "discovery.log"),
                "litedesk-relay",
                "--data-dir",
                str(tmp / "disco"),
                "--port",
                str(sport),
                "--interface",
                "127.0.0.1",
                "--no-relay",
                "--discovery",
                "--discovery-endpoint",
                f"tcp:{dport}:interface=127.0.0.1",
            ],
        )
        self.addCleanup(disco.terminate)
        peer = the_lab.host(
            "disco",
            "--discoverable",
            "--discovery-server",
            f"127.0.0.1:{dport}",
            "--lan-discovery-port",
            "0",
        )
        host_log = Path(the_lab.dir) / "host-disco.log"
        wait_until(
            lambda: "listed by the discovery server" in host_log.read_text(),
            20,
            0.1,
            lambda: host_log.read_text(),
        )
        xb = _display_b(self)
        env_pw = dict(xb.env)
        env_pw.pop("LITEDESK_PASSWORD", None)
        log = tmp / "viewer.log"
        log.write_text("")
        out = open(tmp / "viewer.out", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                *VIEWER,
                "--rendezvous",
                f"127.0.0.1:{the_lab.port}",
                "--key",
                the_lab.key,
                "--discovery",
                f"127.0.0.1:{dport}",
                "--log-file",
                str(log),
                "--config",
                str(tmp / "viewer.json"),
                "--force-relay",
            ],
            env=env_pw,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            preexec_fn=_die_with_parent,
        )
        out.close()

        def stop_viewer() -> None:
            proc.terminate()
            proc.wait(10)

        self.addCleanup(stop_viewer)

        def xdo(*args: str) -> str:
            return subprocess.run(
                ["xdotool", *args], env=xb.env, check=True, capture_output=True, text=True
            ).stdout

        xdo("search", "--sync", "--name", "^LiteDesk: connect$")
        wait_until(lambda: "Browse found" in log.read_text(), 15, 0.1, log.read_text)
        self.assertIn(f"{peer} [server]", log.read_text())
        # The id field has the focus; Tab moves to the password field.
        xdo("type", "--delay", "30", peer)
        xdo("key", "Tab")
        xdo("type", "--delay", "30", "e2e-password")
        xdo("key", "Return")
        wait_until(lambda: f"Connected to {peer}" in log.read_text(), 30, 0.1, log.read_text)
        cfg = _config_with_recent(tmp / "viewer.json")
        self.assertEqual(cfg["recent"][0]["peer_id"], peer)
        self.assertEqual(cfg["key"], the_lab.key)
        self.assertNotIn("e2e-password", (tmp / "viewer.json").read_text())


@requires(*WINDOW_NEEDS)
class ClipboardSyncTests(SynchronousTestCase):
    def test_clipboard_both_ways(self) -> None:
        """With clipboard sync on, text copied on the viewer's desktop reaches the host
        clipboard when the pointer comes back over the picture, and text copied on the
        host arrives on the viewer's desktop clipboard."""
        the_lab = lab()
        peer = the_lab.host("main")
        v, _ = _viewer(self, the_lab, peer, "--password", "e2e-password")
        v.wait_log(SHOWING.pattern, timeout=30)

        def clipboard(env: dict[str, str]) -> str:
            return subprocess.run(
                ["xclip", "-o", "-selection", "clipboard"],
                env=env,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout

        def put(env: dict[str, str], text: str) -> None:
            # -quiet keeps xclip in the foreground: by default it forks a
            # daemon that serves the selection until the X server stops and
            # then prints "X connection to :N broken" at the end of the run.
            owner = subprocess.Popen(
                ["xclip", "-i", "-selection", "clipboard", "-quiet"],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
            self.addCleanup(stop, owner)
            assert owner.stdin is not None
            owner.stdin.write(text.encode())
            owner.stdin.close()
            wait_until(lambda: clipboard(env) == text, 10, 0.05, f"xclip to own {text!r}")

        def stop(owner: subprocess.Popen[bytes]) -> None:
            # xclip exits by itself once another client takes the selection.
            if owner.poll() is None:
                owner.terminate()
            owner.wait(10)

        def get(env: dict[str, str], want: str) -> str:
            seen = [""]

            def check() -> bool:
                seen[0] = clipboard(env)
                return seen[0] == want

            with contextlib.suppress(AssertionError):
                wait_until(check, 10, 0.2, f"{want!r} on the clipboard")
            return seen[0]

        put(v.env, "copied on the viewer ✓")
        v.xdotool("mousemove", "--sync", "1250", "880")  # off the picture (outside the window)
        v.xdotool("mousemove", "--sync", "600", "400")  # and back over it
        self.assertEqual(get(the_lab.env, "copied on the viewer ✓"), "copied on the viewer ✓")
        put(the_lab.env, "copied on the host é")
        self.assertEqual(get(v.env, "copied on the host é"), "copied on the host é")
