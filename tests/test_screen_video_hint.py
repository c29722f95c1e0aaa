"""The changed rectangles as libx264 hints (litedesk.screen.video_hint).

What is attached is read back through PyAV's own side-data view; that the
hints reach libx264 is shown by a hint that leaves out a change: libx264
then skips it and the decoder keeps the old pixels there.  On Xvfb, the
damage path adds up what changed across frames the encoder did not see
(frames sent as tiles), and a frame encoded with that hint decodes to the
screen everywhere.
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
from typing import Any

import av
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from twisted.internet import defer, reactor
from twisted.trial import unittest

from litedesk.screen import VideoDecoder
from litedesk.screen.change import Rect
from litedesk.screen.encode import VideoEncoder
from litedesk.screen.testpattern import desktop_image
from litedesk.screen.video_hint import VideoHints, avframe_address, libavutil
from litedesk.screen.yuv_canvas import YuvCanvas
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import set_root_image, shared_xvfb
from tests.test_screen_damage import damage_rig

W, H = 1920, 1080


def _hint_of(frame: av.VideoFrame) -> tuple[int, list[tuple[int, int, int, int]]] | None:
    """(type, rects) of the frame's AVVideoHint side data, or C{None}.

    Read with libavutil's own C{av_frame_get_side_data}: PyAV's side-data
    view is a list it made once and does not see side data added later.
    """
    lib = libavutil()
    assert lib is not None
    get = lib.av_frame_get_side_data
    get.restype = ctypes.POINTER(_SideData)
    get.argtypes = [ctypes.c_void_p, ctypes.c_int]
    ptr = avframe_address(frame)
    assert ptr is not None
    found = get(ptr, 27)  # AV_FRAME_DATA_VIDEO_HINT
    if not found:
        return None
    raw = ctypes.string_at(found.contents.data, found.contents.size)
    n, offset, size, kind = struct.unpack_from("=QQQi", raw)
    rects = [struct.unpack_from("=4I", raw, offset + i * size) for i in range(n)]
    return kind, rects


class _SideData(ctypes.Structure):
    # libavutil/frame.h: AVFrameSideData's first fields.
    _fields_ = [("type", ctypes.c_int), ("data", ctypes.c_void_p), ("size", ctypes.c_size_t)]


def _rects() -> st.SearchStrategy[list[Rect]]:
    rect = st.builds(
        Rect,
        st.integers(0, W - 2),
        st.integers(0, H - 2),
        st.integers(1, 400),
        st.integers(1, 400),
    )
    return st.lists(rect, min_size=0, max_size=80)


class AttachTests(unittest.TestCase):
    def setUp(self) -> None:
        self.hints = VideoHints()
        self.frame = av.VideoFrame(W, H, "yuv420p")

    @settings(max_examples=60, deadline=None)
    @given(_rects())
    def test_rectangles_are_attached_as_changed(self, rects: list[Rect]) -> None:
        """The frame carries exactly the rectangles given, as 'changed' (type 1);
        more than MAX_RECTS go as their bounding box.  Attaching again
        replaces the hint rather than adding a second."""
        self.assertTrue(self.hints.attach(self.frame, [Rect(0, 0, 16, 16)]))
        self.assertTrue(self.hints.attach(self.frame, rects))
        hint = _hint_of(self.frame)
        assert hint is not None
        kind, got = hint
        self.assertEqual(kind, 1)
        if len(rects) <= VideoHints.MAX_RECTS:
            want = [(r.x, r.y, r.width, r.height) for r in rects]
        else:
            box = rects[0]
            for r in rects[1:]:
                box = box.union(r)
            want = [(box.x, box.y, box.width, box.height)]
        self.assertEqual(got, want)
        self.hints.attach(self.frame, None)
        self.assertIsNone(_hint_of(self.frame))  # there was only the one

    def test_unknown_removes_the_hint(self) -> None:
        """C{None} (the caller does not know what changed) leaves no hint behind
        on the frame, which the streamer encodes again and again."""
        self.hints.attach(self.frame, [Rect(0, 0, 32, 32)])
        self.assertIsNotNone(_hint_of(self.frame))
        self.assertFalse(self.hints.attach(self.frame, None))
        self.assertIsNone(_hint_of(self.frame))
        self.assertTrue(self.hints.usable)


def _frame(canvas: YuvCanvas) -> av.VideoFrame:
    frame = canvas.frame
    assert frame is not None
    return frame


class EncoderHintTests(unittest.TestCase):
    def test_libx264_skips_what_the_hint_leaves_out(self) -> None:
        """Two boxes change; the hint names only the first.  The decoder shows
        the first box new and the second old: libx264 took the hint and
        skipped the second without looking.  The next frame, encoded with
        no hint, brings the second box too."""
        w, h = 320, 240
        before = Image.new("RGB", (w, h), (40, 90, 160))
        after = before.copy()
        after.paste((250, 250, 30), (16, 16, 96, 96))  # hinted
        after.paste((20, 220, 60), (192, 128, 288, 208))  # left out
        canvas = YuvCanvas()
        enc = VideoEncoder("h264", bitrate=500_000, qmax=30, threads=1)
        dec = VideoDecoder()
        canvas.fill(before.convert("RGBA").tobytes("raw", "BGRA"), w, h)
        dec.decode_frame(enc.encode_yuv(_frame(canvas), w, h, 0, keyframe=True))
        canvas.fill(after.convert("RGBA").tobytes("raw", "BGRA"), w, h)
        f1 = enc.encode_yuv(_frame(canvas), w, h, 33, changed=[Rect(16, 16, 80, 80)])
        out1 = dec.decode_frame(f1)
        assert out1 is not None
        hinted, left_out = (16, 16, 96, 96), (192, 128, 288, 208)
        self.assertLess(mean_error(out1.image.crop(hinted), after.crop(hinted)), 4.0)
        self.assertLess(mean_error(out1.image.crop(left_out), before.crop(left_out)), 4.0)
        f2 = enc.encode_yuv(_frame(canvas), w, h, 66)
        out2 = dec.decode_frame(f2)
        assert out2 is not None
        self.assertLess(mean_error(out2.image.crop(left_out), after.crop(left_out)), 4.0)


@requires("Xvfb", "display")
class DamagePathHintTests(unittest.TestCase):
    def setUp(self) -> None:
        xvfb = shared_xvfb()
        assert xvfb.display is not None
        self.display = xvfb.display
        path = os.path.join(tempfile.mkdtemp(prefix="litedesk-hint-"), "desktop.png")
        desktop_image(W, H, seed=5).save(path)
        set_root_image(xvfb, path)

    @defer.inlineCallbacks
    def test_changes_add_up_until_the_encoder_takes_the_canvas(self) -> Any:
        """A key frame's grab is 'unknown' (no hint); two changes the encoder
        does not see (frames sent as tiles) add up; the frame then encoded
        with them as its hint decodes to the screen in both places; after
        it nothing is left over."""
        hop: Any = reactor
        damage, cap, win = damage_rig(
            self, self.display, (600, 300, 400, 300), lambda: hop.callFromThread(lambda: None)
        )
        enc = VideoEncoder("h264", bitrate=2_000_000, qmax=30)
        dec = VideoDecoder()
        frame, (w, h), _ = damage.picture(cap, keyframe=True)
        assert frame is not None
        self.assertIsNone(damage.unencoded)
        dec.decode_frame(enc.encode_yuv(frame, w, h, 0, keyframe=True))
        damage.encoded()
        self.assertEqual(damage.unencoded, ())
        regions: list[Rect] = []
        for i, (x, y) in enumerate(((20, 20), (300, 200))):
            win.fill(x, y, 60, 40, 0xE03020 + i)
            yield until(damage.pending)
            again, _, changed = damage.picture(cap, keyframe=False)
            self.assertIs(again, frame)  # the same canvas frame, changed in place
            self.assertTrue(changed)
            regions.extend(changed)
        self.assertEqual(damage.unencoded, tuple(regions))
        out = dec.decode_frame(enc.encode_yuv(frame, w, h, 66, changed=damage.unencoded))
        damage.encoded()
        self.assertEqual(damage.unencoded, ())
        assert out is not None
        screen = Image.frombuffer("RGB", (W, H), cap.grab().data, "raw", "BGRX")
        for x, y in ((620, 320), (900, 500)):
            box = (x, y, x + 60, y + 40)
            self.assertLess(mean_error(out.image.crop(box), screen.crop(box)), 6.0, box)
