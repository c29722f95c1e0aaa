"""The host's session messages as stock RustDesk clients send and expect them.

Byte strings marked T5, T10-T14 are the computed vectors of the RustDesk
session spec (§10): they are parsed here, never compared as our output, since
field order is not fixed.  Sessions run sans-IO: a Clock, a string transport,
and recorders for the streamer, the injector and the clipboard.
"""

from __future__ import annotations

import contextlib

import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from litedesk.input.keys import ControlKey, KeyboardMode, KeyInput
from litedesk.input.mouse import MouseButton, MouseInput, MouseType
from litedesk.input.results import Refused
from litedesk.input.validation import PhysicalKey, plan_key, plan_mouse
from litedesk.proto import message_pb2 as pb
from litedesk.session.framing import MAX_FRAME_LENGTH, parse_message
from litedesk.session.host_context import Display, HostContext
from litedesk.session.host_messages import (
    MAX_CLIPBOARD,
    clipboard_message,
    clipboard_text,
    peer_info,
    pick_codec,
    platform_name,
    supports_multi_clipboard,
    version_number,
)
from litedesk.session.host_session import HostSession
from litedesk.session.input_messages import key_from_proto, mouse_from_proto
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.wire.bytescodec import FrameDecoder, encode_frame

from .support.fakes import FakeStreamer

PASSWORD = "rustdesk-messages-pw"
HOST_ID = "123456789"

# §10 vectors (Message bytes, no frame header).
T5_MOVE = "520410141828"
T5_LEFT_DOWN = "5206080910141828"
T5_LEFT_UP = "5206080a10141828"
T5_WHEEL = "520408031801"
T10_LOGIN = (
    "3a620a0931323334353637383912203c6890a42f2d96c9be9f2c4fb76726a2746828a6c7623c0f51bf972940"
    "b8dd9a22093938373635343332312a06546573746572320e520c0801280130013a0410011801502a5a0531"
    "2e342e3962006a054c696e7578"
)
T12_TEST_DELAY = "2a05181920d00f"
T13_MAP_A_LINUX = "7a06080120264801"
T13_LEGACY_A = "7a0408012061"
T13_LEGACY_PRESS_RETURN = "7a041001181b"
T14_CLOSE = "9a01024a00"
T14_REFRESH = "9a01025001"


def _msg(hexbytes: str) -> pb.Message:
    return pb.Message.FromString(bytes.fromhex(hexbytes))


class CodecStreamer(FakeStreamer):
    """A streamer recording what the session asks of it."""

    def __init__(self, codec: str) -> None:
        super().__init__()
        self.codec = codec
        self.calls: list[tuple[str, object]] = []

    def force_keyframe(self) -> None:
        self.calls.append(("keyframe", None))

    def switch_display(self, index: int) -> None:
        self.calls.append(("switch", index))

    def set_quality(self, quality: int) -> None:
        self.calls.append(("quality", quality))

    def set_custom_fps(self, fps: int | float | None) -> None:
        self.calls.append(("fps", fps))

    def set_codec(self, codec: str) -> None:
        self.calls.append(("codec", codec))
        self.codec = codec


class Recorder:
    """The injector and the clipboard watcher: remembers what reaches them."""

    def __init__(self) -> None:
        self.events: list[object] = []
        self.clips: list[str] = []

    def submit(self, ev: object) -> None:
        self.events.append(ev)

    def release_all(self) -> None:
        pass

    def set_from_peer(self, text: str) -> None:
        self.clips.append(text)


DISPLAYS = [Display(0, 0, 1920, 1080, "DP-1", primary=True), Display(1920, 0, 1280, 1024, "HDMI-1")]


