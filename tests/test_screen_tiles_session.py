"""Screen tiles in a whole session: who gets them, and what the viewer shows.

The host session turns tiles on only for a LiteDesk viewer that announces
C{SupportedDecoding.litedesk_tiles}, never for a stock RustDesk client (it
would show nothing for them).  End to end, a real C{twistd litedesk-host} on
Xvfb with the input recorder's text entry focused, and the headless LiteDesk
viewer typing into it: the typed glyphs reach the viewer as tiles with none
refused, the host's entry holds the text, and the viewer's screenshot (taken
from the key frame the headless viewer asks for) is the host's screen.  That
a patched picture has the host's pixels is checked without a session, on
the streamer's own output, in tests/test_screen_tiles.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.proto import message_pb2 as pb
from litedesk.screen import Capturer
from litedesk.screen.change import Rect
from litedesk.screen.tiles import encode_tiles
from litedesk.screen.yuv_canvas import to_yuv
from litedesk.session.framing import MAX_FRAME_LENGTH
from litedesk.session.host_session import HostSession
from litedesk.session.password import login_password
from litedesk.wire.bytescodec import FrameDecoder, encode_frame

from .support.fakes import FakeStreamer
from .support.images import mean_error
from .support.listening_host import ListeningHost
from .support.recorder import Recorder
from .support.skips import requires
from .support.xvfb import Xvfb
from .test_host_monitors import HOST_ID, ONE, PASSWORD, _context
from .test_viewer_codecs import H, Viewer, W, encode, picture

TYPED = "tiles carry typing"


class _Login:
    """A host session on a string transport, logged in with C{option}."""

    def __init__(self, option: pb.OptionMessage, *, rustdesk: bool = False) -> None:
        self.streamers: list[FakeStreamer] = []

        def make(deliver: object, buffered: object, codec: str) -> FakeStreamer:
            self.streamers.append(FakeStreamer())
            return self.streamers[-1]

        ctx = _context(Clock(), list(ONE), None)
        ctx.make_streamer = make
        session = HostSession(ctx, rustdesk=rustdesk)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000))
        session.makeConnection(transport)
        session.handshakeCompleted()
        payloads = FrameDecoder(MAX_FRAME_LENGTH).feed(transport.value())
        hash_msg = pb.Message.FromString(payloads[0]).hash
        req = pb.LoginRequest(
            username=HOST_ID,
            password=login_password(PASSWORD, hash_msg.salt, hash_msg.challenge),
            my_id="987654321",
            option=option,
        )
        session.dataReceived(encode_frame(pb.Message(login_request=req).SerializeToString()))


def _option(tiles: int) -> pb.OptionMessage:
    opt = pb.OptionMessage()
    opt.supported_decoding.ability_h264 = 1
    opt.supported_decoding.litedesk_tiles = tiles
    return opt


class WhoGetsTilesTests(SynchronousTestCase):
    def test_a_viewer_that_draws_tiles_gets_them(self) -> None:
        login = _Login(_option(1))
        self.assertEqual([s.tiles for s in login.streamers], [True])

    def test_a_viewer_that_does_not_say_so_gets_video_only(self) -> None:
        """An older LiteDesk viewer (no litedesk_tiles) keeps plain video."""
        login = _Login(_option(0))
        self.assertEqual([s.tiles for s in login.streamers], [False])


@requires("Xvfb", "display")
class TypingThroughTilesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.host = ListeningHost(PASSWORD, prefix="litedesk-tiles-", xvfb=Xvfb(1280, 1024).start())
        self.addCleanup(self.host.stop)
        self.recorder = Recorder(self.host.env)
        self.addCleanup(self.recorder.stop)

    def viewer(self, *args: str) -> dict[str, Any]:
        result = self.host.viewer(*args, "--stats-json")
        self.assertEqual(result.returncode, 0, f"viewer failed: {result.stderr}")
        stats: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        return stats

    def grab(self) -> Image.Image:
        grab = Capturer(self.host.xvfb.display).grab()
        return Image.frombuffer("RGB", (grab.width, grab.height), grab.data, "raw", "BGRX")

    def test_typed_text_arrives_as_tiles_and_shows_exactly(self) -> None:
        before = self.grab()
        shot = Path(self.mktemp() + ".png")
        stats = self.viewer("--type", TYPED, "--screenshot", str(shot))
        self.assertEqual(self.recorder.command("state")["text"], TYPED)
        self.assertGreater(stats["tiles"], 0, stats)
        self.assertEqual(stats["tile_errors"], 0, stats)
        self.assertEqual(stats["codec"], "h264")
        got = Image.open(shot).convert("RGB")
        # The typed text's box: no pixel far off (a glyph missing or half
        # drawn would be).  The entry's cursor blinks, so the host's screen is
        # grabbed until it is as it was in the screenshot.
        errors: list[tuple[float, int, tuple[int, int, int, int]]] = []
        for _ in range(10):
            expect = self.grab()
            self.assertEqual(got.size, expect.size)
            box = ImageChops.difference(before, expect).getbbox()
            assert box is not None
            diff = ImageChops.difference(expect.crop(box), got.crop(box)).convert("L")
            worst = int(diff.getextrema()[1])  # type: ignore[arg-type]
            errors.append((mean_error(expect.crop(box), got.crop(box)), worst, box))
            time.sleep(0.15)
        text_error, worst, box = min(errors)
        self.assertGreater(box[2] - box[0], 8 * len(TYPED) // 2, errors)
        self.assertLess(text_error, 5.0, errors)
        self.assertLess(worst, 64, errors)
        self.assertLess(mean_error(expect, got), 4.0)


def _tile_frame(data: bytes) -> pb.Message:
    vf = pb.VideoFrame()
    vf.tiles.frames.append(pb.EncodedVideoFrame(data=data, pts=40))
    return pb.Message(video_frame=vf)


class ViewerTilesTests(SynchronousTestCase):
    """The viewer's side: a real ViewerSession on a string transport."""

    def test_tiles_patch_and_bad_ones_ask_one_key_frame(self) -> None:
        """Tiles before any key frame are skipped; after it they patch the
        picture; malformed ones leave it as it was, are counted and logged,
        and ask for one key frame until a picture decodes again."""
        viewer = Viewer()
        viewer.log_in()
        (key,) = encode("h264", [picture(1)])
        host = to_yuv(bytes(W * H * 4), W, H)  # a black host picture
        good = encode_tiles(host, [Rect(0, 0, 32, 16)])
        viewer.feed(_tile_frame(good))
        self.assertIsNone(viewer.session.latest)
        self.assertEqual(viewer.refreshes(), 1)  # nothing to patch: a key frame, please
        viewer.video("h264", [key])
        before = viewer.session.latest
        viewer.feed(_tile_frame(good))
        after = viewer.session.latest
        assert before is not None and after is not None
        self.assertIsNot(after, before)
        self.assertEqual(after.image.getpixel((5, 5)), (0, 0, 0))
        self.assertNotEqual(before.image.getpixel((5, 5)), (0, 0, 0))
        self.assertEqual(viewer.session.stats.tiles, 1)
        viewer.feed(_tile_frame(b"\x01\x00\x01\x00garbage"))
        viewer.feed(_tile_frame(b"\x07"))
        self.assertIs(viewer.session.latest, after)
        self.assertEqual(viewer.session.stats.tile_errors, 2)
        self.assertEqual(viewer.refreshes(), 2)
        viewer.video("h264", [key])
        viewer.feed(_tile_frame(b""))
        self.assertEqual(viewer.refreshes(), 3)
        self.assertFalse(viewer.transport.disconnecting)
