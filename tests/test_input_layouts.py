"""Stock RustDesk clients' physical keys under the host's keyboard layout.

A stock client in Map mode sends the X11 keycode of each key pressed; the
host presses that keycode, so the host's layout decides the character: the
key a US keyboard calls "y" types "z" on a German host.  Translate-mode text
arrives as it was typed whatever the host's layout.  The unit tests check
the rules (clicks, held modifiers, lock states, Shift before text, the
backlog bound) on recording backends; the X tests send the messages a stock
client sends through a logged-in host session into a real Xvfb, with
C{setxkbmap} switching its layout, and read what a Tk window received.
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.trial import unittest

from litedesk.input.inject import InputInjector
from litedesk.input.keys import ControlKey, KeyboardMode, KeyInput
from litedesk.input.mouse import MouseButton, Rect
from litedesk.input.results import InjectResult, Refused
from litedesk.input.validation import KeyRef, LockSync, PhysicalKey, plan_key
from litedesk.input.worker import InputWorker
from litedesk.proto import message_pb2 as pb
from litedesk.session.framing import MAX_FRAME_LENGTH, parse_message
from litedesk.session.host_context import Display, HostContext
from litedesk.session.host_session import HostSession
from litedesk.session.input_messages import key_from_proto
from litedesk.session.login import LoginVerifier
from litedesk.session.password import StoredPassword, login_password
from litedesk.wire.bytescodec import FrameDecoder, encode_frame
from tests.support.fakes import FakeStreamer
from tests.support.polling import wait_until
from tests.support.recorder import Recorder, _xlib_display, pressed_keycodes, start_xvfb
from tests.support.skips import requires

C = ControlKey
MAP = pb.KeyboardMode.Map
TRANSLATE = pb.KeyboardMode.Translate

# X11 keycodes (evdev + 8), named by the key a US layout puts there.
US_Y = 29
US_A = 38
US_Q = 24
SHIFT_L = 50
CONTROL_L = 37
ALTGR = 108
CAPS_LOCK = 66
KP_1 = 87
TAB = 23


def key_msg(down: bool, mode: int = MAP, **union: Any) -> pb.Message:
    """A C{Message{key_event}} as a stock client builds it."""
    return pb.Message(key_event=pb.KeyEvent(down=down, mode=mode, **union))  # type: ignore[arg-type]


def map_taps(*codes: int, shift: bool = False, caps: bool = False) -> list[pb.Message]:
    """Map mode while someone taps the keys C{codes}: a down and an up each,
    with Shift_L held around them, and Caps Lock reported as a stock client
    reports it (letter keys only)."""
    mods = [pb.ControlKey.CapsLock] if caps else []
    out = [key_msg(True, chr=SHIFT_L)] if shift else []
    for code in codes:
        out += [key_msg(d, chr=code, modifiers=mods) for d in (True, False)]
    if shift:
        out.append(key_msg(False, chr=SHIFT_L))
    return out


def translate_text(text: str) -> list[pb.Message]:
    """Translate mode: each produced character as C{seq}, down only."""
    return [key_msg(True, TRANSLATE, seq=c) for c in text]


class LockBackend:
    """Records key calls and keeps Caps Lock / Num Lock as X would."""

    def __init__(self, caps: bool = False, num: bool = False) -> None:
        self.calls: list[tuple[str, KeyRef]] = []
        self.caps, self.num = caps, num
        self.fail_on: KeyRef | None = None

    def desktop(self) -> Rect:
        return Rect(0, 0, 1920, 1080)

    def pointer(self) -> tuple[int, int]:
        return (0, 0)

    def move_to(self, x: int, y: int) -> None:
        pass

    def press_button(self, button: MouseButton) -> None:
        pass

    def release_button(self, button: MouseButton) -> None:
        pass

    def scroll(self, dx: int, dy: int) -> None:
        pass

    def press_key(self, key: KeyRef) -> None:
        if key == self.fail_on:
            raise RuntimeError("X said no")
        self.calls.append(("down", key))
        if key == C.CapsLock:
            self.caps = not self.caps
        elif key == C.NumLock:
            self.num = not self.num

    def release_key(self, key: KeyRef) -> None:
        self.calls.append(("up", key))

    def type_text(self, text: str) -> None:
        self.calls.append(("type", text))

    def close(self) -> None:
        pass

    def lock_state(self) -> tuple[bool, bool]:
        return self.caps, self.num


def physical(code: int, *, down: bool = True, mods: list[int] | None = None) -> KeyInput | None:
    ev = pb.KeyEvent(down=down, chr=code, mode=MAP, modifiers=mods or [])  # type: ignore[arg-type]
    return key_from_proto(ev, rustdesk=True)


class SessionRuleTests(unittest.SynchronousTestCase):
    """What key_from_proto makes of a stock client's events (connection.rs)."""

    def test_map_keys_are_physical_clicks_on_down(self) -> None:
        """A key's down becomes a click of its keycode, its up nothing."""
        self.assertEqual(
            physical(US_Y), KeyInput(down=True, press=True, mode=KeyboardMode.Map, keycode=US_Y)
        )
        self.assertIsNone(physical(US_Y, down=False))

    def test_modifiers_are_held_from_down_to_up(self) -> None:
        """Shift, Control, Alt, AltGr and Meta (both sides) go down and up as
        sent, even if the client marked them as a press."""
        for code in (50, 62, 37, 105, 64, ALTGR, 133, 134):
            for down in (True, False):
                k = physical(code, down=down)
                assert k is not None
                self.assertEqual((k.keycode, k.down, k.press), (code, down, False))
        pressed = pb.KeyEvent(press=True, chr=SHIFT_L, mode=MAP)
        k = key_from_proto(pressed, rustdesk=True)
        assert k is not None
        self.assertEqual(plan_key(k).action, "up")

    def test_translate_text_is_typed_once_and_other_fields_ignored(self) -> None:
        """Translate text is one press whatever down says; its unicode and
        control_key events, and Map events without chr, do nothing."""
        for down in (True, False):
            k = key_from_proto(pb.KeyEvent(down=down, seq="ß", mode=TRANSLATE), rustdesk=True)
            assert k is not None
            self.assertEqual((plan_key(k).action, plan_key(k).text), ("press", "ß"))
        for ev in (
            pb.KeyEvent(down=True, unicode=0x61, mode=TRANSLATE),
            pb.KeyEvent(down=True, control_key=pb.ControlKey.Return, mode=TRANSLATE),
            pb.KeyEvent(down=True, seq="x", mode=MAP),
            pb.KeyEvent(down=True, control_key=pb.ControlKey.Return, mode=MAP),
        ):
            self.assertIsNone(key_from_proto(ev, rustdesk=True), ev)

    def test_legacy_and_liteDesk_viewer_events_are_unchanged(self) -> None:
        """Legacy keys keep their meaning; a LiteDesk viewer's Map event is
        not read as a keycode and is refused as before."""
        k = key_from_proto(pb.KeyEvent(down=True, chr=ord("y")), rustdesk=True)
        assert k is not None
        self.assertEqual(plan_key(k).key, "y")
        mine = key_from_proto(pb.KeyEvent(down=True, chr=US_Y, mode=MAP))
        self.assertEqual(mine, KeyInput(down=True, chr=US_Y, mode=KeyboardMode.Map))
        with self.assertRaises(Refused) as e:
            plan_key(mine)
        self.assertEqual(e.exception.result.code, "unsupported")