class Harness:
    def __init__(self, *, rustdesk: bool = True, view_only: bool = False) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.streamers: list[CodecStreamer] = []

        def make(deliver: object, buffered: object, codec: str) -> CodecStreamer:
            s = CodecStreamer(codec)
            self.streamers.append(s)
            return s

        self.ctx = HostContext(
            peer_id=HOST_ID,
            verifier=LoginVerifier(self.clock, StoredPassword.create(PASSWORD), one_time=False),
            clock=self.clock,
            make_streamer=make,
            displays=list(DISPLAYS),
            input=self.recorder,
            clipboard=self.recorder,
            view_only=view_only,
            hostname="testhost",
            username="tester",
        )
        self.session = HostSession(self.ctx, default_codec="h264", rustdesk=rustdesk)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4000))
        self.session.makeConnection(self.transport)
        self.session.handshakeCompleted()
        self._decoder = FrameDecoder(MAX_FRAME_LENGTH)
        self._read = 0
        self._pending: list[pb.Message] = []

    def replies(self) -> list[pb.Message]:
        """The messages the host sent since the last call."""
        data = self.transport.value()
        new, self._read = data[self._read :], len(data)
        out, self._pending = self._pending, []
        for payload in self._decoder.feed(new):
            msg = parse_message(payload)
            assert msg is not None
            out.append(msg)
        return out

    def send(self, msg: pb.Message | bytes) -> None:
        raw = msg if isinstance(msg, bytes) else msg.SerializeToString()
        self.session.dataReceived(encode_frame(raw))

    def login(self, **fields: object) -> pb.LoginResponse:
        hash_msg = self.replies()[0].hash
        req = pb.LoginRequest(
            username=HOST_ID,
            password=login_password(PASSWORD, hash_msg.salt, hash_msg.challenge),
            my_id="987654321",
            version="1.4.9",
            my_platform="Linux",
        )
        for name, value in fields.items():
            if name == "option":
                req.option.CopyFrom(value)  # type: ignore[arg-type]
            else:
                setattr(req, name, value)
        self.send(pb.Message(login_request=req))
        # What follows the LoginResponse stays for the test to read.
        out = self.replies()
        i = next(i for i, m in enumerate(out) if m.HasField("login_response"))
        self._pending = out[i + 1 :]
        return out[i].login_response


class MouseVectorTests(SynchronousTestCase):
    def test_t5_move_down_up(self) -> None:
        """T5: move, left down (mask 9) and left up (mask 10) at (10, 20)."""
        got = [
            plan_mouse(mouse_from_proto(_msg(v).mouse_event, rustdesk=True))
            for v in (T5_MOVE, T5_LEFT_DOWN, T5_LEFT_UP)
        ]
        self.assertEqual([a.kind for a in got], [MouseType.MOVE, MouseType.DOWN, MouseType.UP])
        self.assertEqual([a.buttons for a in got], [(), (MouseButton.LEFT,), (MouseButton.LEFT,)])
        self.assertEqual({(a.x, a.y) for a in got}, {(10, 20)})

    def test_t5_wheel_up(self) -> None:
        """T5: mask 3, y = -1 is one notch down on the injector's scale."""
        a = plan_mouse(mouse_from_proto(_msg(T5_WHEEL).mouse_event, rustdesk=True))
        self.assertEqual((a.kind, a.x, a.y), (MouseType.WHEEL, 0, -1))

    def test_horizontal_wheel_negated_for_rustdesk_only(self) -> None:
        """A stock client sends x > 0 to scroll left (a RustDesk host negates
        x); the LiteDesk viewer sends x > 0 for right."""
        for kind in (MouseType.WHEEL, MouseType.TRACKPAD):
            ev = pb.MouseEvent(mask=kind, x=2, y=1)
            self.assertEqual(mouse_from_proto(ev, rustdesk=True).x, -2)
            self.assertEqual(mouse_from_proto(ev, rustdesk=True).y, 1)
            self.assertEqual(mouse_from_proto(ev).x, 2)
        move = pb.MouseEvent(mask=MouseType.MOVE, x=5, y=6)
        self.assertEqual(mouse_from_proto(move, rustdesk=True).x, 5)

    def test_modifiers_and_back_forward_buttons(self) -> None:
        ev = pb.MouseEvent(mask=(0x08 << 3) | 1, x=1, y=2)
        ev.modifiers.append(pb.ControlKey.Control)
        a = plan_mouse(mouse_from_proto(ev, rustdesk=True))
        self.assertEqual((a.buttons, a.modifiers), ((MouseButton.BACK,), (ControlKey.Control,)))


