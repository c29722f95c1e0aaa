"""VP9 on the host (litedesk.screen.encode): libvpx called directly, and
FFmpeg's libvpx-vp9 as the fallback.  What stock RustDesk clients get.

Frames are decoded with the viewer's decoder (FFmpeg's own VP9 decoder, not
libvpx), so every test also checks that the stream is plain VP9 profile 0.
The byte and quality bounds are measured figures with a margin (the
measurement is in each test's docstring); libvpx's output for a given input
and setting is deterministic, so none of them is a timing.  No X needed.

The active map (litedesk.screen.vpx_active_map): which 16x16 blocks the
changed rectangles touch, and that libvpx takes it: a change left out of
the rectangles stays old on the viewer, one inside them arrives, none is
left stale.
"""

from __future__ import annotations

import ctypes
import math
from typing import TYPE_CHECKING, Any

import av
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw, ImageStat
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from litedesk.screen import libvpx
from litedesk.screen.capture import bgra_to_image
from litedesk.screen.change import Rect
from litedesk.screen.codec import Codec, is_key_frame
from litedesk.screen.decode import VideoDecoder
from litedesk.screen.encode import VP9_QMIN, VP9_QMIN_BELOW_CAP, VideoEncoder
from litedesk.screen.libvpx import libvpx_version, parse_vp9_value
from litedesk.screen.pipeline import ImageQuality, base_bitrate, quality_profile
from litedesk.screen.testpattern import desktop_image, image_to_bgra, moving_window_frames
from litedesk.screen.vpx_active_map import BLOCK, ActiveMap, VpxActiveMap
from litedesk.screen.yuv_canvas import YuvCanvas
from tests.support.images import mean_error

