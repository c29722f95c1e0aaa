"""Unit tests for the viewer window's pure parts: coordinate mapping through
the current scaling, the Tk key-mapping table, held-key release, the host
key, the "Send keys" menu and the config file."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, ClassVar

import zstandard
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.mouse import MouseButton, MouseType, Rect, decode_mask, encode_mask
from litedesk.proto import message_pb2 as pb
from litedesk.session.viewer_session import SessionError
from litedesk.viewer.config import MAX_RECENT, ViewerConfig, load_config, save_config
from litedesk.viewer.connection import (
    FailureReason,
    failure_reason,
    is_direct,
    reason_phrase,
)
from litedesk.viewer.geometry import (
    canvas_mapping,
    cursor_scale,
    drawn_size,
    monitor_rect,
    view_mapping,
)
from litedesk.viewer.keymap import (
    SEND_KEYS,
    HeldKeys,
    HostKey,
    combo_event,
    key_for_tk_event,
    modifiers_for_state,
)
from litedesk.viewer.pointer import mouse_events, wheel_step
from litedesk.viewer.remote_cursor import (
    LOCAL_CURSOR_HOLD,
    cursor_corner,
    cursor_spot,
    decode_cursor,
)
from litedesk.viewer.route import ConnectError
from litedesk.viewer.status_bar import RateMeter, fmt_rate

FHD = Rect(0, 0, 1920, 1080)


class MappingTests(SynchronousTestCase):
    def test_fit_scales_with_aspect_and_letterbox(self) -> None:
        """A 1920x1080 monitor in a 1200x777 window is scaled by 0.625 and centred vertically."""
        m = view_mapping(FHD, "fit", 1200, 777)
        self.assertAlmostEqual(m.scale, 0.625)
        self.assertEqual(drawn_size(m), (1200, 675))
        self.assertEqual(m.offset_x, 0)
        self.assertAlmostEqual(m.offset_y, 51.0)

    def test_fit_corners_and_centre_at_several_scales(self) -> None:
        """At scales 0.25 to 2, the drawn image's corners and centre map to the
        remote corners and centre (within one remote pixel per window pixel)."""
        for vw, vh in ((480, 270), (960, 540), (1200, 777), (1920, 1080), (3840, 2160), (800, 900)):
            m = view_mapping(FHD, "fit", vw, vh)
            w, h = drawn_size(m)
            tol = max(1, int(1 / m.scale) + 1)
            top_left = m.to_remote(m.offset_x, m.offset_y)
            bottom_right = m.to_remote(m.offset_x + w - 1, m.offset_y + h - 1)
            centre = m.to_remote(m.offset_x + w / 2, m.offset_y + h / 2)
            self.assertLessEqual(max(top_left), tol, (vw, vh))
            self.assertLessEqual(abs(bottom_right[0] - 1919), tol, (vw, vh))
            self.assertLessEqual(abs(bottom_right[1] - 1079), tol, (vw, vh))
            self.assertLessEqual(abs(centre[0] - 960), tol)
            self.assertLessEqual(abs(centre[1] - 540), tol)

    def test_round_trip_remote_local_remote(self) -> None:
        """Every remote point drawn at scale s and clicked there comes back exactly
        when s >= 1, and within 1/s pixels below 1."""
        for vw in (640, 1200, 1920, 2880):
            m = view_mapping(FHD, "fit", vw, vw * 9 // 16)
            for rx, ry in ((0, 0), (17, 900), (321, 234), (1919, 1079), (1000, 5)):
                lx, ly = m.to_local(rx, ry)
                bx, by = m.to_remote(round(lx), round(ly))
                tol = 0 if m.scale >= 1 else int(1 / m.scale) + 1
                self.assertLessEqual(abs(bx - rx), tol, (vw, rx, ry))
                self.assertLessEqual(abs(by - ry), tol, (vw, rx, ry))

    def test_second_monitor_offset(self) -> None:
        """Points on a second monitor at x=1920 come out in virtual-desktop coordinates."""
        m = view_mapping(Rect(1920, 0, 1280, 1024), "fit", 640, 512)
        self.assertEqual(m.to_remote(0, 0), (1921, 1))  # pixel centre at scale 0.5
        self.assertEqual(m.to_remote(320, 256), (1920 + 641, 513))

    def test_outside_the_image_clamps(self) -> None:
        """Dragging into the letterbox or out of the window keeps the pointer on the monitor."""
        m = view_mapping(FHD, "fit", 1200, 777)
        self.assertEqual(m.to_remote(-50, 10), (0, 0))
        self.assertEqual(m.to_remote(5000, 5000), (1919, 1079))

    def test_one_to_one_scrolled_and_centred(self) -> None:
        """1:1 mode: one remote pixel per window pixel, shifted by the scroll
        position; a small monitor is centred in a large window."""
        m = view_mapping(FHD, "1:1", 1200, 777, scroll_x=300, scroll_y=100)
        self.assertEqual(m.scale, 1.0)
        self.assertEqual(m.to_remote(0, 0), (300, 100))
        self.assertEqual(m.to_remote(10, 20), (310, 120))
        small = view_mapping(Rect(0, 0, 800, 600), "1:1", 1000, 800)
        self.assertEqual(small.to_remote(100, 100), (0, 0))
        self.assertEqual(small.to_remote(500, 400), (400, 300))


class MouseEventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.m = view_mapping(FHD, "fit", 960, 540)  # scale 0.5

    def test_press_moves_first_then_presses(self) -> None:
        """A left press at window (100, 50) at scale 0.5 sends a move to remote (201, 101)
        (the window pixel is sampled at its centre), then left down there."""
        evs = mouse_events("press", 1, self.m, 100, 50, 0)
        self.assertEqual([decode_mask(e.mask) for e in evs], [(0, 0), (1, MouseButton.LEFT)])
        self.assertEqual([(e.x, e.y) for e in evs], [(201, 101), (201, 101)])

    def test_buttons_wheel_and_modifiers(self) -> None:
        """Right and middle map to their bits, wheel notches to WHEEL deltas, Ctrl is carried."""
        (up,) = mouse_events("release", 3, self.m, 10, 10, 0)
        self.assertEqual(decode_mask(up.mask), (MouseType.UP, MouseButton.RIGHT))
        mid = mouse_events("press", 2, self.m, 10, 10, 0)[-1]
        self.assertEqual(decode_mask(mid.mask), (MouseType.DOWN, MouseButton.MIDDLE))
        (wheel,) = mouse_events("press", 4, self.m, 10, 10, 0x4)
        self.assertEqual(wheel.mask, encode_mask(MouseType.WHEEL))
        self.assertEqual((wheel.x, wheel.y), (0, 1))
        self.assertEqual(list(wheel.modifiers), [ControlKey.Control])
        self.assertEqual(mouse_events("release", 5, self.m, 10, 10, 0), [])
        (motion,) = mouse_events("motion", 0, self.m, 480, 270, 0x100)
        self.assertEqual((motion.mask, motion.x, motion.y), (0, 961, 541))


class KeyMapTests(SynchronousTestCase):
    TABLE: ClassVar[list[tuple[Any, ...]]] = [
        # keysym, char, keysym_num, state, expected (field, value, modifiers)
        ("a", "a", 0x61, 0, ("chr", ord("a"), [])),
        ("A", "A", 0x41, 0x1, ("chr", ord("A"), [ControlKey.Shift])),
        ("a", "\x01", 0x61, 0x4, ("chr", ord("a"), [ControlKey.Control])),
        ("eacute", "é", 0xE9, 0, ("chr", ord("é"), [])),
        ("EuroSign", "€", 0x20AC, 0, ("chr", ord("€"), [])),
        ("Return", "\r", 0xFF0D, 0, ("control_key", ControlKey.Return, [])),
        ("BackSpace", "\b", 0xFF08, 0, ("control_key", ControlKey.Backspace, [])),
        (
            "Delete",
            "",
            0xFFFF,
            0xC,
            ("control_key", ControlKey.Delete, [ControlKey.Control, ControlKey.Alt]),
        ),
        ("F5", "", 0xFFC2, 0, ("control_key", ControlKey.F5, [])),
        ("Left", "", 0xFF51, 0x1, ("control_key", ControlKey.LeftArrow, [ControlKey.Shift])),
        ("KP_Enter", "\r", 0xFF8D, 0, ("control_key", ControlKey.NumpadEnter, [])),
        ("space", " ", 0x20, 0, ("control_key", ControlKey.Space, [])),
        ("Tab", "\t", 0xFF09, 0x8, ("control_key", ControlKey.Tab, [ControlKey.Alt])),
        ("Super_L", "", 0xFFEB, 0, ("control_key", ControlKey.Meta, [])),
        # Modifier keys go as named keys without repeating themselves as modifiers.
        ("Control_L", "", 0xFFE3, 0x4, ("control_key", ControlKey.Control, [])),
        ("Shift_R", "", 0xFFE2, 0x1, ("control_key", ControlKey.RShift, [])),
        ("Alt_R", "", 0xFFEA, 0, ("control_key", ControlKey.RAlt, [])),
    ]

    def test_table(self) -> None:
        """Tk events for characters, unicode, named keys and modifiers become the
        right KeyEvent field, with the held modifiers (NumLock and AltGr bits ignored)."""
        for keysym, char, num, state, (field, value, mods) in self.TABLE:
            for extra in (0, 0x10):  # NumLock on must change nothing
                k = key_for_tk_event(keysym, char, num, state | extra, down=True)
                assert k is not None, keysym
                self.assertEqual(getattr(k, field), value, keysym)
                self.assertEqual(k.modifiers, [int(m) for m in mods], keysym)
                self.assertTrue(k.down)

    def test_unsendable_keys(self) -> None:
        """Keys the protocol cannot express (F13, unknown keysyms) produce nothing."""
        self.assertIsNone(key_for_tk_event("F13", "", 0xFFCA, 0, down=True))
        self.assertIsNone(key_for_tk_event("XF86Launch1", "", 0x1008FF41, 0, down=True))

    def test_modifiers_for_state(self) -> None:
        """Shift, Control, Alt (Mod1) and Super (Mod4) bits map; Lock, NumLock, buttons do not."""
        self.assertEqual(modifiers_for_state(0), [])
        self.assertEqual(
            modifiers_for_state(0x1 | 0x4 | 0x8 | 0x40 | 0x2 | 0x10 | 0x100),
            [ControlKey.Control, ControlKey.Shift, ControlKey.Alt, ControlKey.Meta],
        )

    def test_held_keys_by_keycode(self) -> None:
        """A release undoes what its press sent, even when the keysym changed in
        between (Shift let go before "H"), and focus loss releases the rest, modifiers last."""
        held = HeldKeys()
        shift = KeyInput(down=True, control_key=int(ControlKey.Shift))
        big_h = KeyInput(down=True, chr=ord("H"), modifiers=[int(ControlKey.Shift)])
        held.down(50, shift)
        held.down(43, big_h)
        held.down(43, big_h)  # auto-repeat
        up = held.up(50)
        assert up is not None
        self.assertEqual((up.control_key, up.down), (ControlKey.Shift, False))
        self.assertIsNone(held.up(50))  # never sent twice
        ctrl = KeyInput(down=True, control_key=int(ControlKey.Control))
        held.down(37, ctrl)
        ups = held.release_all()
        self.assertEqual(
            [(u.chr, u.control_key, u.down, u.modifiers) for u in ups],
            [(ord("H"), None, False, []), (None, ControlKey.Control, False, [])],
        )
        self.assertEqual(len(held), 0)

    def test_host_key(self) -> None:
        """The host key matches its keysym only, can be sent on through the menu,
        and an unknown name is refused."""
        hk = HostKey("F8")
        self.assertTrue(hk.matches("F8"))
        self.assertFalse(hk.matches("F9"))
        self.assertEqual(hk.send_event().control_key, ControlKey.F8)
        self.assertTrue(hk.send_event().press)
        self.assertEqual(HostKey("Pause").send_event().control_key, ControlKey.Pause)
        self.assertRaises(ValueError, HostKey, "NoSuchKey")

    def test_send_keys_menu(self) -> None:
        """Every "Send keys" entry parses; Ctrl+Alt+Del is RustDesk's CtrlAltDel request."""
        for label, combo in SEND_KEYS:
            ev = combo_event(combo)
            self.assertTrue(ev.press, label)
        cad = combo_event("CtrlAltDel")
        self.assertEqual(cad.control_key, ControlKey.CtrlAltDel)
        at = combo_event("alt+Tab")
        self.assertEqual((at.control_key, list(at.modifiers)), (ControlKey.Tab, [ControlKey.Alt]))


