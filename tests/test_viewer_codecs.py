"""The viewer decodes every codec a stock RustDesk host may send.

L{ViewerSession} over C{StringTransport} on a Clock, fed C{VideoFrame}s of
pictures encoded here with PyAV (libvpx, libx264, libx265, SVT-AV1, the
encoders RustDesk's own are closest to): each codec's pictures arrive
intact, a codec switch mid-session switches the decoder, a frame that fails
asks for exactly one key frame until one comes, a codec that keeps failing
is withdrawn as RustDesk's client withdraws it, and arbitrary C{VideoFrame}
payloads never break the session.  The C{LoginRequest}'s
C{SupportedDecoding} is checked against RustDesk's encoder negotiation
(libs/scrap/src/common/codec.rs, C{Encoder::update}, re-stated below) and
against the LiteDesk host's L{pick_codec}; one test runs a RustDesk-like
host over loopback TCP.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar

import av
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from litedesk.proto import message_pb2 as pb
from litedesk.screen import decode
from litedesk.screen.decode import (
    CODECS,
    MAX_DECODE_FAILURES,
    KeyFrameRequests,
    VideoDecoder,
    decodable_codecs,
    key_frame,
)
from litedesk.screen.testpattern import desktop_image
from litedesk.session.framing import MessageProtocol, serialize_message
from litedesk.session.host_messages import pick_codec
from litedesk.session.viewer_session import ViewerSession
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from tests.support.images import mean_error
from tests.support.polling import until
from tests.support.realtime import drop_realtime

reactor: Any = _reactor

# SVT-AV1 prints a banner per encoder at its default level; errors only.
os.environ.setdefault("SVT_LOG", "1")

W, H = 320, 240
# Mean absolute error per channel (0-255) a decoded picture may have against
# the original; a wrong, stale or shifted picture is far above it.
MAX_ERROR = 6.0

# Encoders per codec, set up for screen content at low delay (one packet per
# picture, no reordering), as RustDesk's realtime encoders are.
_ENCODERS: dict[str, tuple[tuple[str, dict[str, str], int], ...]] = {
    "vp9": (
        ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}, 2_000_000),
    ),
    "vp8": (
        ("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}, 2_000_000),
    ),
    "av1": (
        ("libsvtav1", {"preset": "10", "crf": "30", "svtav1-params": "pred-struct=1"}, 0),
        ("libaom-av1", {"usage": "realtime", "cpu-used": "8", "lag-in-frames": "0"}, 2_000_000),
    ),
    "h264": (("libx264", {"preset": "ultrafast", "tune": "zerolatency", "crf": "18"}, 0),),
    "h265": (
        (
            "libx265",
            {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "crf": "18",
                "x265-params": "log-level=error",
            },
            0,
        ),
    ),
}


def encode(codec: str, images: list[Image.Image]) -> list[tuple[bytes, bool]]:
    """The pictures as one stream of C{codec}: (data, key) per picture, the
    first a key frame."""
    for name, options, bitrate in _ENCODERS[codec]:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        ctx: Any = av.CodecContext.create(name, "w")
        ctx.width, ctx.height = images[0].size
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1000)
        ctx.framerate = 30
        ctx.gop_size = 1000
        if bitrate:
            ctx.bit_rate = bitrate
        ctx.options = options
        ctx.open()
        drop_realtime()  # SVT-AV1 as root (tests.support.realtime)
        out: list[tuple[bytes, bool]] = []
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_image(image).reformat(format="yuv420p")
            frame.pts = i * 33
            out.extend((bytes(p), bool(p.is_keyframe)) for p in ctx.encode(frame))
        out.extend((bytes(p), bool(p.is_keyframe)) for p in ctx.encode(None))
        drop_realtime()
        assert len(out) == len(images), f"{name}: {len(out)} packets for {len(images)} pictures"
        return out
    raise AssertionError(f"no {codec} encoder in this PyAV build")


def picture(seed: int, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A desktop-like test picture; each seed looks different."""
    return desktop_image(*size, seed=seed)


PICTURES = [picture(seed) for seed in (1, 2, 3, 4)]
_STREAMS: dict[str, list[tuple[bytes, bool]]] = {}


def stream(codec: str) -> list[tuple[bytes, bool]]:
    """PICTURES encoded in C{codec} (cached: encoders are deterministic
    enough, and the tests only read the bytes)."""
    if codec not in _STREAMS:
        _STREAMS[codec] = encode(codec, PICTURES)
    return _STREAMS[codec]


def flipped(data: bytes) -> bytes:
    """The frame with every byte changed: no decoder makes a picture of it."""
    return bytes(b ^ 0x5A for b in data)


def broken_key(codec: str) -> bytes:
    """The first key frame of C{codec}'s stream with everything after the
    start of its picture header changed: it passes the key-frame check, and
    the decoder reports an error.  (None of these codecs has checksums:
    garbage further into the frame would decode, into a wrong picture.)"""
    key = stream(codec)[0][0]
    if codec in ("vp9", "vp8"):
        keep = 10  # VP9's frame size, VP8's frame tag, start code and size
    elif codec == "av1":
        keep = _av1_frame_payload(key) + 1  # show_existing_frame, frame_type
    else:
        irap = (lambda b: b & 0x1F == 5) if codec == "h264" else (lambda b: 16 <= b >> 1 <= 21)
        keep = next(
            i + 3 + 8
            for i in range(len(key) - 3)
            if key[i : i + 3] == b"\x00\x00\x01" and irap(key[i + 3])
        )
    broken = key[:keep] + flipped(key[keep:])
    assert key_frame(codec, broken)
    return broken