W, H = 1920, 1080


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB over the three colour channels."""
    mse = sum(r * r for r in ImageStat.Stat(ImageChops.difference(a, b)).rms) / 3
    return 99.0 if mse == 0 else 10 * math.log10(255 * 255 / mse)


def balanced(backend: str, width: int = W, height: int = H, **kw: object) -> VideoEncoder:
    """A VP9 encoder set up as the streamer sets it up for image quality Balanced."""
    return VideoEncoder(
        Codec.VP9,
        bitrate=base_bitrate(ImageQuality.BALANCED, width, height, 30),
        qmax=quality_profile(ImageQuality.BALANCED).qmax_vp9,
        vp9_backend=backend,
        **kw,  # type: ignore[arg-type]
    )


def typed(image: Image.Image, n: int) -> Image.Image:
    """The desktop with C{n} characters typed into its first window."""
    out = image.copy()
    ImageDraw.Draw(out).text((140, 130), "The quick brown fox jumps over"[:n], fill="black")
    return out


if TYPE_CHECKING:
    _Base = unittest.TestCase
else:
    _Base = object  # not collected itself; LibvpxTests/FFmpegTests mix it in


class _Backend(_Base):
    """The tests both backends must pass; mixed into one class per backend."""

    backend: str

    def setUp(self) -> None:
        self.image = desktop_image(W, H)
        self.bgra = image_to_bgra(self.image)

    def encoder(self, width: int = W, height: int = H, **kw: object) -> VideoEncoder:
        return balanced(self.backend, width, height, **kw)

    def test_backend(self) -> None:
        """The backend asked for is the one that encodes, with every option taken."""
        enc = self.encoder()
        self.assertIsNone(enc.backend)
        enc.encode(self.bgra, W, H, pts=0)
        self.assertEqual(enc.backend, {"libvpx": "libvpx", "ffmpeg": "ffmpeg-libvpx"}[self.backend])
        self.assertEqual(enc.ignored_options, {})

    def test_unknown_option_is_reported(self) -> None:
        """An option the encoder does not know is reported and logged, not silently dropped
        (an "end-usage" option once was, and VP9 ran in a mode nobody chose)."""
        seen = EventLoggingObserver()
        globalLogPublisher.addObserver(seen)
        self.addCleanup(globalLogPublisher.removeObserver, seen)
        enc = self.encoder(vp9_options={"no-such-option": "1"})
        frame = enc.encode(self.bgra, W, H, pts=0)
        self.assertEqual(enc.ignored_options, {"no-such-option": "1"})
        self.assertTrue(frame.key)
        warnings = [e for e in seen if e.get("log_level") == LogLevel.warn]
        self.assertIn("no-such-option", str([e.get("options") for e in warnings]))

    def test_key_frame_decodes_to_the_desktop(self) -> None:
        """The first frame is a VP9 key frame that decodes close to the 1080p desktop.

        Measured: PSNR 30.1 dB (libvpx) and 31.9 dB (FFmpeg), mean error 3.6
        and 2.7 of 255; the text window alone 31.5 and 35.3 dB."""
        frame = self.encoder().encode(self.bgra, W, H, pts=0)
        self.assertTrue(frame.key)
        self.assertTrue(is_key_frame(Codec.VP9, frame.data))
        out = VideoDecoder(Codec.VP9).decode_frame(frame)
        assert out is not None
        self.assertGreater(psnr(self.image, out.image), 29.0)
        # The text of the windows alone: readable, not just good on average.
        box = (120, 100, 860, 560)
        self.assertGreater(psnr(self.image.crop(box), out.image.crop(box)), 29.0)

    def test_every_frame_of_a_moving_window_decodes_close(self) -> None:
        """A text window sliding over the desktop: every decoded frame stays close.

        Measured: worst PSNR 30.1 dB (libvpx, its first frames still being
        sharpened), 31.7 dB (FFmpeg)."""
        enc = self.encoder()
        dec = VideoDecoder(Codec.VP9)
        for i, bgra in enumerate(moving_window_frames(20, W, H)):
            frame = enc.encode(bgra, W, H, pts=33 * i)
            self.assertEqual(frame.key, i == 0)
            out = dec.decode_frame(frame)
            assert out is not None, f"frame {i} did not decode"
            self.assertGreater(psnr(bgra_to_image(bgra, W, H), out.image), 29.0, f"frame {i}")

    def test_key_frame_on_request(self) -> None:
        """request_keyframe() and keyframe=True each make the next frame a key frame
        that a viewer joining there decodes on its own; the frames after it are deltas
        that sharpen the picture.

        Measured: the requested key frame decodes at PSNR 27.1 dB through
        libvpx (CBR gives a key frame in mid-stream a few frames' budget, so
        its quantizer goes up to the cap) and the deltas bring the unchanged
        picture to 29.6 dB within ten frames; through FFmpeg (VBR) 30.8 dB at
        once, 31.3 after."""
        enc = self.encoder()
        frames = [
            self.bgra,
            image_to_bgra(typed(self.image, 5)),
            image_to_bgra(typed(self.image, 9)),
        ]
        self.assertTrue(enc.encode(frames[0], W, H, pts=0).key)
        self.assertFalse(enc.encode(frames[1], W, H, pts=33).key)
        enc.request_keyframe()
        late = VideoDecoder(Codec.VP9)
        quality = []
        for i in range(12):
            frame = enc.encode(frames[2], W, H, pts=66 + 33 * i)
            self.assertEqual(frame.key, i == 0)
            out = late.decode_frame(frame)
            assert out is not None, f"frame {i} after the key frame"
            quality.append(psnr(typed(self.image, 9), out.image))
        self.assertGreater(quality[0], 26.0)
        self.assertGreater(max(quality), 29.0)
        self.assertTrue(enc.encode(frames[1], W, H, pts=500, keyframe=True).key)
        self.assertFalse(enc.encode(frames[2], W, H, pts=533).key)
        self.assertEqual(enc.opens, 1)

    def test_key_frame_after_reopen(self) -> None:
        """A new size, a codec switch and close() each reopen with a key frame."""
        enc = self.encoder()
        small = image_to_bgra(desktop_image(640, 480))
        enc.encode(self.bgra, W, H, pts=0)
        self.assertFalse(enc.encode(self.bgra, W, H, pts=33).key)
        resized = enc.encode(small, 640, 480, pts=66)
        self.assertTrue(resized.key)
        self.assertEqual(enc.opens, 2)
        enc.close()
        self.assertTrue(enc.encode(small, 640, 480, pts=99).key)
        self.assertEqual(enc.opens, 3)
        enc.set_codec(Codec.H264)
        enc.set_codec(Codec.VP9)
        back = enc.encode(small, 640, 480, pts=132)
        self.assertTrue(back.key)
        self.assertEqual(back.codec, Codec.VP9)
        self.assertEqual(enc.opens, 4)
        # Every one of them is a complete entry point.
        for frame in (resized, back):
            self.assertIsNotNone(VideoDecoder(Codec.VP9).decode_frame(frame))

    def test_odd_size(self) -> None:
        """An odd-sized screen is padded to even for VP9 and cropped back by the viewer."""
        img = desktop_image(161, 121)
        frame = self.encoder(width=161, height=121).encode(image_to_bgra(img), 161, 121, pts=0)
        self.assertEqual((frame.width, frame.height), (161, 121))
        out = VideoDecoder(Codec.VP9).decode_frame(frame)
        assert out is not None
        self.assertEqual(out.image.size, (161, 121))
        self.assertGreater(psnr(img, out.image), 25.0)


class LibvpxTests(_Backend, unittest.TestCase):
    backend = "libvpx"

    def test_libvpx_loads(self) -> None:
        """PyAV's wheels ship libvpx; it loads and runs, so the host gets speed 9 and
        live bitrate changes rather than the fallback."""
        version = libvpx_version()
        assert version is not None
        self.assertTrue(version.startswith("v1."), version)

    def test_structure_layout(self) -> None:
        """The ctypes structures lay out as vpx_encoder.h and vpx_image.h of encoder ABI 39
        (offsets printed by a C compiler from libvpx 1.16's headers)."""
        cfg = libvpx._EncCfg
        for name, offset in {
            "g_threads": 4,
            "g_w": 12,
            "g_timebase": 28,
            "g_error_resilient": 36,
            "g_lag_in_frames": 44,
            "rc_dropframe_thresh": 48,
            "rc_end_usage": 72,
            "rc_target_bitrate": 112,
            "rc_min_quantizer": 116,
            "rc_max_quantizer": 120,
            "rc_undershoot_pct": 124,
            "kf_mode": 160,
            "kf_max_dist": 168,
        }.items():
            self.assertEqual(getattr(cfg, name).offset, offset, name)
        self.assertEqual(libvpx._Image.planes.offset, 48)
        self.assertEqual(libvpx._Image.stride.offset, 80)
        self.assertEqual(libvpx._FramePacket.buf.offset, 8)
        self.assertEqual(libvpx._FramePacket.sz.offset, 16)
        self.assertEqual(libvpx._FramePacket.flags.offset, 40)
        # Room for libvpx's whole structures (504 and 136 bytes) and more.
        self.assertGreater(ctypes.sizeof(libvpx._EncCfg), 504 + 1024)
        self.assertGreater(ctypes.sizeof(libvpx._Image), 136 + 1024)

    def test_libvpx_decoder_takes_the_stream(self) -> None:
        """Stock RustDesk clients decode VP9 with libvpx, not FFmpeg's decoder: libvpx's
        own decoder (PyAV's libvpx-vp9) takes the key frame and the deltas, loop
        filter off and all, to the same pictures as the viewer's decoder."""
        enc = self.encoder()
        ours = VideoDecoder(Codec.VP9)
        theirs: Any = av.CodecContext.create("libvpx-vp9", "r")
        for i, bgra in enumerate(moving_window_frames(8, W, H)):
            frame = enc.encode(bgra, W, H, pts=33 * i)
            pictures = theirs.decode(av.Packet(frame.data))
            self.assertEqual(len(pictures), 1, f"frame {i}")
            mine = ours.decode_frame(frame)
            assert mine is not None
            self.assertEqual(pictures[0].to_image().tobytes(), mine.image.tobytes(), f"frame {i}")

    def test_static_screen_costs_almost_nothing(self) -> None:
        """After the key frame, an unchanged 1080p desktop is touched up for a
        few frames and then costs a few dozen bytes a frame.

        Measured: a 167 kB key frame (PSNR 30.1 dB: it starts with a second of
        buffer, so that it is about as large as H.264's), 31 kB over the next
        59 frames bringing the picture to 30.5 dB, then 53 bytes a frame from
        the 12th on: the quantizer floor (34 at Balanced) stops the
        sharpening.  With the floor at 24 the next 59 frames took 187 kB to
        reach 32.1 dB, the cost of every new viewer and of every change that
        left its area coarser than the floor.  Through FFmpeg (VBR, the floor
        never reached) frames of 80-100 bytes still came after 40 frames,
        with 27 kB ones among the first."""
        enc = self.encoder()
        dec = VideoDecoder(Codec.VP9)
        sizes = []
        last = None
        for i in range(90):
            frame = enc.encode(self.bgra, W, H, pts=33 * i)
            sizes.append(len(frame.data))
            last = dec.decode_frame(frame)
            assert last is not None
        assert last is not None
        self.assertGreater(sizes[0], 100_000)  # the key frame
        self.assertLess(sizes[0], 250_000)
        self.assertLess(sum(sizes[1:60]), 60_000)
        self.assertLess(max(sizes[20:]), 100)
        self.assertGreater(psnr(self.image, last.image), 30.0)

    def test_typing_costs_little(self) -> None:
        """One more character typed into a settled desktop costs a small frame.

        Measured: 56-206 bytes a character at 1080p."""
        enc = self.encoder()
        for i in range(60):
            enc.encode(self.bgra, W, H, pts=33 * i)
        for n in range(1, 6):
            frame = enc.encode(image_to_bgra(typed(self.image, n)), W, H, pts=2000 + 33 * n)
            self.assertFalse(frame.key)
            self.assertLess(len(frame.data), 600, n)

    def test_bitrate_change_without_reopen(self) -> None:
        """A new bitrate applies to the next frame: no reopen, no key frame, and the
        stream follows it (libvpx's vpx_codec_enc_config_set, as RustDesk does).

        Measured on 20 frames of the moving window after the change, quantizer
        floor 4: 2 Mb/s 161 kB, 300 kb/s 79 kB."""
        frames = moving_window_frames(40, 1280, 720)
        sizes = {}
        for bitrate in (2_000_000, 300_000):
            enc = VideoEncoder(
                Codec.VP9, bitrate=2_000_000, vp9_backend="libvpx", vp9_options={"qmin": "4"}
            )
            total = 0
            for i, bgra in enumerate(frames):
                if i == 20:
                    enc.set_bitrate(bitrate)
                frame = enc.encode(bgra, 1280, 720, pts=33 * i)
                self.assertEqual(frame.key, i == 0)
                total += len(frame.data) if i >= 20 else 0
            self.assertEqual(enc.opens, 1)
            sizes[bitrate] = total
        self.assertLess(sizes[300_000], sizes[2_000_000] / 2)

    def test_quality_change_without_reopen(self) -> None:
        """A new quantizer cap (image quality) applies in place too: the same frames come
        out smaller under a coarser cap, and nothing reopens.

        Measured at 300 kb/s on 11 frames of the moving window: cap 20 89 kB
        (the cap overrides the rate), cap 56 23 kB."""
        frames = moving_window_frames(12, 1280, 720)
        totals = []
        for qmax in (20, 56):
            enc = VideoEncoder(Codec.VP9, bitrate=300_000, qmax=20, vp9_backend="libvpx")
            enc.encode(frames[0], 1280, 720, pts=0)
            enc.set_qmax(qmax)
            totals.append(
                sum(
                    len(enc.encode(f, 1280, 720, pts=33 * i).data)
                    for i, f in enumerate(frames[1:], 1)
                )
            )
            self.assertEqual(enc.opens, 1)
        self.assertLess(totals[1], totals[0] / 2)

    def test_quantizer_floor_follows_the_cap(self) -> None:
        """The floor never rises above a lower cap, and sits VP9_QMIN_BELOW_CAP
        under a high one (Balanced: 34-44)."""
        enc = VideoEncoder(Codec.VP9, qmax=VP9_QMIN - 4, vp9_backend="libvpx")
        self.assertEqual(enc._vp9_qrange(), (VP9_QMIN - 4, VP9_QMIN - 4))
        enc.set_qmax(44)
        self.assertEqual(enc._vp9_qrange(), (44 - VP9_QMIN_BELOW_CAP, 44))
        enc.set_qmax(None)
        self.assertEqual(enc._vp9_qrange(), (VP9_QMIN, 63))

    def test_refused_setting_falls_back_to_ffmpeg(self) -> None:
        """A setting libvpx refuses leaves that encoder to FFmpeg, with a warning; the
        stream still decodes, and the next encoder uses libvpx again."""
        enc = balanced("libvpx", vp9_options={"end-usage": "7"})
        frame = enc.encode(self.bgra, W, H, pts=0)
        self.assertEqual(enc.backend, "ffmpeg-libvpx")
        self.assertIsNotNone(VideoDecoder(Codec.VP9).decode_frame(frame))
        self.assertIsNotNone(libvpx_version())
        again = balanced("libvpx")
        again.encode(self.bgra, W, H, pts=0)
        self.assertEqual(again.backend, "libvpx")

    def test_other_abi_falls_back_to_ffmpeg(self) -> None:
        """A libvpx of another ABI refuses to start an encoder with these structures;
        VP9 then goes through FFmpeg for the rest of the process."""
        self.patch(libvpx.Libvpx, "_loaded", libvpx.Libvpx.get())
        self.patch(libvpx, "_VPX_ENCODER_ABI", libvpx._VPX_ENCODER_ABI + 1000)
        enc = balanced("libvpx")
        frame = enc.encode(self.bgra, W, H, pts=0)
        self.assertEqual(enc.backend, "ffmpeg-libvpx")
        self.assertIsNotNone(VideoDecoder(Codec.VP9).decode_frame(frame))
        self.assertIsNone(libvpx_version())
        with self.assertRaises(RuntimeError):
            balanced("libvpx").encode(self.bgra, W, H, pts=0)
        self.assertEqual(balanced("ffmpeg").encode(self.bgra, W, H, pts=0).codec, Codec.VP9)


class FFmpegTests(_Backend, unittest.TestCase):
    backend = "ffmpeg"

    def test_bitrate_change_reopens_only_when_large(self) -> None:
        """FFmpeg's wrapper ignores a bitrate change, so a large one reopens (a key
        frame), at most once per interval; small ones are ignored."""
        now = [0.0]
        enc = VideoEncoder(Codec.VP9, bitrate=1_000_000, clock=lambda: now[0], vp9_backend="ffmpeg")
        frame = image_to_bgra(desktop_image(160, 120))
        enc.encode(frame, 160, 120, pts=0)
        enc.set_bitrate(1_200_000)
        self.assertFalse(enc.encode(frame, 160, 120, pts=33).key)
        enc.set_bitrate(300_000)
        self.assertFalse(enc.encode(frame, 160, 120, pts=66).key)  # too soon
        now[0] = 10.0
        self.assertTrue(enc.encode(frame, 160, 120, pts=99).key)
        self.assertEqual(enc.opens, 2)

    def test_quality_change_reopens(self) -> None:
        """FFmpeg takes the quantizer cap only when it opens: a new cap reopens."""
        enc = self.encoder()
        enc.encode(self.bgra, W, H, pts=0)
        enc.set_qmax(30)
        self.assertTrue(enc.encode(self.bgra, W, H, pts=33).key)
        self.assertEqual(enc.opens, 2)


class OptionValueTests(unittest.TestCase):
    @given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
    def test_integers(self, n: int) -> None:
        self.assertEqual(parse_vp9_value("cpu-used", str(n)), n)
        self.assertEqual(parse_vp9_value("cpu-used", f"+{n}" if n >= 0 else str(n)), n)

    @given(st.text(max_size=12))
    def test_anything_else_is_refused_not_raised(self, text: str) -> None:
        value = parse_vp9_value("tile-columns", text)
        if value is not None:
            self.assertEqual(value, int(text))

    def test_names(self) -> None:
        self.assertEqual(parse_vp9_value("tune-content", "screen"), 1)
        self.assertEqual(parse_vp9_value("end-usage", "cbr"), 1)
        self.assertEqual(parse_vp9_value("end-usage", "vbr"), 0)
        self.assertIsNone(parse_vp9_value("cpu-used", "screen"))
        self.assertIsNone(parse_vp9_value("end-usage", "fast"))


def worst_block(a: Image.Image, b: Image.Image) -> int:
    """The largest mean difference (grey levels) over the 16x16 blocks of two pictures."""
    diff = ImageChops.difference(a, b).convert("L")
    means = diff.resize((-(-a.width // BLOCK), -(-a.height // BLOCK)), Image.Resampling.BOX)
    return max(means.tobytes())


def _rect_lists() -> st.SearchStrategy[tuple[int, int, list[Rect]]]:
    size = st.integers(1, 200)
    coord = st.integers(-40, 240)
    rect = st.builds(Rect, coord, coord, st.integers(-2, 120), st.integers(-2, 120))
    return st.tuples(size, size, st.lists(rect, max_size=12))


class ActiveMapTests(unittest.TestCase):
    """The map libvpx is given (litedesk.screen.vpx_active_map), and what it does
    to the decoded picture."""

    def setUp(self) -> None:
        self.w, self.h = 320, 240
        self.before = Image.new("RGB", (self.w, self.h), (40, 90, 160))
        self.after = self.before.copy()
        self.first, self.second = (16, 16, 96, 96), (192, 128, 288, 208)
        self.after.paste((250, 250, 30), self.first)
        self.after.paste((20, 220, 60), self.second)
        self.canvas = YuvCanvas()

    def show(self, image: Image.Image) -> Any:
        self.canvas.fill(image.convert("RGBA").tobytes("raw", "BGRA"), self.w, self.h)
        return self.canvas.frame

    @settings(max_examples=200, deadline=None)
    @given(_rect_lists())
    def test_blocks_touched_are_active(self, case: tuple[int, int, list[Rect]]) -> None:
        """A block is active exactly when a changed rectangle covers one of its
        pixels inside the frame; refilling forgets the rectangles before."""
        width, height, rects = case
        amap = ActiveMap(width, height)
        amap.fill([Rect(0, 0, width, height)])
        got = amap.fill(rects)
        self.assertEqual((got.rows, got.cols), (amap.rows, amap.cols))
        self.assertEqual((amap.cols, amap.rows), (-(-width // 16), -(-height // 16)))
        frame = Rect(0, 0, width, height)
        want = bytearray()
        for by in range(amap.rows):
            for bx in range(amap.cols):
                block = Rect(bx * 16, by * 16, 16, 16)
                want.append(any(_overlap_in(r, block, frame) for r in rects))
        self.assertEqual(amap.blocks(), bytes(want))

    def test_map_layout(self) -> None:
        """C{vpx_active_map_t} as vpx/vp8cx.h lays it out on LP64: the block
        pointer, then the row and column counts."""
        self.assertEqual(VpxActiveMap.active_map.offset, 0)
        self.assertEqual(VpxActiveMap.rows.offset, 8)
        self.assertEqual(VpxActiveMap.cols.offset, 12)
        self.assertEqual(ctypes.sizeof(VpxActiveMap), 16)

    def test_libvpx_skips_what_changed_leaves_out(self) -> None:
        """Two boxes change; C{changed} names only the first.  The decoder shows
        the first box new and the second old: libvpx took the map and coded
        the second box's blocks as unchanged.  The next frame, with
        C{changed=None}, brings the second box too."""
        enc = VideoEncoder(Codec.VP9, bitrate=500_000, qmax=30, threads=1, vp9_backend="libvpx")
        dec = VideoDecoder(Codec.VP9)
        w, h = self.w, self.h
        dec.decode_frame(enc.encode_yuv(self.show(self.before), w, h, 0, keyframe=True))
        self.assertEqual(enc.backend, "libvpx")
        frame = self.show(self.after)
        out1 = dec.decode_frame(enc.encode_yuv(frame, w, h, 33, changed=[Rect(16, 16, 80, 80)]))
        assert out1 is not None
        first, second = self.first, self.second
        self.assertLess(mean_error(out1.image.crop(first), self.after.crop(first)), 4.0)
        self.assertLess(mean_error(out1.image.crop(second), self.before.crop(second)), 4.0)
        out2 = dec.decode_frame(enc.encode_yuv(frame, w, h, 66))
        assert out2 is not None
        self.assertLess(mean_error(out2.image.crop(second), self.after.crop(second)), 4.0)

    def test_key_frame_codes_every_block(self) -> None:
        """A key frame is whole whatever C{changed} says: a viewer that joins
        there gets both boxes, though the rectangles name neither."""
        enc = VideoEncoder(Codec.VP9, bitrate=500_000, qmax=30, threads=1, vp9_backend="libvpx")
        w, h = self.w, self.h
        enc.encode_yuv(self.show(self.before), w, h, 0, keyframe=True)
        enc.encode_yuv(self.show(self.before), w, h, 33, changed=[])
        key = enc.encode_yuv(self.show(self.after), w, h, 66, keyframe=True, changed=[])
        self.assertTrue(key.key)
        out = VideoDecoder(Codec.VP9).decode_frame(key)
        assert out is not None
        self.assertLess(worst_block(out.image, self.after), 8)

    def test_moving_window_leaves_no_stale_block(self) -> None:
        """A window slides over the 1080p desktop 12 px a frame (never on the
        16 px grid); each frame's C{changed} is the window's old and new
        place.  Every block of every decoded frame is as close to the
        picture as without the map: nothing the window left stays behind.

        Measured: the worst 16x16 block of any frame 17 grey levels off with
        the map, 16-17 without; leaving the old place out of C{changed}
        left blocks 141 off."""
        enc = balanced("libvpx")
        dec = VideoDecoder(Codec.VP9)
        canvas = YuvCanvas()
        before: Rect | None = None
        for i, bgra in enumerate(moving_window_frames(20, W, H)):
            place = Rect((i * 12) % (W - W // 3), (i * 4) % (H - H // 2), W // 3, H // 2)
            frame = canvas.fill(bgra, W, H)
            changed = None if before is None else [before, place]
            out = dec.decode_frame(enc.encode_yuv(frame, W, H, 33 * i, changed=changed))
            assert out is not None
            self.assertLess(worst_block(out.image, bgra_to_image(bgra, W, H)), 25, f"frame {i}")
            before = place

    def test_refused_map_is_logged_once_and_dropped(self) -> None:
        """If libvpx refuses a map (here one of another frame size), that is
        logged once and maps stop for the process; the map libvpx held is
        cleared by a key frame, and the frames decode to the picture."""
        vpx = libvpx.Libvpx.get()
        assert vpx is not None
        self.addCleanup(setattr, vpx, "active_maps", True)
        seen = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        enc = VideoEncoder(Codec.VP9, bitrate=500_000, qmax=30, threads=1, vp9_backend="libvpx")
        w, h = self.w, self.h
        enc.encode_yuv(self.show(self.before), w, h, 0, keyframe=True)
        enc.encode_yuv(self.show(self.before), w, h, 33, changed=[Rect(0, 0, 16, 16)])
        direct = enc._vpx
        assert direct is not None
        direct._map = ActiveMap(w + 64, h)
        dec = VideoDecoder(Codec.VP9)
        for i in range(3):
            frame = enc.encode_yuv(self.show(self.after), w, h, 66 + 33 * i, changed=[])
            self.assertEqual(frame.key, i == 0)
            out = dec.decode_frame(frame)
            assert out is not None
            self.assertLess(worst_block(out.image, self.after), 8)
        self.assertFalse(vpx.active_maps)
        warnings = [e for e in seen if "active map" in str(e.get("log_format"))]
        self.assertEqual(len(warnings), 1)


def _overlap_in(r: Rect, block: Rect, frame: Rect) -> bool:
    """Whether C{r}, C{block} and C{frame} share a pixel."""
    x0, y0 = max(r.x, block.x, frame.x), max(r.y, block.y, frame.y)
    x1 = min(r.right, block.right, frame.right)
    y1 = min(r.bottom, block.bottom, frame.bottom)
    return x0 < x1 and y0 < y1