class MiscTests(SynchronousTestCase):
    def test_final_reasons(self) -> None:
        """Wrong password and key mismatches are not retried; a drop is."""

        def final(phrase: str) -> bool:
            return failure_reason(SessionError(phrase)).final

        self.assertTrue(final("wrong password (too many attempts, try later)"))
        self.assertTrue(final("host key mismatch"))
        self.assertFalse(final("disconnected"))
        self.assertFalse(final("cannot reach relay"))

    def test_decode_cursor(self) -> None:
        """A zstd RGBA CursorData becomes an RGBA image; damaged data gives None."""
        rgba = bytes([255, 0, 0, 255] * 6)
        shape = pb.CursorData(width=3, height=2, colors=zstandard.ZstdCompressor().compress(rgba))
        im = decode_cursor(shape)
        assert im is not None
        self.assertEqual(
            (im.mode, im.size, im.getpixel((2, 1))), ("RGBA", (3, 2), (255, 0, 0, 255))
        )
        self.assertIsNone(decode_cursor(pb.CursorData(width=3, height=2, colors=b"junk")))
        self.assertIsNone(decode_cursor(pb.CursorData(width=0, height=2, colors=b"")))


class ConfigTests(SynchronousTestCase):
    def test_round_trip_mode_and_recent(self) -> None:
        """Saved settings load back, the file is 0600, and recent hosts are
        most-recent-first without duplicates, capped."""
        path = Path(self.mktemp()) / "sub" / "viewer.json"
        cfg = ViewerConfig(server="srv:21116", key="K" * 44)
        for i in range(MAX_RECENT + 3):
            cfg.add_recent(f"host{i}", now=float(i))
        cfg.add_recent("host5", now=100.0)
        save_config(cfg, path)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        back = load_config(path)
        self.assertEqual((back.server, back.key), ("srv:21116", "K" * 44))
        ids = [r.peer_id for r in back.recent]
        self.assertEqual(ids[0], "host5")
        self.assertEqual(len(ids), MAX_RECENT)
        self.assertEqual(len(set(ids)), len(ids))
        self.assertNotIn("password", path.read_text())

    def test_broken_file_gives_defaults(self) -> None:
        """A damaged config file does not stop the viewer: defaults are used."""
        path = Path(self.mktemp())
        path.write_text("{not json")
        self.assertEqual(load_config(path), ViewerConfig())
        path.write_text('{"server": 5, "fps": -3, "recent": [{"peer_id": "x"}, 7]}')
        cfg = load_config(path)
        self.assertEqual((cfg.server, cfg.fps, [r.peer_id for r in cfg.recent]), ("", 0, ["x"]))