def _av1_frame_payload(data: bytes) -> int:
    """Where the payload of the first OBU_FRAME starts (all OBUs sized)."""
    pos = 0
    while pos < len(data):
        header = data[pos]
        start = pos + 1 + ((header >> 2) & 1)
        size = 0
        for shift in range(0, 56, 7):
            byte = data[start]
            start += 1
            size |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
        if (header >> 3) & 0x0F == 6:
            return start
        pos = start + size
    raise AssertionError("no OBU_FRAME")


def video_frame(codec: str, frames: list[tuple[bytes, bool]], display: int = 0) -> pb.Message:
    vf = pb.VideoFrame(display=display)
    member = getattr(vf, codec + "s")
    for i, (data, key) in enumerate(frames):
        member.frames.append(pb.EncodedVideoFrame(data=data, key=key, pts=i * 33))
    if not frames:
        member.SetInParent()
    return pb.Message(video_frame=vf)


def peer_info(width: int = W, height: int = H) -> pb.PeerInfo:
    return pb.PeerInfo(
        platform="Linux",
        version="1.4.9",
        displays=[pb.DisplayInfo(width=width, height=height, name="0", online=True)],
    )


class Viewer:
    """A L{ViewerSession} over C{StringTransport} on a Clock, and what it sent."""

    def __init__(self, *, codec: str | None = None, rustdesk: bool = False) -> None:
        self.clock = Clock()
        self.session = ViewerSession(self.clock, "123456789", "pw", codec=codec, rustdesk=rustdesk)
        self.transport = StringTransport()
        self.session.makeConnection(self.transport)
        self._out = FrameDecoder()
        self.sent: list[pb.Message] = []

    def feed(self, msg: pb.Message) -> None:
        self.session.dataReceived(serialize_message(msg))

    def take(self) -> list[pb.Message]:
        """Messages sent since the last call."""
        payloads = self._out.feed(self.transport.value())
        self.transport.clear()
        msgs = [pb.Message.FromString(p) for p in payloads]
        self.sent.extend(msgs)
        return msgs

    def login_request(self) -> pb.LoginRequest:
        self.feed(pb.Message(hash=pb.Hash(salt="salt", challenge="challenge")))
        (msg,) = self.take()
        return msg.login_request

    def log_in(self, info: pb.PeerInfo | None = None) -> None:
        self.login_request()
        self.feed(pb.Message(login_response=pb.LoginResponse(peer_info=info or peer_info())))
        assert self.session.logged_in.called

    def video(self, codec: str, frames: list[tuple[bytes, bool]]) -> None:
        self.feed(video_frame(codec, frames))

    def refreshes(self) -> int:
        """Key-frame requests sent so far."""
        self.take()
        return sum(1 for m in self.sent if m.misc.WhichOneof("union") == "refresh_video")

    def announcements(self) -> list[pb.SupportedDecoding]:
        """SupportedDecoding re-announced during the session (Misc.option)."""
        self.take()
        return [
            m.misc.option.supported_decoding
            for m in self.sent
            if m.misc.WhichOneof("union") == "option"
            and m.misc.option.HasField("supported_decoding")
        ]

    def shows(self, image: Image.Image) -> bool:
        latest = self.session.latest
        return latest is not None and mean_error(latest.image, image) < MAX_ERROR


# -- RustDesk's encoder negotiation, re-stated for the tests ------------------


def rustdesk_host_codec(
    dec: pb.SupportedDecoding,
    *,
    h264_encoder: bool = False,
    h265_encoder: bool = False,
    av1_test: bool = True,
    low_memory: bool = False,
) -> str:
    """The codec a RustDesk 1.3.5-1.4.9 host with this one client picks
    (codec.rs Encoder::update).  Older hosts differ only in what no
    preference gives (VP9 or VP8; AV1 in 1.2.3; hardware H.264/H.265 from
    1.2.5); in all of them a VP9 preference gives VP9.

    @param h264_encoder: the host has a hardware (or VRAM) H.264 encoder;
        RustDesk encodes H.264 and H.265 only in hardware.
    @param av1_test: the host's AV1 speed test passed (option av1-test).
    @param low_memory: the host has at most 4 GB of memory.
    """
    vp8 = dec.ability_vp8 > 0
    av1 = dec.ability_av1 > 0
    h264 = dec.ability_h264 > 0 and h264_encoder
    h265 = dec.ability_h265 > 0 and h265_encoder
    p = pb.SupportedDecoding
    counted = {p.VP9: True, p.VP8: vp8, p.AV1: av1, p.H264: h264, p.H265: h265}
    preference = dec.prefer if counted.get(dec.prefer, False) else p.Auto
    auto = "av1" if av1 and av1_test else "vp9"
    if h264:
        auto = "h264"
    if h265:
        auto = "h265"
    if auto in ("vp9", "av1") and vp8 and low_memory:
        auto = "vp8"
    if preference == p.H264:
        return "h264" if h264_encoder else auto
    if preference == p.H265:
        return "h265" if h265_encoder else auto
    return {p.VP8: "vp8", p.VP9: "vp9", p.AV1: "av1"}.get(preference, auto)


