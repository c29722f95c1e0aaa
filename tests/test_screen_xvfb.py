"""The screen pipeline against a real X server (Xvfb 1920x1080x24, -noreset).

One Xvfb serves the whole module; a known desktop image is put on its root
window with ImageMagick's C{display}.  Skipped, saying why, when Xvfb or
ImageMagick is not installed.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from PIL import Image, ImageDraw
from twisted.internet import defer, reactor
from twisted.trial import unittest

from litedesk.screen import (
    Capturer,
    EncodedFrame,
    Rect,
    ScreenStreamer,
    VideoDecoder,
    detect_change,
    list_displays,
)
from litedesk.screen.testpattern import desktop_image, image_to_bgra
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import set_root_image, shared_xvfb

_tmp = tempfile.mkdtemp(prefix="litedesk-screen-")


def show(img: Image.Image, name: str) -> None:
    """Put C{img} on the root window (C{display} returns once it is set)."""
    path = os.path.join(_tmp, name + ".png")
    img.save(path)
    set_root_image(shared_xvfb(), path)


@requires("Xvfb", "display")
class XvfbTestCase(unittest.TestCase):
    @property
    def display(self) -> str:
        display = shared_xvfb().display
        assert display is not None
        return display


class CaptureTests(XvfbTestCase):
    def test_lists_the_monitor(self) -> None:
        """The display's one monitor is listed with its size, position and as primary."""
        displays = list_displays(self.display)
        self.assertEqual(len(displays), 1)
        d = displays[0]
        self.assertEqual((d.index, d.x, d.y, d.width, d.height), (0, 0, 0, 1920, 1080))
        self.assertTrue(d.primary)
        self.assertTrue(d.name)

    def test_capture_shows_known_image(self) -> None:
        """A grab returns the full-size monitor with exactly the image shown on it."""
        img = desktop_image(1920, 1080, seed=3)
        show(img, "known")
        cap = Capturer(self.display)
        self.addCleanup(cap.close)
        frame = cap.grab()
        self.assertEqual((frame.width, frame.height), (1920, 1080))
        self.assertEqual(len(frame.data), 1920 * 1080 * 4)
        self.assertEqual(frame.data, image_to_bgra(img))
        self.assertIsNone(cap.previous)
        second = cap.grab()
        self.assertIs(cap.previous, frame)
        self.assertFalse(detect_change(frame.data, second.data, 1920, 1080).changed)

    def test_change_detection_finds_changed_rectangle(self) -> None:
        """Drawing one rectangle on the screen is found exactly; the rest is unchanged."""
        base = desktop_image(1920, 1080, seed=5)
        show(base, "base")
        cap = Capturer(self.display)
        self.addCleanup(cap.close)
        before = cap.grab()
        changed = base.copy()
        rect = Rect(333, 222, 150, 77)
        ImageDraw.Draw(changed).rectangle(
            [rect.x, rect.y, rect.right - 1, rect.bottom - 1], fill=(255, 0, 255)
        )
        show(changed, "changed")
        after = cap.grab()
        change = detect_change(before.data, after.data, 1920, 1080)
        self.assertTrue(change.changed)
        self.assertEqual(change.bbox, rect)
        # Tiles 5..7 across (x 320..511) and 3..4 down (y 192..319).
        self.assertEqual(len(change.tiles), 3 * 2)

    def test_bad_display_raises_capture_error(self) -> None:
        """Capturing from a display that does not exist fails with a clear CaptureError."""
        from litedesk.screen import CaptureError

        self.assertRaises(CaptureError, list_displays, ":4095")


class StreamerOnXvfbTests(XvfbTestCase):
    @defer.inlineCallbacks
    def test_stream_of_static_screen(self) -> Any:
        """A static real screen streams one key frame that decodes to the shown
        image, then nothing: with X DAMAGE the streamer goes idle (no timer, no
        grab); a refresh request sends a key frame again."""
        img = desktop_image(1920, 1080, seed=9)
        show(img, "stream")
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(reactor, sent.append, lambda: 0, display=self.display)
        streamer.start()
        try:
            self.assertTrue(streamer.damage_driven)
            yield until(lambda: len(sent) >= 1 and streamer.idle)
            slots = streamer.stats.slots
            self.assertEqual(len(sent), 1, [f.key for f in sent])
            self.assertTrue(sent[0].key)
            streamer.force_keyframe()
            yield until(lambda: len(sent) >= 2 and streamer.idle)
            self.assertEqual([f.key for f in sent], [True, True])
            # Idle means idle: the key frame was the one slot since.
            self.assertEqual(streamer.stats.slots, slots + 1)
        finally:
            yield streamer.stop()
        out = VideoDecoder().decode_frame(sent[0])
        assert out is not None
        self.assertLess(mean_error(img, out.image), 8.0)

    @defer.inlineCallbacks
    def test_stream_of_static_screen_by_comparing(self) -> Any:
        """Without X DAMAGE (damage=False) a static screen is grabbed every slot
        and compared: one key frame, then only unchanged slots."""
        img = desktop_image(1920, 1080, seed=9)
        show(img, "stream-compare")
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(
            reactor, sent.append, lambda: 0, display=self.display, damage=False
        )
        streamer.start()
        try:
            self.assertFalse(streamer.damage_driven)
            yield until(lambda: streamer.stats.unchanged >= 20)
            self.assertEqual(len(sent), 1, [f.key for f in sent])
            streamer.force_keyframe()
            yield until(lambda: len(sent) >= 2)
            unchanged = streamer.stats.unchanged
            yield until(lambda: streamer.stats.unchanged >= unchanged + 10)
            self.assertEqual([f.key for f in sent], [True, True])
        finally:
            yield streamer.stop()

    @defer.inlineCallbacks
    def test_vp9_stream_follows_screen_change(self) -> Any:
        """With VP9 selected, a change on screen arrives as a delta the viewer decodes."""
        img = desktop_image(1920, 1080, seed=11)
        show(img, "vp9a")
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(
            reactor, sent.append, lambda: 0, display=self.display, codec="vp9"
        )
        streamer.start()
        try:
            yield until(lambda: len(sent) >= 1 and streamer.idle)
            changed = img.copy()
            ImageDraw.Draw(changed).rectangle([600, 400, 900, 600], fill=(10, 200, 30))
            show(changed, "vp9b")
            yield until(lambda: len(sent) >= 2 and streamer.idle)
        finally:
            yield streamer.stop()
        self.assertGreaterEqual(len(sent), 2)
        self.assertEqual(sent[0].codec, "vp9")
        self.assertFalse(sent[-1].key)
        dec = VideoDecoder("vp9")
        outs = [dec.decode_frame(f) for f in sent]
        last = outs[-1]
        assert last is not None
        self.assertEqual(dec.errors, 0)
        self.assertLess(mean_error(changed, last.image), 8.0)
