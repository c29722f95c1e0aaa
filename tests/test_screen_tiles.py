"""Screen tiles: small changes sent losslessly beside the video (L{litedesk.screen.tiles}).

Covers the message on its own (what the host encodes, the viewer patches
into a copy of its picture, exactly; hypothesis over any rectangles and over
any bytes a host could send: only L{TileError}, never another exception,
and a deflate bomb is refused without being inflated), and on a real Xvfb
the streamer: with tiles on, a small drawing goes as a tile message that
patches the last decoded picture into the screen as it is now, only the box
that differs inside a damaged line is taken, a large change is video again,
and without tiles (a stock client) every change is video.  The whole session
(host agent, LiteDesk viewer, its screenshot) is in tests/test_screen_tiles_session.py.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from twisted.internet import defer, reactor
from twisted.trial import unittest

from litedesk.screen import Capturer, EncodedFrame, ScreenStreamer, VideoDecoder
from litedesk.screen.change import Rect
from litedesk.screen.decoded import DecodedFrame
from litedesk.screen.testpattern import desktop_image, image_to_bgra
from litedesk.screen.tile_patch import apply_tiles, patched
from litedesk.screen.tiles import (
    MAX_COPIES,
    MAX_TILES,
    TILE_CODEC,
    TILE_PIXELS,
    TileError,
    encode_tiles,
    parse_tiles,
    tile_candidate,
)
from litedesk.screen.yuv_canvas import to_yuv
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.skips import requires
from tests.support.xvfb import shared_desktop

from .test_screen_damage import _Window

W, H = 1920, 1080


def _picture(seed: int, w: int = 320, h: int = 240) -> Any:
    return to_yuv(image_to_bgra(desktop_image(w, h, seed=seed)), w, h)


def _planes(picture: Any) -> list[bytes]:
    """Each plane's visible bytes, row by row (strides may differ between frames)."""
    out = []
    for p, div in ((0, 1), (1, 2), (2, 2)):
        plane = picture.planes[p]
        view = memoryview(plane)
        w = picture.width // div
        out.append(
            b"".join(
                bytes(view[o : o + w])
                for o in range(0, plane.height * plane.line_size, plane.line_size)
            )
        )
    return out


def _block(picture: Any, r: Rect) -> list[bytes]:
    out = []
    for p, div in ((0, 1), (1, 2), (2, 2)):
        plane = picture.planes[p]
        view = memoryview(plane)
        x, y, w, h = r.x // div, r.y // div, r.width // div, r.height // div
        out.append(
            b"".join(
                bytes(view[o : o + w])
                for o in range(y * plane.line_size + x, (y + h) * plane.line_size, plane.line_size)
            )
        )
    return out


def _disjoint(rects: list[Rect]) -> list[Rect]:
    kept: list[Rect] = []
    for r in rects:
        if not any(r.overlaps(k) for k in kept):
            kept.append(r)
    return kept


even = st.integers(0, 79).map(lambda v: v * 2)
size = st.integers(1, 40).map(lambda v: v * 2)
rects_st = (
    st.lists(st.builds(Rect, even, even, size, size), min_size=1, max_size=12)
    .map(lambda rs: _disjoint([r for r in rs if r.right <= 320 and r.bottom <= 240]))
    .filter(bool)
)