class GeometryTests(SynchronousTestCase):
    def test_monitor_rect_from_the_host_list(self) -> None:
        """The shown monitor's origin comes from the host's list (the first one when
        the index is stale), its size from the frame."""
        mons = [pb.DisplayInfo(x=0, y=0, width=1920, height=1080), pb.DisplayInfo(x=1920, y=0)]
        self.assertEqual(monitor_rect(mons, 1, 1280, 1024), Rect(1920, 0, 1280, 1024))
        self.assertEqual(monitor_rect(mons, 7, 800, 600), Rect(0, 0, 800, 600))
        self.assertEqual(monitor_rect([], 0, 800, 600), Rect(0, 0, 800, 600))

    def test_canvas_mapping_fit_and_one_to_one(self) -> None:
        """Fit scales into the canvas; 1:1 keeps scale 1 at the canvas origin when the
        picture is larger (the canvas scrolls), and centres a smaller picture."""
        fit = canvas_mapping(FHD, "fit", 1200, 777)
        self.assertAlmostEqual(fit.scale, 0.625)
        big = canvas_mapping(FHD, "1:1", 1200, 777)
        self.assertEqual((big.scale, big.offset_x, big.offset_y), (1.0, 0.0, 0.0))
        self.assertEqual(big.to_remote(1919, 1079), (1919, 1079))
        small = canvas_mapping(Rect(0, 0, 800, 600), "1:1", 1000, 800)
        self.assertEqual((small.offset_x, small.offset_y), (100.0, 100.0))

    def test_cursor_follows_local_pointer_then_host(self) -> None:
        """The cursor is drawn at the local pointer for half a second after it moved,
        then where the host reports it, hot spot included, shrunk with the picture."""
        m = view_mapping(FHD, "fit", 960, 540)  # scale 0.5
        self.assertEqual(cursor_scale(m), 0.5)
        self.assertEqual(cursor_scale(view_mapping(FHD, "fit", 3840, 2160)), 1.0)
        spot = cursor_spot(m, 10.0, (30.0, 40.0), 10.0 - LOCAL_CURSOR_HOLD / 2, (200, 100))
        self.assertEqual(spot, (30.0, 40.0))
        spot = cursor_spot(m, 10.0, (30.0, 40.0), 10.0 - LOCAL_CURSOR_HOLD, (200, 100))
        self.assertEqual(spot, m.to_local(200, 100))
        self.assertIsNone(cursor_spot(m, 10.0, None, 0.0, None))
        shape = pb.CursorData(hotx=10, hoty=4)
        self.assertEqual(cursor_corner((100.0, 50.0), shape, 0.5), (95, 48))

    def test_wheel_step(self) -> None:
        """Windows reports 120 per notch, macOS 1."""
        self.assertEqual([wheel_step(d) for d in (120, -240, 1, -3)], [1, -2, 1, -3])