class KeyVectorTests(SynchronousTestCase):
    def _plan(self, hexbytes: str) -> tuple[str, object, object] | None:
        k = key_from_proto(_msg(hexbytes).key_event, rustdesk=True)
        if k is None:
            return None
        a = plan_key(k)
        return a.action, a.key, a.text

    def test_t13_map_key_a_down_is_a_click_of_a(self) -> None:
        """T13: Map mode, X11 keycode 38 (the A key) down: that physical key,
        clicked as a RustDesk Linux host does with non-modifier downs."""
        self.assertEqual(self._plan(T13_MAP_A_LINUX), ("press", PhysicalKey(38), None))

    def test_map_key_up_is_dropped(self) -> None:
        ev = _msg(T13_MAP_A_LINUX).key_event
        ev.down = False
        self.assertIsNone(key_from_proto(ev, rustdesk=True))

    def test_t13_legacy(self) -> None:
        """T13: Legacy 'a' down; Legacy press Return."""
        self.assertEqual(self._plan(T13_LEGACY_A), ("press", "a", None))
        self.assertEqual(self._plan(T13_LEGACY_PRESS_RETURN), ("press", ControlKey.Return, None))

    def test_map_modifiers_are_held_not_clicked(self) -> None:
        """Shift_L (keycode 50) goes down and up, so the next key is shifted."""
        for down, action in ((True, "down"), (False, "up")):
            ev = pb.KeyEvent(down=down, chr=50, mode=pb.KeyboardMode.Map)
            k = key_from_proto(ev, rustdesk=True)
            assert k is not None
            self.assertEqual((plan_key(k).action, plan_key(k).key), (action, PhysicalKey(50)))

    def test_map_named_keys(self) -> None:
        """Esc, Return, F1, arrows, keypad 0, Space, Meta: their X11 keycodes
        are pressed as they are, whatever key a US layout puts there."""
        for code in (9, 36, 67, 111, 90, 10, 65, 133):
            ev = pb.KeyEvent(down=True, chr=code, mode=pb.KeyboardMode.Map)
            k = key_from_proto(ev, rustdesk=True)
            assert k is not None
            self.assertEqual(plan_key(k).key, PhysicalKey(code), code)

    def test_translate_mode(self) -> None:
        """Translate: text as seq, other keys as Map codes (Windows VK bits masked)."""
        seq = pb.KeyEvent(down=True, seq="é€", mode=pb.KeyboardMode.Translate)
        k = key_from_proto(seq, rustdesk=True)
        assert k is not None
        self.assertEqual(plan_key(k).text, "é€")
        code = pb.KeyEvent(down=True, chr=(0x70 << 16) | 67, mode=pb.KeyboardMode.Translate)
        k = key_from_proto(code, rustdesk=True)
        assert k is not None
        self.assertEqual(plan_key(k).key, PhysicalKey(67))

    def test_unknown_keycode_is_refused_and_win2win_ignored(self) -> None:
        k = key_from_proto(pb.KeyEvent(down=True, chr=256, mode=pb.KeyboardMode.Map), rustdesk=True)
        assert k is not None
        with self.assertRaises(Refused) as e:
            plan_key(k)
        self.assertIn("not an X11 keycode", e.exception.result.reason)
        self.assertIsNone(key_from_proto(pb.KeyEvent(down=True, win2win_hotkey=5), rustdesk=True))

    def test_liteDesk_viewer_events_pass_unchanged(self) -> None:
        """Without rustdesk the event is what it was before: Map stays Map."""
        ev = _msg(T13_MAP_A_LINUX).key_event
        self.assertEqual(
            key_from_proto(ev), KeyInput(down=True, chr=38, mode=KeyboardMode.Map, modifiers=[])
        )
        up = pb.KeyEvent(down=False, chr=97)
        self.assertEqual(key_from_proto(up), KeyInput(down=False, chr=97))