class TileMessageTests(unittest.TestCase):
    def test_patch_carries_the_rectangles_exactly(self) -> None:
        """The viewer's copy has the host's pixels inside the tiles and its own
        elsewhere, and the picture it patched is left as it was (it may be the
        decoder's reference)."""
        host, shown = _picture(1), _picture(2)
        before = _planes(shown)
        rects = [Rect(10, 20, 40, 30), Rect(200, 100, 64, 64)]
        out = apply_tiles(shown, parse_tiles(encode_tiles(host, rects), 320, 240))
        for r in rects:
            self.assertEqual(_block(out, r), _block(host, r))
        self.assertEqual(_block(out, Rect(100, 150, 60, 60)), _block(shown, Rect(100, 150, 60, 60)))
        self.assertEqual(_planes(shown), before)

    @settings(max_examples=60, deadline=None)
    @given(rects_st)
    def test_any_disjoint_rectangles_round_trip(self, rects: list[Rect]) -> None:
        """Whatever even-aligned rectangles the damage path gives, the viewer
        ends up with the host's planes there."""
        host, shown = _picture(3), _picture(4)
        out = apply_tiles(shown, parse_tiles(encode_tiles(host, rects), 320, 240))
        for r in rects:
            self.assertEqual(_block(out, r), _block(host, r))

    def test_bad_rectangles_are_refused(self) -> None:
        """Odd, outside, overlapping, too many or no rectangles: a TileError with the reason."""
        host = _picture(5)
        for rects, reason in (
            ([Rect(1, 0, 2, 2)], "even"),
            ([Rect(318, 0, 4, 2)], "inside"),
            ([Rect(0, 0, 4, 4), Rect(2, 2, 4, 4)], "overlap"),
            ([Rect(2 * i, 0, 2, 2) for i in range(MAX_TILES + 1)], "allowed"),
            ([], "nothing"),
        ):
            with self.assertRaises(TileError) as caught:
                encode_tiles(host, rects)
            self.assertIn(reason, str(caught.exception))

    def test_a_message_for_a_larger_picture_is_refused(self) -> None:
        """Tiles made for a 1920x1080 monitor do not patch a 320x240 picture (a
        monitor switch the viewer has not seen yet)."""
        big = to_yuv(bytes(W * H * 4), W, H)
        data = encode_tiles(big, [Rect(1000, 900, 20, 20)])
        self.assertRaisesRegex(TileError, "inside", parse_tiles, data, 320, 240)

    def test_deflate_bomb_is_refused_without_inflating_it(self) -> None:
        """A 2x2 tile whose planes inflate to 64 MB: refused, and at most the six
        bytes it needs (plus one) are ever inflated."""
        bomb = zlib.compress(bytes(64 << 20), 9)
        data = struct.pack("!BBBB", 1, 0, 1, 0) + struct.pack("!HHHH", 0, 0, 2, 2) + bomb
        self.assertLess(len(data), 100_000)
        self.assertRaisesRegex(TileError, "6 bytes", parse_tiles, data, 320, 240)

    def test_short_or_foreign_messages_are_refused(self) -> None:
        """Empty, another format version, a count beyond the limit, truncated
        rectangles, planes that are not deflate data or too short."""
        one = struct.pack("!HHHH", 0, 0, 2, 2)
        for data, reason in (
            (b"", "header"),
            (b"\x02\x00\x01\x00" + one, "format"),
            (b"\x01\x00\x00\x00", "nothing"),
            (bytes([1, 0, MAX_TILES + 1, 0]) + one * (MAX_TILES + 1), "allowed"),
            (bytes([1, MAX_COPIES + 1, 0, 0]) + bytes(12 * (MAX_COPIES + 1)), "at most"),
            (b"\x01\x00\x02\x00" + one, "rectangles"),
            (b"\x01\x00\x01\x00" + one + b"not deflate", "deflate"),
            (b"\x01\x00\x01\x00" + one + zlib.compress(b"12345"), "6 bytes"),
            (b"\x01\x00\x00\x01" + one + zlib.compress(b"1"), "2 bytes"),
        ):
            with self.assertRaises(TileError) as caught:
                parse_tiles(data, 320, 240)
            self.assertIn(reason, str(caught.exception))

    @settings(max_examples=300, deadline=None)
    @given(
        st.binary(max_size=600),
        st.sampled_from([b"", b"\x01\x00\x01\x00", b"\x01\x01\x02\x01", b"\x01\x02\x00\x00"]),
    )
    def test_any_bytes_are_a_tile_error_or_tiles_that_fit(self, data: bytes, prefix: bytes) -> None:
        """Whatever a host sends: TileError, or rectangles inside the picture with
        exactly their planes' bytes."""
        try:
            tiles = parse_tiles(prefix + data, 320, 240)
        except TileError:
            return
        need = sum(r.width * r.height * 3 // 2 for r in tiles.rects)
        need += sum(r.width * r.height // 2 for r in tiles.chroma)
        self.assertEqual(len(tiles.planes), need)
        boxes = [*tiles.rects, *tiles.chroma, *(c.source for c in tiles.copies)]
        boxes += [c.target for c in tiles.copies]
        self.assertTrue(all(r.right <= 320 and r.bottom <= 240 for r in boxes))
        # And it applies: whatever parses can be patched into the picture.
        apply_tiles(_picture(8), tiles)

    def test_patched_keeps_the_captured_size(self) -> None:
        """The viewer's picture after tiles is the same monitor at the tiles' time."""
        shown = DecodedFrame(_picture(6), 100, 320, 240)
        out = patched(shown, encode_tiles(_picture(7), [Rect(0, 0, 8, 8)]), 140)
        self.assertEqual((out.size, out.pts), ((320, 240), 140))

    def test_only_small_changes_are_candidates(self) -> None:
        """A glyph or a button is; half the screen, or too many rectangles, is video."""
        self.assertTrue(tile_candidate([Rect(0, 0, 160, 160)]))
        self.assertFalse(tile_candidate([Rect(0, 0, 960, 540)]))
        self.assertFalse(tile_candidate([Rect(0, 0, 2, 2)] * (MAX_TILES + 1)))
        self.assertFalse(tile_candidate([Rect(0, 0, TILE_PIXELS // 2 + 2, 2)]))
        self.assertFalse(tile_candidate([]))


def _shown(sent: list[EncodedFrame]) -> DecodedFrame:
    """What a LiteDesk viewer shows after these messages: decoded video, patched by tiles."""
    dec = VideoDecoder()
    shown: DecodedFrame | None = None
    for f in sent:
        if f.codec == TILE_CODEC:
            assert shown is not None
            shown = patched(shown, f.data, f.pts)
        else:
            shown = dec.decode_frame(f) or shown
    assert shown is not None
    return shown


@requires("Xvfb", "display")
class TilesOnXvfbTests(unittest.TestCase):
    def setUp(self) -> None:
        self.display = shared_desktop(seed=23)

    def grab(self) -> Image.Image:
        return Image.frombuffer("RGB", (W, H), Capturer(self.display).grab().data, "raw", "BGRX")

    @defer.inlineCallbacks
    def start(self, tiles: bool) -> Any:
        sent: list[EncodedFrame] = []
        streamer = ScreenStreamer(
            reactor, sent.append, lambda: 0, display=self.display, tiles=tiles
        )
        win = _Window(self.display, 700, 400, 480, 320)
        self.addCleanup(win.close)
        streamer.start()
        self.addCleanup(streamer.stop)
        yield until(lambda: len(sent) >= 1 and streamer.idle)
        yield until(lambda: streamer.idle and not streamer._damage.pending())  # type: ignore[union-attr]
        return streamer, sent, win

    @defer.inlineCallbacks
    def test_small_change_is_a_tile_and_patches_the_picture(self) -> Any:
        """A 160x160 square changing colour (session.py's click target) goes as one
        tile message of a few hundred bytes, not video, and the viewer's picture
        is the screen as it is now: inside the square exactly its colour."""
        streamer, sent, win = yield self.start(tiles=True)
        frames = len(sent)
        win.fill(100, 80, 160, 160, 0xFF0000)
        yield until(lambda: len(sent) > frames and streamer.idle)
        frames = len(sent)
        win.fill(100, 80, 160, 160, 0x0000FF)
        yield until(lambda: len(sent) > frames and streamer.idle)
        last = sent[-1]
        self.assertEqual(last.codec, TILE_CODEC)
        self.assertLess(len(last.data), 400)
        self.assertGreaterEqual(streamer.stats.tiles, 2)
        expect = self.grab()
        shown = _shown(sent).image
        box = (800, 480, 960, 640)
        self.assertLess(mean_error(expect.crop(box), shown.crop(box)), 1.0)
        self.assertLess(mean_error(expect, shown), 4.0)

    @defer.inlineCallbacks
    def test_only_the_box_that_differs_is_taken(self) -> Any:
        """A whole line redrawn (as Tk does for each typed glyph) with one glyph-sized
        change in it: the tile is that box, not the line."""
        streamer, sent, win = yield self.start(tiles=True)
        frames = len(sent)
        win.fill(0, 200, 480, 20, 0x303030)
        yield until(lambda: len(sent) > frames and streamer.idle)
        frames = len(sent)
        win.fill(0, 200, 480, 20, 0x303030)
        win.fill(200, 204, 8, 12, 0xFFFFFF)
        yield until(lambda: len(sent) > frames and streamer.idle)
        region = streamer.stats.last_region
        self.assertEqual(sent[-1].codec, TILE_CODEC)
        self.assertEqual(sum(r.width * r.height for r in region), 8 * 12, region)

    @defer.inlineCallbacks
    def test_large_change_is_video(self) -> Any:
        """A change over the tiles' limit goes to the encoder, and the picture is right."""
        streamer, sent, win = yield self.start(tiles=True)
        frames = len(sent)
        win.fill(0, 0, 480, 320, 0x20A040)
        yield until(lambda: len(sent) > frames and streamer.idle)
        self.assertEqual(sent[-1].codec, "h264")
        self.assertEqual(streamer.stats.tiles, 0)
        self.assertLess(mean_error(self.grab(), _shown(sent).image), 4.0)

    @defer.inlineCallbacks
    def test_without_tiles_every_change_is_video(self) -> Any:
        """A viewer that did not ask for tiles (a stock RustDesk client) gets video only."""
        streamer, sent, win = yield self.start(tiles=False)
        frames = len(sent)
        win.fill(100, 80, 160, 160, 0xFF0000)
        yield until(lambda: len(sent) > frames and streamer.idle)
        self.assertEqual({f.codec for f in sent}, {"h264"})
        self.assertEqual(streamer.stats.tiles, 0)


def _model(picture: Any, tiles: Any) -> list[bytes]:
    """What apply_tiles must give, computed plane by plane in plain Python."""
    planes = []
    for p, div in ((0, 1), (1, 2), (2, 2)):
        plane = picture.planes[p]
        view = memoryview(plane)
        w, h = picture.width // div, picture.height // div
        rows = [bytearray(view[y * plane.line_size : y * plane.line_size + w]) for y in range(h)]
        before = [bytes(r) for r in rows]
        for c in tiles.copies:
            if p and not c.with_chroma:
                continue
            s = c.source
            for row in range(s.height // div):
                src = before[s.y // div + row][s.x // div : s.x // div + s.width // div]
                rows[c.y // div + row][c.x // div : c.x // div + len(src)] = src
        planes.append(rows)
    pos = 0
    data = tiles.planes
    for r, which in [(r, (0, 1, 2)) for r in tiles.rects] + [(r, (1, 2)) for r in tiles.chroma]:
        for p in which:
            div = 2 if p else 1
            for row in range(r.height // div):
                n = r.width // div
                planes[p][r.y // div + row][r.x // div : r.x // div + n] = data[pos : pos + n]
                pos += n
    return [b"".join(bytes(r) for r in rows) for rows in planes]


coord = st.integers(0, 300)
copy_st = st.builds(
    lambda sx, sy, w, h, x, y: (sx, sy, w, h, x, y),
    coord, coord, st.integers(1, 120), st.integers(1, 120), coord, coord,
)  # fmt: skip


class CopyTests(unittest.TestCase):
    @settings(max_examples=80, deadline=None)
    @given(st.lists(copy_st, min_size=1, max_size=4), rects_st)
    def test_copies_then_rects_as_the_model_says(
        self, raw: list[tuple[int, int, int, int, int, int]], rects: list[Rect]
    ) -> None:
        """Any copies (odd or even, overlapping their own source) and rects: each
        copy reads the picture as it was, moves chroma only when everything is
        even, and rects are written last."""
        from litedesk.screen.tiles import Copy

        copies = []
        for sx, sy, w, h, x, y in raw:
            w, h = min(w, W_SMALL - max(sx, x)), min(h, H_SMALL - max(sy, y))
            if w > 0 and h > 0:
                copies.append(Copy(Rect(sx, sy, w, h), x, y))
        if not copies:
            return
        host, shown = _picture(10), _picture(11)
        tiles = parse_tiles(encode_tiles(host, rects, copies), W_SMALL, H_SMALL)
        out = apply_tiles(shown, tiles)
        self.assertEqual(_planes(out), _model(shown, tiles))


W_SMALL, H_SMALL = 320, 240
