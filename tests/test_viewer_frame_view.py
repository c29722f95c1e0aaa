"""The viewer window's picture (litedesk.viewer.frame_view) on a real Tk and Xvfb.

The real window (L{ViewerApp}, Tk pumped by the reactor) is given real
H.264 pictures, without a network.  What a person notices: a window nobody
can see (here withdrawn, as when iconified) costs no conversions, and when
it shows again it shows the newest picture at once, not an older one; and
the picture on screen is the host's, also after pictures that changed only
in part (the window puts only the changed rows into Tk).
"""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageStat
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from litedesk.screen.decode import VideoDecoder
from litedesk.screen.decoded import DecodedFrame
from litedesk.screen.encode import VideoEncoder
from litedesk.screen.testpattern import moving_window_frames

from .support.skips import requires
from .support.xvfb import shared_xvfb


def pictures(n: int) -> list[DecodedFrame]:
    """C{n} decoded pictures of a window sliding across a 320x180 desktop."""
    enc, dec = VideoEncoder("h264", bitrate=4_000_000), VideoDecoder("h264")
    out = []
    for k, bgra in enumerate(moving_window_frames(n, 320, 180, step=24)):
        frame = dec.decode_frame(enc.encode(bgra, 320, 180, pts=k, keyframe=k == 0))
        assert frame is not None
        out.append(frame)
    return out


@requires("Xvfb", "tkinter")
class FrameViewTests(TestCase):
    def setUp(self) -> None:
        from litedesk.viewer import cli
        from litedesk.viewer.config import ViewerConfig
        from litedesk.viewer.tk_pump import pump_tk
        from litedesk.viewer.window import ViewerApp

        # The process's shared Xvfb (Tk keeps its connection after destroy).
        self.root = tk.Tk(screenName=shared_xvfb().display, className="LiteDeskTest")
        self.addCleanup(self.root.destroy)
        args = cli.build_parser().parse_args(["test", "--geometry", "640x400+0+0"])
        config = Path(self.mktemp())
        self.app = ViewerApp(reactor, self.root, args, ViewerConfig(), config)
        self.frames = self.app.frames
        self.addCleanup(self.app._ticker.stop)
        self.addCleanup(self.app._pinger.stop)
        pump = pump_tk(reactor, self.root)
        self.addCleanup(pump.stop)

    async def until(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if check():
                return
            await deferLater(reactor, 0.02, lambda: None)
        self.fail(f"{check} still false after {timeout} s")

    def on_screen(self) -> Image.Image:
        """The picture as Tk holds it for the canvas (the photo's pixels)."""
        photo = self.frames._photo
        assert photo is not None
        return photo_image(photo)

    async def test_hidden_window_skips_pictures_then_shows_newest(self) -> None:
        """Withdrawn, the window draws none of the pictures that arrive; shown
        again, it draws the newest one straight away."""
        first, second, third = pictures(3)
        await self.until(self.frames.canvas.winfo_viewable)
        self.frames.on_frame(first)
        await self.until(lambda: self.frames.counters.shown == 1)
        self.root.withdraw()
        await self.until(lambda: not self.frames.canvas.winfo_viewable())
        self.frames.on_frame(second)
        self.frames.on_frame(third)
        for _ in range(10):  # the draws they scheduled have run
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.frames.counters.received, 3)
        self.assertEqual(self.frames.counters.shown, 1)
        self.assertIs(self.frames.shown, first)
        self.root.deiconify()
        await self.until(lambda: self.frames.counters.shown == 2)
        self.assertIs(self.frames.shown, third)

    async def test_picture_is_the_hosts_after_partial_changes(self) -> None:
        """After pictures that each changed only a part of the screen, the photo
        shown is the last picture at the drawn size, not a mix with older ones."""
        await self.until(self.frames.canvas.winfo_viewable)
        frames = pictures(6)
        for k, frame in enumerate(frames):
            self.frames.on_frame(frame)
            await self.until(lambda k=k: self.frames.counters.shown == k + 1)  # type: ignore[misc]
        shown = self.on_screen()
        want = frames[-1].image.resize(shown.size, Image.Resampling.BILINEAR)
        err = mean_error(shown, want)
        self.assertLess(err, 4.0)
        # The comparison can fail: each older picture (window elsewhere) differs.
        for old in frames[:-1]:
            older = old.image.resize(shown.size, Image.Resampling.BILINEAR)
            self.assertGreater(mean_error(shown, older), err + 8)


def mean_error(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def photo_image(photo: object) -> Image.Image:
    """A Tk photo's pixels as a Pillow RGB image (through Tk's PPM data)."""
    import base64
    import io

    data = photo.tk.call(photo, "data", "-format", "ppm")  # type: ignore[attr-defined]
    raw = data if isinstance(data, bytes) else base64.b64decode(data)
    return Image.open(io.BytesIO(raw)).convert("RGB")