def _host_setups() -> Iterator[dict[str, bool]]:
    for h264 in (False, True):
        for h265 in (False, True):
            for av1_test in (False, True):
                for low_memory in (False, True):
                    yield {
                        "h264_encoder": h264,
                        "h265_encoder": h265,
                        "av1_test": av1_test,
                        "low_memory": low_memory,
                    }


class SupportedDecodingTests(unittest.SynchronousTestCase):
    """What the LoginRequest announces, and what each kind of host makes of it."""

    def test_decodes_what_rustdesk_hosts_send(self) -> None:
        """PyAV here decodes VP9, VP8, AV1 (dav1d) and H.264, and H.265 exactly
        when it has FFmpeg's hevc decoder."""
        self.assertLessEqual({"vp9", "vp8", "av1", "h264"}, decodable_codecs())
        try:
            av.codec.Codec("hevc", "r")
            hevc = True
        except Exception:
            hevc = False
        self.assertEqual("h265" in decodable_codecs(), hevc)
        self.assertLessEqual(decodable_codecs(), set(CODECS))

    def test_announces_every_decodable_codec(self) -> None:
        """Each codec this viewer decodes has ability 1, the others 0; nothing
        asks for 4:4:4 (RustDesk hosts then stay on 4:2:0)."""
        dec = Viewer().login_request().option.supported_decoding
        for codec in CODECS:
            want = 1 if codec in decodable_codecs() else 0
            self.assertEqual(getattr(dec, "ability_" + codec), want, codec)
        self.assertEqual(dec.prefer_chroma, pb.I420)

    def test_rustdesk_host_picks_vp9(self) -> None:
        """Unasked, a RustDesk host gets a VP9 preference and picks VP9 whatever
        encoders it has and however its AV1 test went; without the preference
        the same announcement would have got AV1, H.264 or H.265."""
        dec = Viewer(rustdesk=True).login_request().option.supported_decoding
        self.assertEqual(dec.prefer, pb.SupportedDecoding.VP9)
        for setup in _host_setups():
            self.assertEqual(rustdesk_host_codec(dec, **setup), "vp9", setup)
        auto = pb.SupportedDecoding()
        auto.CopyFrom(dec)
        auto.prefer = pb.SupportedDecoding.Auto
        self.assertEqual(
            {rustdesk_host_codec(auto, **setup) for setup in _host_setups()},
            {"vp9", "vp8", "av1", "h264", "h265"} & decodable_codecs(),
        )

    def test_asked_codec_is_preferred(self) -> None:
        """The codec asked for is the preference, to either kind of host; a
        RustDesk host honours H.264 when it has an encoder for it."""
        for codec in sorted(decodable_codecs()):
            for rustdesk in (False, True):
                viewer = Viewer(codec=codec, rustdesk=rustdesk)
                dec = viewer.login_request().option.supported_decoding
                self.assertEqual(
                    pb.SupportedDecoding.PreferCodec.Name(dec.prefer), codec.upper(), codec
                )
                self.assertEqual(
                    rustdesk_host_codec(dec, h264_encoder=True, h265_encoder=True), codec
                )
        dec = Viewer(codec="h264", rustdesk=True).login_request().option.supported_decoding
        self.assertEqual(rustdesk_host_codec(dec, av1_test=False), "vp9")

    def test_litedesk_host_picks_as_before(self) -> None:
        """A LiteDesk host picks from the new announcement exactly what it
        picked from the old one (H.264 and VP9 only, H.264 preferred unless
        VP9 was asked for), with either of its default codecs."""
        for codec, old_prefer in (
            (None, pb.SupportedDecoding.H264),
            ("h264", pb.SupportedDecoding.H264),
            ("vp9", pb.SupportedDecoding.VP9),
        ):
            old = pb.OptionMessage(
                supported_decoding=pb.SupportedDecoding(
                    ability_h264=1, ability_vp9=1, prefer=old_prefer
                )
            )
            new = Viewer(codec=codec).login_request().option
            for default in ("h264", "vp9"):
                self.assertEqual(pick_codec(new, default), pick_codec(old, default), codec)
        self.assertEqual(pick_codec(Viewer().login_request().option, "vp9"), "h264")

    def test_unknown_codec_refused(self) -> None:
        """Asking for a codec this viewer cannot decode is a caller's error."""
        self.assertRaises(ValueError, ViewerSession, Clock(), "1", "pw", codec="h266")

    def test_cannot_ask_for_what_is_not_decodable(self) -> None:
        """Without a decoder for a codec, it is neither announced nor accepted."""
        self.patch(decode, "_DECODERS", {k: v for k, v in decode._DECODERS.items() if k != "vp8"})
        self.assertRaises(ValueError, ViewerSession, Clock(), "1", "pw", codec="vp8")
        self.assertEqual(Viewer().login_request().option.supported_decoding.ability_vp8, 0)


# -- decoding each codec through the session ----------------------------------


if TYPE_CHECKING:
    _Base = unittest.SynchronousTestCase
else:
    _Base = object  # mixed into one TestCase per codec below


