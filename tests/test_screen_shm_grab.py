"""Whole-monitor grabs into our own MIT-SHM segments (litedesk.screen.shm_grab).

On a real Xvfb: a grab holds exactly what mss grabs; the two segments take
turns, so grab N's buffer is unchanged by grab N + 1 and rewritten by grab
N + 2; the buffers are writable; another size gets new segments while views
of the old ones stay as they were; closing twice is fine and nothing leaks
file descriptors.  Where shared memory cannot work (no MIT-SHM, a display
over TCP, no display at all) L{ShmUnavailable} is raised and L{Capturer}
grabs with mss, saying why once.  The damage path finds the changed box
with these buffers, also after a whole grab that found no change.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from twisted.internet import defer
from twisted.logger import capturedLogs
from twisted.trial import unittest

from litedesk.screen import CaptureError, Capturer
from litedesk.screen.change import Rect, address_of
from litedesk.screen.shm_grab import SLACK, ShmGrabber, ShmGrabError, ShmUnavailable
from litedesk.screen.swscale import DirectConverter
from litedesk.screen.testpattern import desktop_image, image_to_bgra
from litedesk.screen.yuv_canvas import YuvCanvas, readable
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import Monitor, Xvfb, set_root_image, shared_xvfb
from tests.test_screen_damage import _Window, damage_rig

W, H = 1920, 1080


def _open_fds() -> dict[int, str]:
    """This process's file descriptors and what each is open on."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own, say)
            continue
    return fds


def _opened_since(before: dict[int, str]) -> dict[int, str]:
    """Descriptors open now that were not open on the same thing before.
    Earlier tests' threads may still close theirs meanwhile: only new ones
    are a leak."""
    return {fd: what for fd, what in _open_fds().items() if before.get(fd) != what}


def _own_xvfb(case: unittest.TestCase, *args: Any, **kwargs: Any) -> str:
    xvfb = Xvfb(*args, **kwargs).start()
    case.addCleanup(xvfb.stop)
    assert xvfb.display is not None
    return xvfb.display