_key_events = st.builds(
    pb.KeyEvent,
    down=st.booleans(),
    press=st.booleans(),
    modifiers=st.lists(st.integers(0, 101), max_size=20),
    mode=st.integers(0, 3),
)
_key_union = st.one_of(
    st.none(),
    st.tuples(st.just("control_key"), st.integers(0, 101)),
    st.tuples(st.just("chr"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("unicode"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("seq"), st.text(max_size=40)),
    st.tuples(st.just("win2win_hotkey"), st.integers(0, 2**32 - 1)),
)


class ArbitraryInputTests(SynchronousTestCase):
    @given(_key_events, _key_union, st.booleans())
    def test_any_key_event_converts_without_raising(
        self, ev: pb.KeyEvent, union: tuple[str, object] | None, rustdesk: bool
    ) -> None:
        if union is not None:
            setattr(ev, union[0], union[1])
        k = key_from_proto(ev, rustdesk=rustdesk)
        if k is not None:
            with contextlib.suppress(Refused):
                plan_key(k)

    @given(
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**31), 2**31 - 1),
        st.lists(st.integers(0, 101), max_size=20),
    )
    def test_any_mouse_event_converts_without_raising(
        self, mask: int, x: int, y: int, mods: list[int]
    ) -> None:
        ev = pb.MouseEvent(mask=mask, x=x, y=y, modifiers=mods)  # type: ignore[arg-type]
        m = mouse_from_proto(ev, rustdesk=True)
        self.assertIsInstance(m, MouseInput)
        with contextlib.suppress(Refused):
            plan_mouse(m)

    @settings(max_examples=200)
    @given(st.binary(max_size=300))
    def test_any_frame_after_login_never_raises(self, payload: bytes) -> None:
        """Garbage, or any Message, from a logged-in client: handled or ignored."""
        h = Harness()
        h.login()
        h.send(payload)
        self.assertIn(h.session.state, ("active", "closed"))


class ClipboardTests(SynchronousTestCase):
    def test_t11_short_text_is_sent_uncompressed(self) -> None:
        clip = clipboard_message("hello", rustdesk=True).clipboard
        self.assertEqual((clip.compress, clip.content, clip.format), (False, b"hello", pb.Text))

    def test_t11_long_text_is_compressed_and_round_trips(self) -> None:
        clip = clipboard_message("a" * 1000, rustdesk=True, multi=True).multi_clipboards.clipboards
        self.assertEqual(len(clip), 1)
        self.assertTrue(clip[0].compress)
        self.assertLess(len(clip[0].content), 100)
        self.assertEqual(zstandard.ZstdDecompressor().decompress(clip[0].content), b"a" * 1000)
        self.assertEqual(clipboard_text(clip[0]), ("a" * 1000, ""))

    def test_liteDesk_viewers_get_a_plain_clipboard(self) -> None:
        msg = clipboard_message("a" * 1000)
        self.assertEqual(msg.WhichOneof("union"), "clipboard")
        self.assertFalse(msg.clipboard.compress)

    def test_decompression_is_bounded(self) -> None:
        """A small frame claiming 2 MiB is refused without being inflated whole."""
        bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (2 * MAX_CLIPBOARD))
        self.assertLess(len(bomb), 1000)
        text, why = clipboard_text(pb.Clipboard(compress=True, content=bomb))
        self.assertIsNone(text)
        self.assertIn("over", why)
        at_limit = zstandard.ZstdCompressor().compress(b"x" * MAX_CLIPBOARD)
        self.assertEqual(
            clipboard_text(pb.Clipboard(compress=True, content=at_limit))[0], "x" * MAX_CLIPBOARD
        )

    def test_refusals(self) -> None:
        for clip in (
            pb.Clipboard(compress=True, content=b"not zstd"),
            pb.Clipboard(content=b"\xff\xfe"),
            pb.Clipboard(content=b"x", format=pb.ImagePng),
            pb.Clipboard(content=b"x" * (MAX_CLIPBOARD + 1)),
        ):
            text, why = clipboard_text(clip)
            self.assertIsNone(text)
            self.assertTrue(why)

    @given(st.booleans(), st.binary(max_size=200), st.integers(0, 31))
    def test_any_clipboard_parses_without_raising(
        self, compress: bool, content: bytes, fmt: int
    ) -> None:
        text, why = clipboard_text(pb.Clipboard(compress=compress, content=content, format=fmt))  # type: ignore[arg-type]
        self.assertTrue((text is None) == bool(why))

    def test_multi_clipboard_versions(self) -> None:
        """clipboard.rs is_support_multi_clipboard: ≥1.3.0, not iOS, Android ≥1.3.3."""
        self.assertTrue(supports_multi_clipboard("1.4.9", "Windows"))
        self.assertTrue(supports_multi_clipboard("1.3.0", "Linux"))
        self.assertFalse(supports_multi_clipboard("1.2.7", "Windows"))
        self.assertFalse(supports_multi_clipboard("1.4.9", "iOS"))
        self.assertFalse(supports_multi_clipboard("1.4.9", ""))
        self.assertFalse(supports_multi_clipboard("1.3.2", "Android"))
        self.assertTrue(supports_multi_clipboard("1.3.3", "Android"))
        self.assertEqual(version_number("garbage"), (0, 0, 0))
        self.assertEqual(version_number("1.4.9-beta"), (1, 4, 9))