class KeycodeValidationTests(unittest.SynchronousTestCase):
    def test_lock_states_are_matched_around_keys_that_type(self) -> None:
        """Caps Lock as reported goes with every key but the modifiers, Tab
        and Return; Num Lock only with keypad keys."""
        caps: list[int] = [C.CapsLock, C.NumLock]
        cases: list[tuple[int, list[int], LockSync | None]] = [
            (US_Y, caps, LockSync(True, None)),
            (US_Y, [], LockSync(False, None)),
            (KP_1, caps, LockSync(True, True)),
            (KP_1, [], LockSync(False, False)),
            (SHIFT_L, caps, None),
            (ALTGR, caps, None),
            (TAB, caps, None),
            (36, caps, None),
        ]
        for code, mods, want in cases:
            k = KeyInput(down=True, mode=KeyboardMode.Map, keycode=code, modifiers=list(mods))
            a = plan_key(k)
            self.assertEqual((a.key, a.locks, a.modifiers), (PhysicalKey(code), want, ()), code)
        up = plan_key(KeyInput(mode=KeyboardMode.Map, keycode=US_Y, modifiers=caps))
        self.assertIsNone(up.locks)

    def test_bad_keycodes_are_refused_with_a_reason(self) -> None:
        """Keycodes outside X11's 8-255, of the wrong type or outside Map
        and Translate mode, and garbage modifiers, are refused, never raised."""
        cases: list[tuple[KeyInput, str]] = [
            (KeyInput(press=True, mode=1, keycode=7), "not an X11 keycode"),
            (KeyInput(press=True, mode=1, keycode=256), "not an X11 keycode"),
            (KeyInput(press=True, mode=2, keycode=-1), "not an X11 keycode"),
            (KeyInput(press=True, mode=1, keycode=True), "not an integer"),
            (KeyInput(press=True, mode=1, keycode="29"), "not an integer"),  # type: ignore[arg-type]
            (KeyInput(press=True, mode=0, keycode=US_Y), "not Map or Translate"),
            (KeyInput(press=True, mode=1, keycode=US_Y, chr=97), "more than one"),
            (KeyInput(press=True, mode=1, keycode=US_Y, modifiers=[999]), "unknown ControlKey"),
            (KeyInput(press=True, mode=1, keycode=US_Y, modifiers=[3] * 17), "17 modifiers"),
        ]
        for ev, words in cases:
            with self.assertRaises(Refused) as e:
                plan_key(ev)
            self.assertEqual(e.exception.result.code, "invalid", ev)
            self.assertIn(words, e.exception.result.reason)

    @given(
        st.one_of(st.integers(-(2**40), 2**40), st.none(), st.booleans(), st.floats(), st.text()),
        st.integers(-2, 5),
        st.one_of(st.lists(st.integers(-5, 120), max_size=20), st.none(), st.text(max_size=3)),
    )
    def test_any_keycode_value_is_planned_or_refused(self, code: Any, mode: int, mods: Any) -> None:
        """The keycode parser returns a physical key in 8-255 or a refusal."""
        try:
            a = plan_key(KeyInput(down=True, mode=mode, keycode=code, modifiers=mods))
        except Refused as e:
            self.assertTrue(e.result.reason)
        else:
            assert isinstance(a.key, PhysicalKey)
            self.assertTrue(8 <= a.key.code <= 255)