class _CodecTests(_Base):
    codec: ClassVar[str]

    def test_pictures_arrive(self) -> None:
        """A stream of the codec, one frame per VideoFrame, shows each picture
        as sent; nothing fails and nothing is asked for."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        frames = stream(self.codec)
        self.assertEqual([key for _, key in frames], [True, False, False, False])
        for (data, key), image in zip(frames, PICTURES, strict=True):
            viewer.video(self.codec, [(data, key)])
            self.assertTrue(viewer.shows(image))
        stats = viewer.session.stats
        self.assertEqual((stats.frames, stats.key_frames, stats.decode_errors), (4, 1, 0))
        self.assertEqual(stats.codec, self.codec)
        self.assertEqual(viewer.refreshes(), 0)
        self.assertEqual(viewer.announcements(), [])
        self.assertFalse(viewer.transport.disconnecting)

    def test_several_frames_in_one_video_frame(self) -> None:
        """RustDesk may pack several encoded frames in one VideoFrame: all are
        decoded, the last one shows."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        viewer.video(self.codec, stream(self.codec))
        self.assertEqual(viewer.session.stats.frames, 4)
        self.assertTrue(viewer.shows(PICTURES[3]))

    def test_key_frames_from_the_bitstream(self) -> None:
        """The key-frame check agrees with the encoder on every frame, and a
        key flag on a frame whose data is not a key frame is not trusted."""
        for data, key in stream(self.codec):
            self.assertEqual(key_frame(self.codec, data), key)
        data, _ = stream(self.codec)[1]
        viewer = Viewer()
        viewer.log_in()
        viewer.video(self.codec, [(data, True)])
        self.assertIsNone(viewer.session.latest)
        self.assertEqual(viewer.session.decoder.skipped, 1)
        self.assertEqual(viewer.session.stats.decode_errors, 0)

    def test_decode_error_asks_for_one_key_frame(self) -> None:
        """A frame that fails to decode sends exactly one refresh_video; the
        frames after it are skipped without asking again until a key frame
        arrives and decodes; a later failure asks again."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        frames = stream(self.codec)
        viewer.video(self.codec, frames[:2])
        viewer.video(self.codec, [(flipped(frames[2][0]), False)])
        self.assertEqual(viewer.session.stats.decode_errors, 1)
        self.assertEqual(viewer.refreshes(), 1)
        viewer.video(self.codec, [frames[3]])
        viewer.clock.advance(5)
        viewer.video(self.codec, [frames[3]])
        self.assertEqual(viewer.refreshes(), 1)
        self.assertEqual(viewer.session.decoder.skipped, 2)
        self.assertTrue(viewer.shows(PICTURES[1]))  # the last good picture stays
        (key,) = encode(self.codec, [PICTURES[3]])
        viewer.video(self.codec, [key])
        self.assertTrue(viewer.shows(PICTURES[3]))
        self.assertEqual(viewer.refreshes(), 1)
        viewer.video(self.codec, [(flipped(frames[1][0]), False)])
        self.assertEqual(viewer.refreshes(), 2)
        self.assertEqual(viewer.session.stats.decode_errors, 2)
        self.assertEqual(viewer.session.stats.key_frame_requests, 2)
        self.assertEqual(viewer.announcements(), [])  # never three in a row
        self.flushLoggedErrors()

    def test_broken_key_frame_withdraws_the_codec(self) -> None:
        """A key frame that fails as the first frame a decoder tries is a
        decode error, asks for a key frame and, as RustDesk's client does,
        withdraws the codec at once: a SupportedDecoding with its ability 0
        and the preference unchanged, sent once."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        broken = broken_key(self.codec)
        viewer.video(self.codec, [(broken, True)])
        self.assertEqual(viewer.session.stats.decode_errors, 1)
        self.assertEqual(viewer.refreshes(), 1)
        (dec,) = viewer.announcements()
        for codec in decodable_codecs():
            self.assertEqual(getattr(dec, "ability_" + codec), int(codec != self.codec))
        self.assertEqual(dec.prefer, pb.SupportedDecoding.VP9)
        self.assertEqual(viewer.session.unsupported, {self.codec})
        viewer.video(self.codec, [(broken, True)])
        self.assertEqual(len(viewer.announcements()), 1)
        # The host may keep the codec (RustDesk hosts do when VP9 is
        # preferred or they lack another): its pictures still show.
        viewer.video(self.codec, [stream(self.codec)[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))
        self.flushLoggedErrors()

    def test_pictures_larger_than_the_bound_refused(self) -> None:
        """The decoder refuses a picture above MAX_PIXELS before allocating
        it: a decode error, not a picture."""
        self.patch(decode, "MAX_PIXELS", W * H - 1)
        viewer = Viewer()
        viewer.log_in()
        viewer.video(self.codec, [stream(self.codec)[0]])
        self.assertIsNone(viewer.session.latest)
        self.assertEqual(viewer.session.stats.decode_errors, 1)
        self.patch(decode, "MAX_PIXELS", W * H)
        viewer.video(self.codec, [stream(self.codec)[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))


class VP9Tests(_CodecTests, unittest.SynchronousTestCase):
    codec = "vp9"


class VP8Tests(_CodecTests, unittest.SynchronousTestCase):
    codec = "vp8"


class AV1Tests(_CodecTests, unittest.SynchronousTestCase):
    codec = "av1"


class H264Tests(_CodecTests, unittest.SynchronousTestCase):
    codec = "h264"


class H265Tests(_CodecTests, unittest.SynchronousTestCase):
    codec = "h265"


class SessionVideoTests(unittest.SynchronousTestCase):
    """Codec switches, withdrawals and what a hostile host may send."""

    def test_codec_switch_mid_session(self) -> None:
        """When the host switches codec (another viewer joined, its user chose
        another), the next frames decode with the new codec from its key
        frame, without errors or requests, and back again."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        order = ["vp9", "av1", "h264", "vp8", "vp9", *sorted({"h265"} & decodable_codecs())]
        for i, codec in enumerate(order):
            image = PICTURES[i % len(PICTURES)]
            viewer.video(codec, encode(codec, [image]))
            self.assertTrue(viewer.shows(image), codec)
            self.assertEqual(viewer.session.decoder.codec, codec)
        stats = viewer.session.stats
        self.assertEqual((stats.frames, stats.decode_errors), (len(order), 0))
        self.assertEqual(viewer.refreshes(), 0)

    def test_frame_after_a_monitor_switch_is_not_missed(self) -> None:
        """The new monitor's key frame can be decoded before the caller asks
        for the frame after the switch (a fast host, a polled answer):
        asking after it still gets that frame, while a plain next_frame()
        waits for the next one."""
        viewer = Viewer()
        viewer.log_in()
        viewer.video("h264", encode("h264", [PICTURES[0]]))
        viewer.clock.advance(1)
        viewer.feed(pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=1))))
        switched = viewer.session.display_switched_at
        self.assertEqual((viewer.session.display, switched), (1, 1.0))
        viewer.clock.advance(0.01)
        viewer.video("h264", encode("h264", [PICTURES[1]]))
        viewer.clock.advance(0.04)
        got = viewer.session.next_frame(after=switched)
        self.assertIs(self.successResultOf(got), viewer.session.latest)
        self.assertTrue(viewer.shows(PICTURES[1]))
        self.assertNoResult(viewer.session.next_frame())

    def test_switch_to_a_stream_without_key_frame_asks_once(self) -> None:
        """Frames of a new codec that start mid-stream are skipped and one key
        frame is asked for, then the key frame decodes."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        viewer.video("vp9", [stream("vp9")[0]])
        viewer.video("av1", stream("av1")[1:3])
        viewer.video("av1", [stream("av1")[3]])
        self.assertEqual(viewer.refreshes(), 1)
        self.assertEqual(viewer.session.stats.decode_errors, 0)
        viewer.video("av1", [stream("av1")[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))

    def test_lost_request_asked_again_after_ten_seconds(self) -> None:
        """If no key frame comes, the request is repeated 10 s later (RustDesk's
        spacing of repeated refreshes), not on every skipped frame."""
        viewer = Viewer()
        viewer.log_in()
        p_frame = [stream("h264")[1]]
        viewer.video("h264", p_frame)
        self.assertEqual(viewer.refreshes(), 1)
        viewer.clock.advance(9.9)
        viewer.video("h264", p_frame)
        self.assertEqual(viewer.refreshes(), 1)
        viewer.clock.advance(0.1)
        viewer.video("h264", p_frame)
        viewer.video("h264", p_frame)
        self.assertEqual(viewer.refreshes(), 2)

    def test_three_failures_in_a_row_withdraw_the_codec(self) -> None:
        """After a good picture, a codec is withdrawn on the third failure in a
        row, not before; a picture in between starts the count again."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        broken = broken_key("vp9")
        viewer.video("vp9", [stream("vp9")[0]])
        viewer.video("vp9", [(broken, True)])
        viewer.video("vp9", [(broken, True)])
        viewer.video("vp9", [stream("vp9")[0]])
        viewer.video("vp9", [(broken, True)])
        viewer.video("vp9", [(broken, True)])
        self.assertEqual(viewer.announcements(), [])
        viewer.video("vp9", [(broken, True)])
        (dec,) = viewer.announcements()
        self.assertEqual((dec.ability_vp9, dec.ability_h264), (0, 1))
        self.assertEqual(viewer.session.stats.decode_errors, 5)
        self.flushLoggedErrors()

    def test_codec_without_decoder_is_withdrawn(self) -> None:
        """Frames of a codec this viewer did not announce (a host that ignores
        the announcement) count as errors and withdraw it again; the session
        goes on."""
        self.patch(decode, "_DECODERS", {k: v for k, v in decode._DECODERS.items() if k != "h265"})
        viewer = Viewer(rustdesk=True)
        self.assertEqual(viewer.login_request().option.supported_decoding.ability_h265, 0)
        viewer.feed(pb.Message(login_response=pb.LoginResponse(peer_info=peer_info())))
        viewer.video("h265", [(b"\x00\x00\x00\x01\x26\x01" + bytes(64), True)])
        viewer.video("h265", [])
        self.assertEqual(len(viewer.announcements()), 1)
        self.assertEqual(viewer.session.stats.decode_errors, 1)
        self.assertFalse(viewer.transport.disconnecting)
        viewer.video("vp9", [stream("vp9")[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))
        self.flushLoggedErrors()

    def test_unknown_video_member_is_counted(self) -> None:
        """RustDesk's raw rgb (7) and yuv (8) frames, which this viewer does
        not declare, are counted and logged once; the session goes on."""
        viewer = Viewer()
        viewer.log_in()
        raw_rgb = b"\x3a\x04\x0a\x02\xff\x00"  # VideoFrame field 7, a small RGB
        message = b"\x32" + bytes([len(raw_rgb)]) + raw_rgb  # Message.video_frame
        for _ in range(3):
            viewer.session.dataReceived(encode_frame(message))
        self.assertEqual(viewer.session.stats.unsupported_frames, 3)
        self.assertFalse(viewer.transport.disconnecting)
        viewer.video("h264", [stream("h264")[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))

    def test_huge_frame_header_refused(self) -> None:
        """A VP9 key frame whose header claims 16384 x 8192 (134 million
        pixels, which FFmpeg alone would allocate) is a decode error; the
        next honest key frame decodes."""
        key, _ = stream("vp9")[0]
        # Profile 0 key frame: 8 bits of frame marker and flags, the 24-bit
        # sync code, 4 bits of colour config, then width-1 and height-1 as
        # 16-bit fields at bit 36 and bit 52.
        bits = int.from_bytes(key[:9], "big")
        self.assertEqual(((bits >> (72 - 52)) & 0xFFFF, (bits >> (72 - 68)) & 0xFFFF), (319, 239))
        bits &= ~(0xFFFFFFFF << (72 - 68))
        bits |= (16383 << (72 - 52)) | (8191 << (72 - 68))
        huge = bits.to_bytes(9, "big") + key[9:]
        self.assertTrue(key_frame("vp9", huge))
        viewer = Viewer(rustdesk=True)
        viewer.log_in()
        viewer.video("vp9", [(huge, True)])
        self.assertIsNone(viewer.session.latest)
        self.assertEqual(viewer.session.stats.decode_errors, 1)
        # Refused by the size check (EINVAL), not after allocating 200 MB of
        # picture and then failing on the data (INVALIDDATA), as without
        # the bound.
        self.assertIn("ArgumentError", viewer.session.decoder.last_error or "")
        viewer.video("vp9", [(key, True)])
        self.assertTrue(viewer.shows(PICTURES[0]))
        self.flushLoggedErrors()

    def test_resolution_change_is_not_cropped(self) -> None:
        """A RustDesk host announces a new resolution with SwitchDisplay and
        sends pictures of it: they show whole, and the display's geometry is
        updated; an odd LiteDesk display still loses its padding column."""
        viewer = Viewer(rustdesk=True)
        viewer.log_in(peer_info(160, 120))
        viewer.video("vp9", [stream("vp9")[0]])  # larger than the stale size
        self.assertTrue(viewer.shows(PICTURES[0]))
        viewer.feed(
            pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=0, width=W, height=H)))
        )
        self.assertEqual(viewer.session.display_size(), (W, H))
        viewer = Viewer()
        viewer.log_in(peer_info(W - 1, H - 1))
        viewer.video("h264", [stream("h264")[0]])
        latest = viewer.session.latest
        assert latest is not None
        self.assertEqual(latest.image.size, (W - 1, H - 1))


# -- arbitrary input ------------------------------------------------------------


@st.composite
def _frame_data(draw: st.DrawFn, codec: str) -> bytes:
    """Random bytes, or a real frame (mostly of C{codec}) with some bytes
    changed, mostly past its first bytes so that it still passes the
    key-frame check and reaches the decoder, and perhaps cut short."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=600))
    if codec not in decodable_codecs() or draw(st.integers(0, 4)) == 0:
        codec = draw(st.sampled_from(sorted(decodable_codecs())))
    data = bytearray(draw(st.sampled_from(stream(codec)))[0])
    low = draw(st.sampled_from([0, 12, 40]))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(min(low, len(data) - 1), len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@st.composite
def _video_payloads(draw: st.DrawFn) -> bytes:
    """The bytes of a Message.video_frame: a VideoFrame of any member with
    arbitrary frames (key flags mostly set), or arbitrary bytes as the
    VideoFrame."""
    if draw(st.integers(0, 9)) == 0:
        raw = draw(st.binary(max_size=200))
    else:
        vf = pb.VideoFrame(display=draw(st.integers(-(2**31), 2**31 - 1)))
        codec = draw(st.sampled_from(CODECS))
        member = getattr(vf, codec + "s")
        member.SetInParent()
        for _ in range(draw(st.integers(0, 3))):
            member.frames.append(
                pb.EncodedVideoFrame(
                    data=draw(_frame_data(codec)),
                    key=draw(st.sampled_from([True, True, False])),
                    pts=draw(st.integers(-(2**63), 2**63 - 1)),
                )
            )
        raw = vf.SerializeToString()
    return b"\x32" + _varint(len(raw)) + raw


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class ArbitraryVideoTests(unittest.SynchronousTestCase):
    @given(st.lists(_video_payloads(), min_size=1, max_size=6), st.booleans())
    def test_arbitrary_video_frames(self, payloads: list[bytes], rustdesk: bool) -> None:
        """Whatever VideoFrames a host sends, nothing raises out of
        dataReceived and nothing is logged as an internal error; the session
        either survives (and shows the next honest key frame) or was closed
        with a reason; key-frame requests stay at one per frame at most and
        each codec is withdrawn at most once."""
        viewer = Viewer(rustdesk=rustdesk)
        viewer.log_in()
        for payload in payloads:
            viewer.session.dataReceived(encode_frame(payload))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertLessEqual(viewer.refreshes(), len(payloads))
        withdrawn = [
            c
            for dec in viewer.announcements()
            for c in CODECS
            if getattr(dec, "ability_" + c) == 0 and c in decodable_codecs()
        ]
        self.assertLessEqual(len(viewer.announcements()), len(CODECS))
        self.assertEqual(set(withdrawn), viewer.session.unsupported)
        stats = viewer.session.stats
        self.assertEqual(stats.decode_errors, viewer.session.decoder.errors)
        if viewer.transport.disconnecting:
            return
        viewer.video("vp9", [stream("vp9")[0]])
        self.assertTrue(viewer.shows(PICTURES[0]))


# -- the key-frame parsers --------------------------------------------------------


def _obu(obu_type: int, payload: bytes, *, sized: bool = True) -> bytes:
    header = (obu_type << 3) | (0x02 if sized else 0)
    return bytes([header]) + (_varint(len(payload)) if sized else b"") + payload


_TD = _obu(2, b"")
_SEQ = _obu(1, b"\x00\x00\x00")  # profile 0, not a still picture
_SEQ_REDUCED = _obu(1, b"\x18")  # still_picture, reduced_still_picture_header


class KeyFrameParserTests(unittest.SynchronousTestCase):
    def test_av1(self) -> None:
        """AV1: a temporal unit with a sequence header whose first frame
        header is a shown KEY_FRAME; an inter frame, a missing sequence
        header, a cut or forbidden OBU are not."""
        key = _obu(6, b"\x10\x00")  # show_existing 0, KEY_FRAME, show_frame 1
        inter = _obu(6, b"\x30\x00")  # INTER_FRAME
        self.assertTrue(key_frame("av1", _TD + _SEQ + key))
        self.assertTrue(key_frame("av1", _TD + _SEQ + _obu(3, b"\x10") + _obu(4, b"\x00")))
        self.assertTrue(key_frame("av1", _TD + _SEQ + _obu(6, b"\x10\x00", sized=False)))
        self.assertTrue(key_frame("av1", _SEQ_REDUCED + _obu(6, b"\x00")))
        self.assertFalse(key_frame("av1", _TD + _SEQ + inter))
        self.assertFalse(key_frame("av1", _TD + key))
        self.assertFalse(key_frame("av1", _TD + _SEQ + key[:-1]))
        self.assertFalse(key_frame("av1", b"\x80" + _SEQ + key))
        self.assertFalse(key_frame("av1", _TD + b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff"))
        self.assertFalse(key_frame("av1", _TD + _SEQ))
        self.assertFalse(key_frame("av1", b""))

    def test_vp8(self) -> None:
        """VP8: frame-tag bit 0 clear and the start code 9d 01 2a."""
        key = b"\x50\x06\x00\x9d\x01\x2a\x40\x01\xf0\x00"
        self.assertTrue(key_frame("vp8", key))
        self.assertFalse(key_frame("vp8", b"\x51" + key[1:]))  # inter frame
        self.assertFalse(key_frame("vp8", key[:3] + b"\x9d\x01\x2b" + key[6:]))
        self.assertFalse(key_frame("vp8", key[:9]))

    def test_h265(self) -> None:
        """H.265: an Annex-B access unit with an IRAP picture (BLA, IDR, CRA)."""
        params = b"\x00\x00\x00\x01\x40\x01\x0c" + b"\x00\x00\x00\x01\x42\x01\x01"
        for nal_type, key in ((19, True), (20, True), (21, True), (16, True), (1, False)):
            au = params + b"\x00\x00\x01" + bytes([nal_type << 1, 1]) + b"\xaf"
            self.assertEqual(key_frame("h265", au), key, nal_type)
        self.assertFalse(key_frame("h265", params))
        self.assertFalse(key_frame("h265", b"\x00\x00\x01"))

    def test_unknown_codec(self) -> None:
        self.assertFalse(key_frame("h266", stream("h264")[0][0]))

    @given(st.sampled_from([*CODECS, "h266"]), st.binary(max_size=400))
    def test_parsers_never_raise(self, codec: str, data: bytes) -> None:
        """Any bytes, any codec name: a bool, never an exception."""
        self.assertIsInstance(key_frame(codec, data), bool)

    @given(
        st.lists(st.tuples(st.integers(0, 15), st.binary(max_size=12), st.booleans()), max_size=6),
        st.binary(max_size=4),
    )
    def test_av1_obu_sequences(self, obus: list[tuple[int, bytes, bool]], tail: bytes) -> None:
        """Random OBU sequences: never raises, and a key frame is only ever
        found after a sequence header."""
        data = b"".join(_obu(t, p, sized=s) for t, p, s in obus) + tail
        if key_frame("av1", data):
            self.assertIn(1, [t for t, _, _ in obus])


class KeyFrameRequestsTests(unittest.SynchronousTestCase):
    def test_one_outstanding_then_repeats_spaced_and_capped(self) -> None:
        """One request at once, then one per REPEAT_INTERVAL while nothing
        decodes, at most MAX_REPEATS repeats in a session; a picture ends
        the wait and the next wait starts with a request at once."""
        req = KeyFrameRequests()
        self.assertTrue(req.need(0.0))
        self.assertFalse(req.need(9.9))
        now = 0.0
        for i in range(KeyFrameRequests.MAX_REPEATS):
            now += KeyFrameRequests.REPEAT_INTERVAL
            self.assertTrue(req.need(now), i)
            self.assertFalse(req.need(now + 5), i)
        self.assertFalse(req.need(now + 100))
        self.assertEqual(req.sent, 1 + KeyFrameRequests.MAX_REPEATS)
        req.picture_decoded()
        self.assertFalse(req.outstanding)
        self.assertTrue(req.need(now + 200))
        self.assertFalse(req.need(now + 300))

    def test_decoder_failure_count(self) -> None:
        """VideoDecoder.gave_up: when the first frame tried fails, or after
        MAX_DECODE_FAILURES in a row; a picture or a reset starts over."""
        key, broken = stream("vp9")[0][0], broken_key("vp9")
        dec = VideoDecoder("vp9")
        dec.decode(broken, True)
        self.assertTrue(dec.gave_up)
        dec.reset("vp9")
        self.assertFalse(dec.gave_up)
        dec.decode(key, True)
        for i in range(MAX_DECODE_FAILURES):
            self.assertFalse(dec.gave_up, i)
            dec.decode(broken, True)
        self.assertTrue(dec.gave_up)
        self.assertIsNotNone(dec.decode(key, True))
        self.assertEqual((dec.failures_in_a_row, dec.errors), (0, 1 + MAX_DECODE_FAILURES))
        self.flushLoggedErrors()


# -- over loopback TCP, against a host that negotiates as RustDesk does ----------


class _RustDeskLikeHost(MessageProtocol):
    """Just enough of a RustDesk host: Hash, LoginResponse with PeerInfo, the
    codec negotiated from the viewer's SupportedDecoding (rustdesk_host_codec,
    AV1 test passed), a key frame on refresh_video, renegotiation on a new
    SupportedDecoding."""

    def __init__(self) -> None:
        self.codec: str | None = None
        self.decoding: pb.SupportedDecoding | None = None
        self.refreshes = 0
        self.logged_in: Deferred[str] = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.send_message(pb.Message(hash=pb.Hash(salt="s", challenge="c")))

    def message_received(self, msg: pb.Message) -> None:
        kind = msg.WhichOneof("union")
        if kind == "login_request":
            self.decoding = msg.login_request.option.supported_decoding
            self.codec = rustdesk_host_codec(self.decoding)
            self.send_message(pb.Message(login_response=pb.LoginResponse(peer_info=peer_info())))
            self.send_frames(0, 2)
            self.logged_in.callback(self.codec)
        elif kind == "misc" and msg.misc.WhichOneof("union") == "refresh_video":
            self.refreshes += 1
            self.send_frames(0, 1)
        elif kind == "misc" and msg.misc.option.HasField("supported_decoding"):
            self.decoding = msg.misc.option.supported_decoding
            self.switch(rustdesk_host_codec(self.decoding))

    def send_frames(self, start: int, end: int) -> None:
        assert self.codec is not None
        self.send_message(video_frame(self.codec, stream(self.codec)[start:end]))

    def switch(self, codec: str) -> None:
        """A new encoder, as when the negotiation result changes: key first."""
        if codec != self.codec:
            self.codec = codec
            self.send_frames(0, 1)


class LoopbackTests(unittest.TestCase):
    @inlineCallbacks
    def test_rustdesk_like_host_over_tcp(self) -> Generator[Deferred[Any], Any, None]:
        """Over real TCP: the host negotiates VP9 from the viewer's login,
        switches to AV1 mid-session, sends a broken frame (the viewer asks
        for a key frame and gets it), and renegotiates to H.264 when the
        viewer withdraws AV1."""
        hosts: list[_RustDeskLikeHost] = []

        def build() -> _RustDeskLikeHost:
            hosts.append(_RustDeskLikeHost())
            return hosts[-1]

        port = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        viewer = ViewerSession(reactor, "123456789", "pw", rustdesk=True)
        reactor.connectTCP("127.0.0.1", port.getHost().port, _OneProtocol(viewer))
        yield viewer.logged_in
        yield until(lambda: hosts and hosts[0].logged_in.called, message="the host's login")
        host = hosts[0]
        self.assertEqual(host.codec, "vp9")
        yield until(lambda: viewer.stats.frames == 2, message="two VP9 frames")
        self.assertLess(mean_error(_latest(viewer), PICTURES[1]), MAX_ERROR)

        host.switch("av1")
        host.send_frames(1, 3)
        yield until(lambda: viewer.stats.frames == 5, message="three AV1 frames")
        self.assertEqual(viewer.stats.codec, "av1")
        self.assertLess(mean_error(_latest(viewer), PICTURES[2]), MAX_ERROR)

        data, _ = stream("av1")[3]
        host.send_message(video_frame("av1", [(flipped(data), False)]))
        yield until(lambda: host.refreshes == 1, message="the viewer's key-frame request")
        yield until(lambda: viewer.stats.frames == 6, message="the key frame")
        self.assertLess(mean_error(_latest(viewer), PICTURES[0]), MAX_ERROR)
        self.assertEqual(viewer.stats.decode_errors, 1)

        # Three AV1 key frames fail in a row (sent at once, before the answer
        # to the key-frame request they cause): the viewer withdraws AV1 and
        # the host, negotiating again from the new SupportedDecoding (VP9
        # preferred), goes back to VP9.
        for _ in range(MAX_DECODE_FAILURES):
            host.send_message(video_frame("av1", [(broken_key("av1"), True)]))
        yield until(lambda: host.codec == "vp9", message="the renegotiation")
        yield until(lambda: viewer.stats.codec == "vp9", message="VP9 again")
        yield until(lambda: viewer.stats.frames == 8, message="the VP9 key frame")
        self.assertLess(mean_error(_latest(viewer), PICTURES[0]), MAX_ERROR)
        assert host.decoding is not None
        self.assertEqual(host.decoding.ability_av1, 0)
        self.assertEqual(viewer.stats.decode_errors, 1 + MAX_DECODE_FAILURES)
        self.assertEqual(host.refreshes, 2)

        viewer.disconnect()
        yield viewer.ended
        self.flushLoggedErrors()


def _latest(viewer: ViewerSession) -> Image.Image:
    assert viewer.latest is not None
    return viewer.latest.image


class _OneProtocol(ClientFactory):
    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._protocol