class PeerInfoAndCodecTests(SynchronousTestCase):
    def test_peer_info_has_what_a_client_reads(self) -> None:
        info = peer_info(
            username="u", hostname="h", version="1.4.9", current_display=1, displays=DISPLAYS
        )
        self.assertEqual(info.platform, platform_name())
        self.assertEqual((info.version, info.current_display), ("1.4.9", 1))
        self.assertTrue(info.HasField("features"))
        self.assertFalse(info.features.terminal)
        self.assertTrue(info.encoding.h264)
        d = info.displays[1]
        self.assertEqual((d.x, d.width, d.height, d.online), (1920, 1280, 1024, True))
        self.assertEqual((d.scale, d.original_resolution.width), (1.0, 1280))
        self.assertFalse(d.cursor_embedded)

    def test_platform_names_are_rustdesk_spelling(self) -> None:
        self.assertEqual(platform_name("Darwin"), "Mac OS")
        self.assertEqual(platform_name("Linux"), "Linux")
        self.assertEqual(platform_name("Windows"), "Windows")

    def test_t10_option_gets_vp9(self) -> None:
        """T10's stock decoding set (vp9, vp8, av1, prefer Auto) → VP9."""
        option = _msg(T10_LOGIN).login_request.option
        self.assertEqual(option.supported_decoding.ability_vp9, 1)
        self.assertEqual(pick_codec(option, "h264", rustdesk=True), "vp9")

    def test_rustdesk_codec_choice(self) -> None:
        self.assertEqual(pick_codec(pb.OptionMessage(), "h264", rustdesk=True), "vp9")
        option = pb.OptionMessage()
        option.supported_decoding.ability_h264 = 1
        self.assertEqual(pick_codec(option, "h264", rustdesk=True), "vp9")
        option.supported_decoding.prefer = pb.SupportedDecoding.H264
        self.assertEqual(pick_codec(option, "h264", rustdesk=True), "h264")
        option.supported_decoding.prefer = pb.SupportedDecoding.H265
        self.assertEqual(pick_codec(option, "h264", rustdesk=True), "vp9")
        # A LiteDesk viewer without supported_decoding keeps the host default.
        self.assertEqual(pick_codec(pb.OptionMessage(), "h264"), "h264")