class InjectorTests(unittest.SynchronousTestCase):
    def apply(self, inj: InputInjector, *events: KeyInput | None) -> None:
        for ev in events:
            assert ev is not None
            result = inj.apply(ev)
            self.assertTrue(result.ok, (ev, result))

    def test_client_caps_lock_is_applied_around_the_key_then_undone(self) -> None:
        """With the client's Caps Lock on and the host's off, the host
        toggles Caps Lock, clicks the key and toggles it back."""
        be = LockBackend()
        inj = InputInjector(be)
        self.apply(inj, physical(US_Y, mods=[C.CapsLock]))
        y = PhysicalKey(US_Y)
        toggle = [("down", C.CapsLock), ("up", C.CapsLock)]
        self.assertEqual(be.calls, [*toggle, ("down", y), ("up", y), *toggle])
        self.assertEqual(be.lock_state(), (False, False))

    def test_host_locks_are_matched_to_the_client_and_restored(self) -> None:
        """Host Caps Lock and Num Lock on, client's off: both are off for a
        keypad key and on again after; a key that matches changes nothing."""
        be = LockBackend(caps=True, num=True)
        inj = InputInjector(be)
        self.apply(inj, physical(KP_1))
        toggles = [c for c in be.calls if c[1] in (C.CapsLock, C.NumLock)]
        self.assertEqual(len(toggles), 8)
        self.assertEqual(be.lock_state(), (True, True))
        be.calls.clear()
        self.apply(inj, physical(US_Y, mods=[C.CapsLock]))
        self.assertEqual(be.calls, [("down", PhysicalKey(US_Y)), ("up", PhysicalKey(US_Y))])

    def test_locks_are_restored_when_the_key_fails(self) -> None:
        be = LockBackend()
        be.fail_on = PhysicalKey(US_Y)
        result = InputInjector(be).apply(physical(US_Y, mods=[C.CapsLock]))
        self.assertEqual(result.code, "backend")
        self.assertEqual(be.lock_state(), (False, False))

    def test_translate_text_lets_go_of_shift_unless_a_hotkey_is_held(self) -> None:
        """The client's held Shift is released before its text (the text is
        what Shift produced there); with Control held too it stays."""
        be = LockBackend()
        inj = InputInjector(be)
        text = key_from_proto(pb.KeyEvent(down=True, seq="a", mode=TRANSLATE), rustdesk=True)
        self.apply(inj, physical(SHIFT_L), text)
        self.assertEqual(be.calls[1:], [("up", PhysicalKey(SHIFT_L)), ("type", "a")])
        self.assertEqual(inj.held_keys, ())
        be.calls.clear()
        self.apply(inj, physical(CONTROL_L), physical(SHIFT_L), text)
        self.assertEqual(be.calls[2:], [("type", "a")])
        self.assertEqual(inj.held_keys, (PhysicalKey(CONTROL_L), PhysicalKey(SHIFT_L)))

    def test_translate_text_is_typed_with_caps_lock_off(self) -> None:
        """A stock client reports no Caps Lock with Translate text: the
        host's is off while the text is typed, and on again after."""
        be = LockBackend(caps=True)
        text = key_from_proto(pb.KeyEvent(down=True, seq="ab", mode=TRANSLATE), rustdesk=True)
        self.apply(InputInjector(be), text)
        self.assertEqual(be.calls[2], ("type", "ab"))
        self.assertEqual(be.lock_state(), (True, False))

    def test_held_physical_keys_are_released(self) -> None:
        be = LockBackend()
        inj = InputInjector(be)
        self.apply(inj, physical(SHIFT_L), physical(ALTGR))
        inj.release_all()
        self.assertEqual(be.calls[-2:], [("up", PhysicalKey(ALTGR)), ("up", PhysicalKey(SHIFT_L))])
        self.assertEqual(inj.held_keys, ())