class FailureReasonTests(SynchronousTestCase):
    def test_every_phrase_the_lower_layers_use(self) -> None:
        """The route's and the session's phrases (as the headless mode prints them)
        name their kind; unknown text is OTHER, never a final reason."""
        cases = [
            (ConnectError("unknown id"), FailureReason.UNKNOWN_ID),
            (ConnectError("host offline"), FailureReason.HOST_OFFLINE),
            (ConnectError("key mismatch", "unsigned"), FailureReason.KEY_MISMATCH),
            (SessionError("host key mismatch", "x"), FailureReason.HOST_KEY_MISMATCH),
            (SessionError("wrong password", "Wrong Password"), FailureReason.WRONG_PASSWORD),
            (
                SessionError("wrong password (too many attempts, try in a minute)"),
                FailureReason.WRONG_PASSWORD,
            ),
            (SessionError("view only", "no input"), FailureReason.VIEW_ONLY),
            (
                ConnectError("cannot reach rendezvous server", "refused"),
                FailureReason.RENDEZVOUS_UNREACHABLE,
            ),
            (ConnectError("cannot reach host on the LAN", "t"), FailureReason.HOST_UNREACHABLE),
            (SessionError("timed out waiting for the login"), FailureReason.TIMED_OUT),
            (ConnectError("relay refused", "busy"), FailureReason.RELAY_REFUSED),
            (SessionError("disconnected", "gone"), FailureReason.DISCONNECTED),
            (ConnectError("Some server text"), FailureReason.OTHER),
        ]
        for err, want in cases:
            self.assertEqual(failure_reason(err), want, str(err))
        self.assertEqual(reason_phrase(ConnectError("relay refused", "busy")), "relay refused")
        self.assertEqual(reason_phrase(ValueError("plain")), "plain")

    @given(st.sampled_from(list(FailureReason)), st.text(max_size=40))
    def test_phrase_with_any_detail(self, reason: FailureReason, detail: str) -> None:
        """An error built from a reason's phrase and any detail maps back to that reason."""
        if reason in (FailureReason.USAGE, FailureReason.OTHER):
            return
        self.assertEqual(failure_reason(SessionError(reason.value, detail)), reason)
        self.assertEqual(failure_reason(ConnectError(reason.value + detail)), reason)

    @given(st.text(max_size=60))
    def test_any_text_is_classified(self, text: str) -> None:
        """Any message gets a reason; only known phrases are final."""
        r = failure_reason(Exception(text))
        if r.final:
            self.assertTrue(text.startswith(r.value))

    @given(st.text(alphabet="0123456789abcdef-", min_size=1, max_size=20))
    def test_ids_are_not_direct(self, peer: str) -> None:
        """A host id (no dot, colon or bracket) goes through the server; HOST:PORT,
        an IP or [v6] is dialled."""
        self.assertFalse(is_direct(peer))
        self.assertTrue(is_direct(peer + ":21118"))
        self.assertTrue(is_direct("[::1]:5"))
        self.assertTrue(is_direct("10.0.0.1"))


class RateTests(SynchronousTestCase):
    def test_rates_per_second(self) -> None:
        """Received and shown frame rates and bit rate are measured over at least a
        second, and formatted in kbit/s or Mbit/s."""
        meter = RateMeter()
        meter.sample(0.0, 0, 0, 0)
        meter.sample(0.5, 15, 10, 50_000)
        self.assertEqual(meter.rates, (0.0, 0.0, 0.0))
        meter.sample(1.0, 30, 20, 125_000)
        self.assertEqual(meter.rates, (30.0, 20.0, 1_000_000.0))
        self.assertEqual((fmt_rate(1_000_000.0), fmt_rate(640_000.0)), ("1.0 Mbit/s", "640 kbit/s"))