class SessionTests(SynchronousTestCase):
    def test_t10_login_gets_peer_info_and_vp9(self) -> None:
        h = Harness()
        hash_msg = h.replies()[0].hash
        self.assertTrue(hash_msg.challenge)
        # T10 carries a proof for another salt: re-prove it with ours.
        req = _msg(T10_LOGIN).login_request
        req.password = login_password(PASSWORD, hash_msg.salt, hash_msg.challenge)
        h.send(pb.Message(login_request=req))
        resp = next(m.login_response for m in h.replies() if m.HasField("login_response"))
        self.assertEqual(resp.WhichOneof("union"), "peer_info")
        self.assertEqual(len(resp.peer_info.displays), 2)
        self.assertEqual(resp.peer_info.username, "tester")
        self.assertEqual(resp.peer_info.hostname, "testhost")
        self.assertEqual(h.streamers[0].codec, "vp9")
        self.assertTrue(h.streamers[0].started)

    def test_liteDesk_viewer_keeps_its_codec_and_input(self) -> None:
        h = Harness(rustdesk=False)
        h.login()
        self.assertEqual(h.streamers[0].codec, "h264")
        h.send(_msg(T13_MAP_A_LINUX))
        self.assertEqual(h.recorder.events, [KeyInput(down=True, chr=38, mode=KeyboardMode.Map)])

    def test_input_reaches_the_injector(self) -> None:
        h = Harness()
        h.login()
        for v in (T5_MOVE, T5_LEFT_DOWN, T13_MAP_A_LINUX):
            h.send(_msg(v))
        ev = _msg(T13_MAP_A_LINUX).key_event
        ev.down = False
        h.send(pb.Message(key_event=ev))  # dropped
        self.assertEqual(
            h.recorder.events,
            [
                MouseInput(0, 10, 20),
                MouseInput(9, 10, 20),
                KeyInput(press=True, down=True, mode=KeyboardMode.Map, keycode=38),
            ],
        )

    def test_view_only_tells_permissions_and_stays_quiet(self) -> None:
        h = Harness(view_only=True)
        h.login()
        perms = [
            (m.misc.permission_info.permission, m.misc.permission_info.enabled)
            for m in h.replies()
            if m.misc.HasField("permission_info")
        ]
        self.assertEqual(
            sorted(perms),
            [(pb.PermissionInfo.Keyboard, False), (pb.PermissionInfo.Clipboard, False)],
        )
        h.send(_msg(T5_LEFT_DOWN))
        self.assertEqual(h.recorder.events, [])
        self.assertFalse(any(m.HasField("message_box") for m in h.replies()))

    def test_clipboard_both_ways(self) -> None:
        h = Harness()
        h.login()
        h.replies()
        h.session.send_clipboard("b" * 500)
        (msg,) = h.replies()
        clip = msg.multi_clipboards.clipboards[0]
        self.assertTrue(clip.compress)
        packed = zstandard.ZstdCompressor(level=3).compress("ünï".encode() * 100)
        h.send(
            pb.Message(
                multi_clipboards=pb.MultiClipboards(
                    clipboards=[pb.Clipboard(compress=True, content=packed)]
                )
            )
        )
        h.send(pb.Message(clipboard=pb.Clipboard(content=b"plain")))
        self.assertEqual(h.recorder.clips, ["ünï" * 100, "plain"])

    def test_old_client_gets_single_clipboard(self) -> None:
        h = Harness()
        h.login(version="1.2.7")
        h.replies()
        h.session.send_clipboard("hello")
        (msg,) = h.replies()
        self.assertEqual(msg.clipboard.content, b"hello")

    def test_t12_test_delay_echo_gives_the_round_trip(self) -> None:
        """T12's fields on the host's ping; the client echoes it unchanged."""
        h = Harness()
        h.login()
        ping = next(m.test_delay for m in h.replies() if m.HasField("test_delay"))
        self.assertFalse(ping.from_client)
        h.clock.advance(0.025)
        echo = _msg(T12_TEST_DELAY)
        echo.test_delay.time = ping.time
        h.send(echo)
        self.assertEqual(h.session.last_delay, 25)

    def test_t14_refresh_and_switch_display_ask_for_key_frames(self) -> None:
        h = Harness()
        h.login()
        h.send(_msg(T14_REFRESH))
        h.send(pb.Message(misc=pb.Misc(refresh_video_display=0)))
        h.send(pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=1))))
        h.send(pb.Message(misc=pb.Misc(switch_display=pb.SwitchDisplay(display=7))))
        self.assertEqual(
            h.streamers[0].calls, [("keyframe", None), ("keyframe", None), ("switch", 1)]
        )
        answer = [m.misc.switch_display for m in h.replies() if m.misc.HasField("switch_display")]
        self.assertEqual([(a.display, a.x, a.width) for a in answer], [(1, 1920, 1280)])

    def test_option_quality_fps_and_codec_fallback(self) -> None:
        h = Harness()
        h.login()
        option = pb.OptionMessage(image_quality=pb.ImageQuality.Best, custom_fps=15)
        option.supported_decoding.ability_h264 = 1
        option.supported_decoding.prefer = pb.SupportedDecoding.H264
        h.send(pb.Message(misc=pb.Misc(option=option)))
        self.assertEqual(
            h.streamers[0].calls,
            [("quality", pb.ImageQuality.Best), ("fps", 15), ("codec", "h264")],
        )

    def test_t14_close_reason_closes(self) -> None:
        h = Harness()
        h.login()
        h.send(_msg(T14_CLOSE))
        self.assertTrue(h.transport.disconnecting)