_key_event_fields = st.fixed_dictionaries(
    {
        "down": st.booleans(),
        "press": st.booleans(),
        "modifiers": st.lists(st.integers(0, 101), max_size=20),
        "mode": st.integers(0, 4),
    }
)
_key_unions = st.one_of(
    st.none(),
    st.tuples(st.just("control_key"), st.integers(0, 101)),
    st.tuples(st.just("chr"), st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1))),
    st.tuples(st.just("unicode"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("seq"), st.text(max_size=20)),
    st.tuples(st.just("win2win_hotkey"), st.integers(0, 2**32 - 1)),
)


class ArbitraryKeyEventTests(unittest.SynchronousTestCase):
    @given(
        st.lists(st.tuples(_key_event_fields, _key_unions), max_size=15),
        st.booleans(),
        st.booleans(),
    )
    def test_any_stock_client_key_events_never_raise_or_stick(
        self, events: list[tuple[dict[str, Any], tuple[str, Any] | None]], caps: bool, num: bool
    ) -> None:
        """Whatever a stock client's KeyEvents hold, the host session's
        conversion and the injector return a result (a refusal with a
        reason, injecting nothing), the host's lock states are as before
        after every event but a lock key's own, and at the end nothing is
        left held."""
        be = LockBackend(caps, num)
        inj = InputInjector(be)
        for fields, union in events:
            ev = pb.KeyEvent(**fields)
            if union is not None:
                setattr(ev, *union)
            k = key_from_proto(ev, rustdesk=True)
            if k is None:
                continue
            before = len(be.calls)
            result = inj.apply(k)
            self.assertIsInstance(result, InjectResult)
            if not result.ok:
                self.assertTrue(result.reason)
                self.assertEqual(be.calls[before:], [])
            if k.control_key in (C.CapsLock, C.NumLock):
                # A Legacy lock key press is the peer's to make.
                caps, num = be.lock_state()
            self.assertEqual(be.lock_state(), (caps, num))
        inj.release_all()
        self.assertEqual(inj.held_keys, ())
        downs = {c[1] for c in be.calls if c[0] == "down"}
        ups = {c[1] for c in be.calls if c[0] == "up"}
        self.assertLessEqual(downs, ups)


