"""Decoded pictures (litedesk.screen.decoded): what the viewer's window draws.

The window converts each decoded YUV picture straight to RGB at the size it
shows (L{PictureScaler}); screenshots take the full-size image
(L{DecodedFrame.image}).  Covered here, on real H.264 and VP9 streams of a
desktop picture, no X needed: the scaled picture is the host's screen
shrunk (text region included), not shifted and without the encoder's
padding column of an odd-sized display; any size the window asks for comes
out exactly that size; a picture kept while the decoder goes on (the frame
being drawn while the next one decodes) keeps its pixels, also when it is
converted in another thread; what the window draws at 1:1 is exactly the
screenshot's pixels.
"""

from __future__ import annotations

import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageStat
from twisted.trial import unittest

from litedesk.screen.codec import Codec
from litedesk.screen.decode import VideoDecoder
from litedesk.screen.decoded import DecodedFrame, PictureScaler
from litedesk.screen.encode import VideoEncoder
from litedesk.screen.testpattern import desktop_image, image_to_bgra, moving_window_frames


def mean_abs_error(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference per channel, 0-255 (alpha ignored)."""
    return sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3


def decoded(codec: str, image: Image.Image) -> DecodedFrame:
    """C{image} through a real encoder and L{VideoDecoder}."""
    w, h = image.size
    enc = VideoEncoder(codec, bitrate=8_000_000)
    out = VideoDecoder(codec).decode_frame(enc.encode(image_to_bgra(image), w, h, pts=0))
    assert out is not None
    return out


class ScaledPictureTests(unittest.SynchronousTestCase):
    """L{PictureScaler.scale}: the host's screen at the window's size."""

    def setUp(self) -> None:
        self.image = desktop_image(1920, 1080)

    def check_scaled(self, codec: str) -> None:
        frame = decoded(codec, self.image)
        got = PictureScaler().scale(frame, 1200, 675)
        self.assertEqual(got.size, (1200, 675))
        want = self.image.resize((1200, 675), Image.Resampling.BOX)
        self.assertLess(mean_abs_error(got, want), 6.0)
        # Text must stay readable where a person reads it, not just average well.
        box = (75, 62, 537, 350)
        self.assertLess(mean_abs_error(got.crop(box), want.crop(box)), 9.0)
        # The comparison can fail: shifted by 8 pixels it no longer matches.
        shifted = want.transform(want.size, Image.Transform.AFFINE, (1, 0, 8, 0, 1, 0))
        self.assertGreater(mean_abs_error(got, shifted), mean_abs_error(got, want) + 3)

    def test_h264_scaled_to_fit(self) -> None:
        """An H.264 1080p picture shrunk to 1200x675 is the host's screen shrunk."""
        self.check_scaled(Codec.H264)

    def test_vp9_scaled_to_fit(self) -> None:
        """A VP9 1080p picture shrunk to 1200x675 is the host's screen shrunk."""
        self.check_scaled(Codec.VP9)

    def test_padding_of_odd_sizes_not_shown(self) -> None:
        """An odd-sized display (641x361, sent padded to 642x362) scaled to 320x180:
        the padding column and row do not show; the right and bottom edges are the
        host's."""
        image = desktop_image(641, 361, seed=3)
        frame = decoded(Codec.H264, image)
        self.assertEqual((frame.picture.width, frame.picture.height), (642, 362))
        self.assertEqual(frame.size, (641, 361))
        got = PictureScaler().scale(frame, 320, 180)
        self.assertEqual(got.size, (320, 180))
        want = image.resize((320, 180), Image.Resampling.BOX)
        self.assertLess(mean_abs_error(got, want), 8.0)
        edge = (312, 0, 320, 180)
        self.assertLess(mean_abs_error(got.crop(edge), want.crop(edge)), 12.0)

    def test_enlarged(self) -> None:
        """A small remote screen in a larger window (1:1 never enlarges, but a
        resize may ask for it) comes out at the asked size, still the picture."""
        image = desktop_image(320, 200, seed=4)
        got = PictureScaler().scale(decoded(Codec.H264, image), 640, 400)
        self.assertEqual(got.size, (640, 400))
        want = image.resize((640, 400), Image.Resampling.BILINEAR)
        self.assertLess(mean_abs_error(got, want), 10.0)

    @settings(max_examples=40, deadline=None)
    @given(st.integers(1, 2500), st.integers(1, 1500))
    def test_any_size_asked(self, width: int, height: int) -> None:
        """Whatever size the window asks for (1x1 to larger than the picture),
        that is the size drawn; never an exception into the window."""
        got = self.scaler.scale(self.odd_frame, width, height)
        self.assertEqual(got.size, (width, height))

    @property
    def odd_frame(self) -> DecodedFrame:
        if not hasattr(self, "_odd"):
            self._odd = decoded(Codec.H264, desktop_image(641, 361, seed=5))
        return self._odd

    @property
    def scaler(self) -> PictureScaler:
        if not hasattr(self, "_scaler"):
            self._scaler = PictureScaler()
        return self._scaler


class FullSizeImageTests(unittest.SynchronousTestCase):
    """L{DecodedFrame.image}: the full-size picture, for screenshots and 1:1."""

    def test_full_size_is_the_host_screen(self) -> None:
        """The image is the captured size (padding cropped) and the host's pixels."""
        image = desktop_image(641, 361, seed=6)
        frame = decoded(Codec.H264, image)
        self.assertEqual(frame.image.size, (641, 361))
        self.assertEqual(frame.image.mode, "RGB")
        self.assertLess(mean_abs_error(frame.image, image), 8.0)
        self.assertEqual(len(frame.rgb()), 641 * 361 * 3)

    def test_one_to_one_picture_is_the_screenshot(self) -> None:
        """What the window draws at 1:1 (L{PictureScaler.picture} at the
        picture's own size, RGBA for Tk) has exactly the pixels a screenshot
        saves; an odd-sized display's padded picture gives the cropped image."""
        for codec, size in (
            (Codec.H264, (640, 360)),
            (Codec.VP9, (640, 360)),
            (Codec.H264, (641, 361)),
        ):
            frame = decoded(codec, desktop_image(*size, seed=4))
            got = PictureScaler().picture(frame, *size)
            if isinstance(got, Image.Image):
                self.assertEqual(size[0] % 2, 1)  # only the padded picture
                self.assertEqual(got.tobytes(), frame.image.tobytes())
                continue
            self.assertEqual((got.width, got.height, got.format.name), (*size, "rgba"))
            pixels: Any = got.planes[0]
            line = got.planes[0].line_size
            rgba = Image.frombuffer("RGBA", size, pixels, "raw", "RGBA", line, 1)
            rgb = rgba.convert("RGB").tobytes()
            self.assertEqual(rgb, frame.image.tobytes(), codec)

    def test_kept_pictures_keep_their_pixels(self) -> None:
        """A picture held while the decoder goes on (the frame being drawn while
        the next ones decode) is not overwritten: converted after 20 more frames,
        scaled in another thread, it is still the picture it was."""
        frames = moving_window_frames(22, 640, 360, step=12)
        enc = VideoEncoder(Codec.H264, bitrate=4_000_000)
        dec = VideoDecoder(Codec.H264)
        first = dec.decode_frame(enc.encode(frames[0], 640, 360, pts=0))
        assert first is not None
        at_once = PictureScaler().scale(first, 320, 180).convert("RGB")
        for k, bgra in enumerate(frames[1:], 1):
            self.assertIsNotNone(dec.decode_frame(enc.encode(bgra, 640, 360, pts=k)))
        later: list[Image.Image] = []

        def convert() -> None:
            later.append(PictureScaler().scale(first, 320, 180))

        worker = threading.Thread(target=convert)
        worker.start()
        worker.join(30)
        self.assertEqual(later[0].convert("RGB").tobytes(), at_once.tobytes())
        sent_first, sent_last = (bgra_image(f, 640, 360) for f in (frames[0], frames[-1]))
        self.assertLess(mean_abs_error(first.image, sent_first), 8.0)
        self.assertGreater(mean_abs_error(first.image, sent_last), 1.0)


def bgra_image(bgra: bytes, width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), bgra, "raw", "BGRX")