@requires("Xvfb", "display")
class ShmGrabberTests(unittest.TestCase):
    def setUp(self) -> None:
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        self.display = xvfb.display
        self.desktop = desktop_image(W, H, seed=31)
        path = self.mktemp() + ".png"
        self.desktop.save(path)
        set_root_image(xvfb, path)
        self.grabber = ShmGrabber(self.display, W, H)
        self.addCleanup(self.grabber.close)

    def window(self, x: int, y: int, w: int, h: int) -> _Window:
        win = _Window(self.display, x, y, w, h)
        self.addCleanup(win.close)
        return win

    def test_grab_equals_mss(self) -> None:
        """The whole screen and a rectangle of it hold, byte for byte, what mss
        grabs and the image shown; the view is exactly the pixels long."""
        cap = Capturer(self.display)
        self.addCleanup(cap.close)
        view = self.grabber.grab(0, 0, W, H)
        self.assertEqual(len(view), W * H * 4)
        self.assertEqual(bytes(view), cap.grab().data)
        self.assertEqual(bytes(view), image_to_bgra(self.desktop))
        part = self.grabber.grab(333, 222, 150, 77)
        self.assertEqual(bytes(part), bytes(cap.grab_rect(Rect(333, 222, 150, 77))))

    def test_grab_n_stays_until_grab_n_plus_2(self) -> None:
        """A screen change after grab N shows in grab N + 1, not in N's buffer;
        grab N + 2 is written into N's buffer."""
        win = self.window(100, 100, 300, 200)
        first = self.grabber.grab(0, 0, W, H)
        before = bytes(first)
        win.fill(10, 10, 50, 40, 0xFF0000)
        second = self.grabber.grab(0, 0, W, H)
        self.assertEqual(bytes(first), before)
        self.assertNotEqual(bytes(second), before)
        self.assertNotEqual(address_of(first), address_of(second))
        third = self.grabber.grab(0, 0, W, H)
        self.assertEqual(address_of(third), address_of(first))
        self.assertEqual(bytes(first), bytes(second))  # rewritten by the third grab

    def test_buffers_are_writable(self) -> None:
        """A grab can be written to (the damage path writes rectangles into
        its copy), and the grab after next overwrites what was written."""
        view = self.grabber.grab(0, 0, W, H)
        self.assertFalse(view.readonly)
        original = bytes(view[:8])
        view[:8] = b"\x01\x02\x03\x04\x05\x06\x07\x08"
        row = W * 4
        view[row : row + 4] = view[:4]
        self.assertEqual(bytes(view[row : row + 4]), b"\x01\x02\x03\x04")
        self.grabber.grab(0, 0, W, H)
        self.grabber.grab(0, 0, W, H)
        self.assertEqual(bytes(view[:8]), original)

    def test_other_size_gets_new_segments(self) -> None:
        """A grab of another size (another monitor, a RandR resize) gets
        segments of that size; a view of the old ones keeps its pixels even
        as the screen and the new segments change."""
        win = self.window(100, 100, 200, 200)
        cap = Capturer(self.display)
        self.addCleanup(cap.close)
        old = self.grabber.grab(0, 0, W, H)
        kept = bytes(old)
        small = self.grabber.grab(40, 30, 640, 480)
        self.assertEqual(len(small), 640 * 480 * 4)
        self.assertEqual(bytes(small), bytes(cap.grab_rect(Rect(40, 30, 640, 480))))
        win.fill(0, 0, 200, 200, 0x00FF00)
        for _ in range(3):
            self.grabber.grab(40, 30, 640, 480)
        self.assertEqual(bytes(old), kept)
        back = self.grabber.grab(0, 0, W, H)
        self.assertNotEqual(bytes(back), kept)

    def test_slack_after_the_last_pixel_is_readable(self) -> None:
        """The view is exactly the monitor, yet libswscale's direct path, which
        reads past a box, converts a box at the bottom-right corner."""
        view = self.grabber.grab(0, 0, W, H)
        self.assertGreaterEqual(readable(view), len(view) + SLACK)
        self.assertGreaterEqual(SLACK, DirectConverter.READ_SLACK)
        self.assertEqual(readable(bytes(view)), len(view))
        direct, copied = YuvCanvas(), YuvCanvas()
        if direct._direct is None:
            self.fail("libswscale cannot be called directly here")
        calls: list[object] = []
        convert = direct._direct.convert

        def counted(*args: Any) -> None:
            calls.append(args)
            convert(*args)

        direct._direct.convert = counted  # type: ignore[method-assign,assignment]
        box = Rect(W - 64, H - 32, 64, 32)
        for canvas, source in ((direct, view), (copied, bytes(view))):
            canvas.fill(bytes(W * H * 4), W, H)
            canvas.paint_from(box, source, W * 4, box.x, box.y)
        self.assertEqual(len(calls), 1)
        frames = (direct.frame, copied.frame)
        assert frames[0] is not None and frames[1] is not None
        for p in range(3):
            self.assertEqual(bytes(frames[0].planes[p]), bytes(frames[1].planes[p]))

    def test_close_twice_and_views_outlive_it(self) -> None:
        """close() twice is fine; a view held across it still reads its pixels;
        a grab after it fails."""
        view = self.grabber.grab(0, 0, W, H)
        kept = bytes(view)
        self.grabber.close()
        self.grabber.close()
        self.assertEqual(bytes(view), kept)
        self.assertRaises(ShmGrabError, self.grabber.grab, 0, 0, W, H)

    def test_no_fd_leaks(self) -> None:
        """Open, grab at two sizes, close, many times over (and the same through
        a Capturer): as many file descriptors open afterwards as before; the
        memfd given to the X server is libxcb's to close, and is closed."""
        before = _open_fds()
        for _ in range(20):
            grabber = ShmGrabber(self.display, W, H)
            grabber.grab(0, 0, W, H)
            grabber.grab(0, 0, 320, 240)
            grabber.close()
        cap = Capturer(self.display)
        for _ in range(5):
            data, _mon = cap.grab_whole()
            self.assertIsInstance(data, memoryview)
            del data
            cap.close()
        self.assertEqual(_opened_since(before), {})

    def test_coordinates_outside_x_are_refused(self) -> None:
        """X coordinates are 16-bit: nothing is silently truncated."""
        self.assertRaises(ShmGrabError, self.grabber.grab, 0, 0, 70000, 10)
        self.assertRaises(ShmGrabError, self.grabber.grab, 0, 0, 0, 10)

    def test_x_error_is_a_grab_error(self) -> None:
        """A rectangle off the screen is the X server's BadMatch, a grab error;
        the grabber still works afterwards."""
        self.assertRaises(ShmGrabError, self.grabber.grab, W - 10, 0, 100, 100)
        self.assertEqual(len(self.grabber.grab(0, 0, W, H)), W * H * 4)