class BlockingBackend(LockBackend):
    """Holds the input thread in its first key press until released."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.go = threading.Event()

    def press_key(self, key: KeyRef) -> None:
        self.entered.set()
        self.go.wait(30)
        super().press_key(key)


class BacklogTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_key_flood_is_bounded_but_held_keys_are_still_released(self):
        """With the input thread stuck, a client's key flood stops being
        queued at the backlog bound; the up of a key it holds still is, and
        everything queued runs in order once the thread moves."""
        be = BlockingBackend()
        worker = InputWorker(InputInjector(be), max_pending=2, max_backlog=4)
        self.addCleanup(worker.stop)
        self.addCleanup(be.go.set)
        shift_down = physical(SHIFT_L)
        first = worker.submit(shift_down)
        be.entered.wait(30)
        queued = [worker.submit(physical(US_Y)) for _ in range(3)]
        with capturedLogs() as events:
            flood = [worker.submit(physical(US_Y)) for _ in range(50)]
            # The up of a key that is not held: nothing to release, dropped too.
            flood.append(worker.submit(KeyInput(mode=KeyboardMode.Map, keycode=US_A)))
        # One warning for the backlog, not one per dropped event.
        self.assertEqual([e["pending"] for e in events if e["log_level"] is LogLevel.warn], [4])
        shift_up = worker.submit(physical(SHIFT_L, down=False))
        self.assertEqual(
            {d.result.code for d in flood},  # type: ignore[attr-defined]
            {"overloaded"},
        )
        self.assertEqual(worker.dropped, 51)
        be.go.set()
        results = yield defer.gatherResults([first, *queued, shift_up])
        self.assertTrue(all(r.ok for r in results), results)
        shift, y = PhysicalKey(SHIFT_L), PhysicalKey(US_Y)
        self.assertEqual(be.calls, [("down", shift), *[("down", y), ("up", y)] * 3, ("up", shift)])


# --- real X server ----------------------------------------------------------------

PASSWORD = "layout-test-pw"


class DirectInput:
    """The host context's input, injecting at once (no input thread)."""

    def __init__(self, injector: InputInjector) -> None:
        self.injector = injector
        self.results: list[InjectResult] = []

    def submit(self, ev: object) -> InjectResult:
        result = self.injector.apply(ev)
        self.results.append(result)
        return result

    def release_all(self) -> None:
        self.injector.release_all()


class StockClientSession:
    """A HostSession logged in by a stock RustDesk client (sans-IO transport)."""

    def __init__(self, input_: DirectInput) -> None:
        clock = Clock()
        ctx = HostContext(
            peer_id="123456789",
            verifier=LoginVerifier(clock, StoredPassword.create(PASSWORD), one_time=False),
            clock=clock,
            make_streamer=lambda deliver, buffered, codec: FakeStreamer(),
            displays=[Display(0, 0, 1920, 1080, "screen", primary=True)],
            input=input_,
            hostname="layouthost",
            username="tester",
        )
        self.session = HostSession(ctx, rustdesk=True)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.9", 4000))
        self.session.makeConnection(self.transport)
        self.session.handshakeCompleted()
        (hash_payload,) = FrameDecoder(MAX_FRAME_LENGTH).feed(self.transport.value())
        hash_msg = parse_message(hash_payload)
        assert hash_msg is not None
        self.send(
            pb.Message(
                login_request=pb.LoginRequest(
                    username="123456789",
                    password=login_password(PASSWORD, hash_msg.hash.salt, hash_msg.hash.challenge),
                    my_id="987654321",
                    version="1.4.9",
                    my_platform="Linux",
                )
            )
        )
        assert self.session.state == "active", self.session.state

    def send(self, *msgs: pb.Message) -> None:
        for msg in msgs:
            self.session.dataReceived(encode_frame(msg.SerializeToString()))

    def end(self) -> None:
        self.session.connectionLost()


def _lock_mask(display: str | None) -> int:
    d = _xlib_display(display)
    try:
        return int(d.screen().root.query_pointer().mask)
    finally:
        d.close()


@requires("Xvfb", "tkinter", "setxkbmap")
class LayoutX11Tests(unittest.SynchronousTestCase):
    """A stock client's keys into Xvfb under a US or German host layout."""

    def host(self, layout: str) -> None:
        """Xvfb with C{layout}, then the recorder, which reads that layout
        when it starts, and a logged-in stock-client session."""
        self.xvfb = start_xvfb()
        self.addCleanup(self.xvfb.stop)
        subprocess.run(
            ["setxkbmap", layout], env=self.xvfb.env, check=True, timeout=30, capture_output=True
        )
        self.rec = Recorder(self.xvfb.env)
        self.addCleanup(self.rec.stop)
        self.inj = InputInjector(display=self.xvfb.display)
        self.addCleanup(self.inj.close)
        self.input = DirectInput(self.inj)
        self.client = StockClientSession(self.input)

    def send(self, *msgs: pb.Message) -> None:
        self.client.send(*msgs)
        bad = [r for r in self.input.results if not r.ok]
        self.assertEqual(bad, [])

    def typed(self, expected: str) -> None:
        """Wait until the recorder's field holds C{expected}; compare it."""
        wait_until(
            lambda: self.rec.command("state")["text"] == expected,
            10,
            message=lambda: f"{expected!r}, have {self.rec.command('state')['text']!r}",
        )

    def caps_on(self) -> bool:
        return bool(_lock_mask(self.xvfb.display) & 0x02)

    def test_german_host_types_z_for_the_us_y_key(self) -> None:
        """de: the key a US client calls "y" types "z", with Shift "Z"; the
        key after it (US "a") types "a"; Shift is a physical key too."""
        self.host("de")
        start = self.rec.mark()
        self.send(*map_taps(US_Y), *map_taps(US_Y, shift=True), *map_taps(US_A))
        self.typed("zZa")
        keysyms = [e["keysym"] for e in self.rec.since(start, "KeyPress")]
        self.assertEqual(keysyms, ["z", "Shift_L", "Z", "a"])
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])

    def test_us_host_types_y(self) -> None:
        self.host("us")
        self.send(*map_taps(US_Y), *map_taps(US_Y, shift=True))
        self.typed("yY")

    def test_altgr_on_a_german_host(self) -> None:
        """AltGr (the right Alt key) is held as a key: AltGr+Q is "@" on a
        German host, as on a German keyboard."""
        self.host("de")
        self.send(key_msg(True, chr=ALTGR), *map_taps(US_Q), key_msg(False, chr=ALTGR))
        self.typed("@")

    def test_translate_text_is_unchanged_on_a_us_host(self) -> None:
        self.host("us")
        self.send(*translate_text("yz Zürich @€"))
        self.typed("yz Zürich @€")

    def test_translate_text_is_unchanged_on_a_german_host(self) -> None:
        """Text typed on the client arrives as typed, though the German host
        has y and z swapped, @ on AltGr and no euro sign at level 1 or 2."""
        self.host("de")
        self.send(*translate_text("yz Zürich @€"))
        self.typed("yz Zürich @€")

    def test_client_caps_lock_applies_and_host_caps_lock_is_kept(self) -> None:
        """A letter reported with the client's Caps Lock is a capital though
        the host's Caps Lock is off, which it stays; with the host's on and
        the client's off, the letter is small, Translate text is as typed,
        and the host's Caps Lock is still on afterwards."""
        self.host("de")
        self.send(*map_taps(US_Y, caps=True))
        self.typed("Z")
        self.assertFalse(self.caps_on())
        # The host's own Caps Lock, turned on at the host (not by the client).
        self.assertTrue(self.inj.apply(KeyInput(press=True, control_key=C.CapsLock)).ok)
        self.assertTrue(self.caps_on())
        self.send(*map_taps(US_Y), *translate_text("aB"))
        self.typed("ZzaB")
        self.assertTrue(self.caps_on())

    def test_translate_text_after_a_held_shift(self) -> None:
        """The client holds Shift and sends text Shift already produced
        there (Caps Lock + Shift gives "a"): the text is typed as sent."""
        self.host("us")
        self.send(key_msg(True, chr=SHIFT_L), *translate_text("a"), key_msg(False, chr=SHIFT_L))
        self.typed("a")

    def test_held_keys_are_released_when_the_session_ends(self) -> None:
        """Shift and AltGr held by a client that disconnects are released."""
        self.host("de")
        self.send(key_msg(True, chr=SHIFT_L), key_msg(True, chr=ALTGR))
        wait_until(lambda: pressed_keycodes(self.xvfb.display) == [SHIFT_L, ALTGR], 10)
        self.client.end()
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])
        self.assertEqual(self.inj.held_keys, ())

    def test_keycode_without_a_key_is_refused_with_a_reason(self) -> None:
        """A keycode with no key on the host's layout is refused with a
        reason (and types nothing); one outside X11's range too."""
        self.host("de")
        d = _xlib_display(self.xvfb.display)
        try:
            first = d.display.info.min_keycode
            rows = d.get_keyboard_mapping(first, d.display.info.max_keycode - first + 1)
        finally:
            d.close()
        empty = max(first + i for i, row in enumerate(rows) if not any(row))
        start = self.rec.mark()
        self.client.send(key_msg(True, chr=empty), key_msg(True, chr=300))
        codes = [(r.code, r.reason) for r in self.input.results]
        self.assertEqual([c for c, _ in codes], ["unsupported", "invalid"])
        self.assertIn(f"keycode {empty} has no key", codes[0][1])
        self.assertIn("not an X11 keycode", codes[1][1])
        self.rec.sync()
        self.assertEqual(self.rec.since(start, "KeyPress"), [])