@requires("Xvfb", "display")
class CapturerShmTests(unittest.TestCase):
    def test_grab_whole_is_shared_memory(self) -> None:
        """grab_whole hands over a view of shared memory holding the monitor as
        grab() sees it; another thread gets a grabber of its own."""
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        cap = Capturer(xvfb.display)
        self.addCleanup(cap.close)
        data, mon = cap.grab_whole()
        self.assertIsInstance(data, memoryview)
        self.assertEqual((mon.width, mon.height), (W, H))
        self.assertEqual(bytes(data), cap.grab().data)
        out: list[bytes] = []
        thread = threading.Thread(target=lambda: out.append(bytes(cap.grab_whole()[0])))
        thread.start()
        thread.join()
        self.assertEqual(out, [bytes(data)])
        self.assertIsNone(cap.shm_unavailable)

    def test_switching_monitors_keeps_the_old_grab(self) -> None:
        """Selecting a monitor of another size gets new segments: the grab of
        the first monitor, which the damage path may still hold, keeps its
        pixels while the screen changes and the second is grabbed."""
        monitors = (Monitor("A", 0, 0, 1280, 720), Monitor("B", 1280, 0, 640, 480))
        display = _own_xvfb(self, 1920, 720, 24, monitors=monitors)
        win = _Window(display, 0, 0, 1920, 720)
        self.addCleanup(win.close)
        win.fill(0, 0, 1280, 720, 0x102030)
        win.fill(1280, 0, 640, 480, 0x405060)
        cap, first_ref, second_ref = Capturer(display), Capturer(display), Capturer(display, 1)
        for c in (cap, first_ref, second_ref):
            self.addCleanup(c.close)
        first, mon = cap.grab_whole()
        self.assertEqual((mon.width, mon.height), (1280, 720))
        shown = first_ref.grab().data
        self.assertEqual(bytes(first), shown)
        cap.select(1)
        second, mon = cap.grab_whole()
        self.assertEqual((mon.x, mon.width, mon.height), (1280, 640, 480))
        self.assertEqual(bytes(second), second_ref.grab().data)
        win.fill(0, 0, 1920, 720, 0xFFFFFF)
        for _ in range(3):
            cap.grab_whole()
        self.assertNotEqual(first_ref.grab().data, shown)
        self.assertEqual(bytes(first), shown)


@requires("Xvfb")
class FallbackTests(unittest.TestCase):
    def assert_falls_back(self, display: str, why: str) -> None:
        with capturedLogs() as events:
            cap = Capturer(display)
            self.addCleanup(cap.close)
            data, mon = cap.grab_whole()
            again, _ = cap.grab_whole()
        self.assertIsInstance(data, bytearray)
        self.assertEqual(len(data), mon.width * mon.height * 4)
        self.assertEqual(bytes(again), cap.grab().data)
        said = [e for e in events if "why" in e and "mss" in e.get("log_format", "")]
        self.assertEqual(len(said), 1, said)
        self.assertIn(why, said[0]["why"])
        self.assertIn(why, cap.shm_unavailable or "")

    def test_no_mit_shm(self) -> None:
        """An X server without MIT-SHM: ShmUnavailable, and mss grabs."""
        display = _own_xvfb(self, 320, 240, 24, extra_args=["-extension", "MIT-SHM"])
        with self.assertRaises(ShmUnavailable) as caught:
            ShmGrabber(display, 320, 240)
        self.assertIn("MIT-SHM", str(caught.exception))
        self.assert_falls_back(display, "MIT-SHM")

    def test_display_over_tcp(self) -> None:
        """A display reached over TCP cannot take a file descriptor: attaching
        the segment fails, and mss grabs."""
        display = _own_xvfb(self, 320, 240, 24, extra_args=["-listen", "tcp"])
        remote = "localhost" + display
        self.assertRaises(ShmUnavailable, ShmGrabber, remote, 320, 240)
        self.assert_falls_back(remote, "AttachFd")

    def test_unreachable_display(self) -> None:
        """No X server: ShmUnavailable from the grabber, CaptureError from the
        capturer (mss cannot open it either), and no file descriptor kept."""
        before = _open_fds()
        self.assertRaises(ShmUnavailable, ShmGrabber, ":4093", 320, 240)
        self.assertRaises(CaptureError, Capturer(":4093").grab_whole)
        self.assertEqual(_opened_since(before), {})


@requires("Xvfb", "display")
class DamagePathShmTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_whole_grabs_find_the_changed_box(self) -> Any:
        """Damage over most of the screen makes the damage path grab it whole
        (shared memory): damage without change finds nothing, and a change
        after it is found exactly.  Comparing the new grab with a buffer the
        X server had just written into would find nothing there."""
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        display = xvfb.display
        path, cap, win = damage_rig(self, display, (100, 100, 1400, 900))
        win.fill(0, 0, 1400, 900, 0xFFFFFF)
        yield until(path.pending)
        path.picture(cap, keyframe=True)
        drawn: list[tuple[int, int]] = []

        def draw(*more: tuple[int, int]) -> Any:
            """Repaint the window (damage over most of the screen) with the
            boxes drawn so far and C{more}; wait for every report."""
            drawn.extend(more)
            events = path.watcher.events
            win.fill(0, 0, 1400, 900, 0xFFFFFF)
            for x, y in drawn:
                win.fill(x, y, 60, 40, 0x2080E0)
            return until(lambda: path.watcher.events >= events + 1 + len(drawn))

        for step in range(3):
            yield draw()  # damage, no change
            frame, _, region = path.picture(cap, keyframe=False)
            self.assertIsNone(frame, step)
            yield draw((500 + 100 * step, 400))
            frame, _, region = path.picture(cap, keyframe=False)
            self.assertIsNotNone(frame)
            self.assertEqual(region, (Rect(600 + 100 * step, 500, 60, 40),), step)
        self.assertIsNone(cap.shm_unavailable)
        self.assertEqual(bytes(cap.grab_whole()[0]), cap.grab().data)
