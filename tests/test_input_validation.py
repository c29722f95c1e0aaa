"""The injector's validation and bookkeeping, against a recording backend.

No X server is needed: the backend records what would have been injected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import LogLevel, capturedLogs
from twisted.trial import unittest

from litedesk.input import mouse
from litedesk.input.inject import InputInjector
from litedesk.input.key_combos import parse_combo, text_input
from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.mouse import MouseButton, MouseInput, Rect
from litedesk.input.pynput_backend import PynputBackend
from litedesk.input.results import InjectResult
from litedesk.input.validation import MAX_SEQ_CHARS, KeyRef
from litedesk.input.worker import InputWorker


class RecordingBackend:
    """Records calls; can be told to fail on a given key."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.pos = (0, 0)
        self.fail_on: KeyRef | None = None

    def desktop(self) -> Rect:
        return Rect(0, 0, 1920, 1080)

    def pointer(self) -> tuple[int, int]:
        return self.pos

    def move_to(self, x: int, y: int) -> None:
        self.pos = (x, y)
        self.calls.append(("move", x, y))

    def press_button(self, button: MouseButton) -> None:
        self.calls.append(("bdown", button))

    def release_button(self, button: MouseButton) -> None:
        self.calls.append(("bup", button))

    def scroll(self, dx: int, dy: int) -> None:
        self.calls.append(("scroll", dx, dy))

    def press_key(self, key: KeyRef) -> None:
        if key == self.fail_on:
            raise RuntimeError("X said no")
        self.calls.append(("kdown", key))

    def release_key(self, key: KeyRef) -> None:
        self.calls.append(("kup", key))

    def type_text(self, text: str) -> None:
        self.calls.append(("type", text))

    def close(self) -> None:
        self.calls.append(("close",))


def _injector(**kw: Any) -> tuple[InputInjector, RecordingBackend]:
    be = RecordingBackend()
    return InputInjector(be, **kw), be


C = ControlKey


class KeyBehaviourTests(unittest.SynchronousTestCase):
    def test_press_wraps_the_key_in_its_modifiers(self) -> None:
        """ctrl+alt+Delete presses Control, Alt, Delete, then releases them
        in reverse order."""
        inj, be = _injector()
        self.assertTrue(inj.apply(parse_combo("ctrl+alt+Delete")).ok)
        self.assertEqual(
            be.calls,
            [
                ("kdown", C.Control),
                ("kdown", C.Alt),
                ("kdown", C.Delete),
                ("kup", C.Delete),
                ("kup", C.Alt),
                ("kup", C.Control),
            ],
        )

    def test_ctrl_alt_del_request_is_the_key_combination(self) -> None:
        """The CtrlAltDel ControlKey (a request, not a key) is sent as
        Control+Alt+Delete."""
        inj, be = _injector()
        self.assertTrue(inj.apply(KeyInput(press=True, control_key=100)).ok)
        self.assertEqual([c for c in be.calls if c[0] == "kdown"], [
            ("kdown", C.Control), ("kdown", C.Alt), ("kdown", C.Delete)
        ])  # fmt: skip

    def test_modifiers_are_released_even_when_the_key_fails(self) -> None:
        """If injecting the key itself fails, the modifiers pressed for it are
        still released and the failure is reported, not raised."""
        inj, be = _injector()
        be.fail_on = "a"
        result = inj.apply(parse_combo("ctrl+shift+a"))
        self.assertEqual(result.code, "backend")
        self.assertIn("X said no", result.reason)
        self.assertEqual(be.calls[-2:], [("kup", C.Shift), ("kup", C.Control)])

    def test_held_modifier_is_not_pressed_or_released_again(self) -> None:
        """A modifier the viewer holds down (Shift down) is left alone by a
        later event listing it, and stays held until its own up."""
        inj, be = _injector()
        inj.apply(KeyInput(down=True, control_key=C.Shift))
        be.calls.clear()
        inj.apply(KeyInput(press=True, chr=ord("x"), modifiers=[C.Shift]))
        self.assertEqual(be.calls, [("kdown", "x"), ("kup", "x")])
        self.assertEqual(inj.held_keys, (C.Shift,))
        inj.apply(KeyInput(down=False, control_key=C.Shift))
        self.assertEqual(inj.held_keys, ())

    def test_release_all_lets_go_of_keys_and_buttons(self) -> None:
        """release_all (session end) releases held keys, newest first, and
        held buttons, and forgets them."""
        inj, be = _injector()
        inj.apply(KeyInput(down=True, control_key=C.Control))
        inj.apply(KeyInput(down=True, chr=ord("q")))
        inj.apply(mouse.button_down(MouseButton.RIGHT))
        be.calls.clear()
        with capturedLogs() as events:
            inj.release_all()
        self.assertEqual(be.calls, [("kup", "q"), ("kup", C.Control), ("bup", MouseButton.RIGHT)])
        self.assertEqual((inj.held_keys, inj.held_buttons), ((), ()))
        self.assertIn("Released", events[-1]["log_format"])

    def test_chr_unicode_seq_and_line_breaks(self) -> None:
        """chr and unicode type one character; newline and tab become the
        Return and Tab keys; seq types text and ignores modifiers; a seq
        "up" types nothing."""
        inj, be = _injector()
        for ev in (
            KeyInput(press=True, chr=ord("é")),
            KeyInput(press=True, unicode=0x1F600),
            KeyInput(press=True, unicode=10),
            KeyInput(press=True, chr=9),
            KeyInput(press=True, seq="hi there", modifiers=[C.Control]),
            KeyInput(down=False, seq="ignored"),
        ):
            self.assertTrue(inj.apply(ev).ok, ev)
        self.assertEqual(
            be.calls,
            [
                ("kdown", "é"),
                ("kup", "é"),
                ("kdown", "😀"),
                ("kup", "😀"),
                ("kdown", C.Return),
                ("kup", C.Return),
                ("kdown", C.Tab),
                ("kup", C.Tab),
                ("type", "hi there"),
            ],
        )

    def test_lock_keys_in_modifiers_are_ignored(self) -> None:
        """CapsLock/NumLock in modifiers report lock state; they are not
        pressed (that would toggle the lock)."""
        inj, be = _injector()
        inj.apply(KeyInput(press=True, chr=ord("a"), modifiers=[C.CapsLock, C.NumLock]))
        self.assertEqual(be.calls, [("kdown", "a"), ("kup", "a")])


class MouseBehaviourTests(unittest.SynchronousTestCase):
    def test_moves_buttons_and_wheel(self) -> None:
        """Moves are clamped to the desktop, relative moves to ±10000,
        buttons pressed and released, wheel notches clamped to 20."""
        inj, be = _injector()
        for ev in (
            mouse.move(100, 200),
            mouse.move(-5, 5000),
            mouse.relative(50, -10_000_000),
            MouseInput(9 | (MouseButton.RIGHT << 3)),  # left+right down
            mouse.button_up(MouseButton.LEFT),
            mouse.wheel(0, 500),
        ):
            self.assertTrue(inj.apply(ev).ok, ev)
        self.assertEqual(
            be.calls,
            [
                ("move", 100, 200),
                ("move", 0, 1079),
                ("move", 50, 0),
                ("bdown", MouseButton.LEFT),
                ("bdown", MouseButton.RIGHT),
                ("bup", MouseButton.LEFT),
                ("scroll", 0, 20),
            ],
        )
        self.assertEqual(inj.held_buttons, (MouseButton.RIGHT,))

    def test_trackpad_deltas_accumulate_into_notches(self) -> None:
        """Trackpad scrolling (type 4) sends pixels; every 40 make a notch,
        and remainders carry over to the next event."""
        inj, be = _injector()
        for dy in (25, 25, 25, -5):
            inj.apply(MouseInput(4, 0, dy))
        self.assertEqual(be.calls, [("scroll", 0, 1)])

    def test_moves_carry_held_buttons_harmlessly(self) -> None:
        """A move whose mask also has button bits (a drag) just moves."""
        inj, be = _injector()
        self.assertTrue(inj.apply(MouseInput(0 | (1 << 3), 3, 4)).ok)
        self.assertEqual(be.calls, [("move", 3, 4)])


class RefusalTests(unittest.SynchronousTestCase):
    def assertRefused(self, ev: object, code: str, words: str) -> None:
        inj, be = _injector()
        result = inj.apply(ev)
        self.assertEqual((result.ok, result.code), (False, code), (ev, result))
        self.assertIn(words, result.reason)
        self.assertEqual(be.calls, [])

    def test_invalid_events_are_refused_with_a_reason(self) -> None:
        """Malformed events are refused, saying what is wrong, and nothing
        is injected."""
        cases: list[tuple[object, str, str]] = [
            (MouseInput(6), "invalid", "type 6"),
            (MouseInput(1), "invalid", "without a button"),
            (MouseInput(1 | (0x20 << 3)), "invalid", "button bits"),
            (MouseInput(-1), "invalid", "negative"),
            (MouseInput(2**31), "invalid", "32-bit"),
            (MouseInput(0, "1", 2), "invalid", "x is not an integer"),  # type: ignore[arg-type]
            (MouseInput(0, True, 2), "invalid", "x is not an integer"),
            (MouseInput(9, modifiers=[C.Delete]), "invalid", "not a modifier"),
            (MouseInput(9, modifiers=[555]), "invalid", "unknown ControlKey"),
            (MouseInput(9, modifiers="ctrl"), "invalid", "not a list"),  # type: ignore[arg-type]
            (KeyInput(press=True), "invalid", "no key"),
            (KeyInput(press=True, chr=97, seq="a"), "invalid", "more than one"),
            (KeyInput(press=True, control_key=999), "invalid", "unknown ControlKey"),
            (KeyInput(press=True, control_key=0), "unsupported", "Unknown"),
            (KeyInput(press=True, control_key=C.Final), "unsupported", "Final"),
            (KeyInput(press=True, chr=0x1B), "invalid", "not a typeable"),
            (KeyInput(press=True, unicode=0xD800), "invalid", "not a typeable"),
            (KeyInput(press=True, unicode=-3), "invalid", "not a typeable"),
            (KeyInput(press=True, seq="a\x00b"), "invalid", "cannot be typed"),
            (KeyInput(press=True, seq="x" * (MAX_SEQ_CHARS + 1)), "invalid", "exceeds"),
            (KeyInput(press=True, seq=b"bytes"), "invalid", "not a string"),  # type: ignore[arg-type]
            (KeyInput(press=1, chr=97), "invalid", "booleans"),  # type: ignore[arg-type]
            (KeyInput(press=True, chr=97, mode=1), "unsupported", "Map"),
            (KeyInput(press=True, chr=97, mode=9), "invalid", "mode"),
            (KeyInput(press=True, chr=97, modifiers=[C.Shift] * 17), "invalid", "17 modifiers"),
            ("ctrl+a", "invalid", "not an input event"),
        ]
        for ev, code, words in cases:
            self.assertRefused(ev, code, words)

    def test_view_only_refuses_everything_and_logs_once(self) -> None:
        """In view-only mode every event, valid or not, is refused with
        code "view-only"; the log says so once, not once per event."""
        inj, be = _injector(view_only=True)
        with capturedLogs() as events:
            results = [
                inj.apply(ev)
                for ev in (mouse.move(1, 1), text_input("x"), KeyInput(), MouseInput(99))
            ]
        self.assertEqual({(r.ok, r.code) for r in results}, {(False, "view-only")})
        self.assertEqual(be.calls, [])
        self.assertEqual(inj.refused, 4)
        self.assertEqual(len([e for e in events if "view-only" in e["log_format"]]), 1)

    def test_repeated_refusals_warn_once_per_kind(self) -> None:
        """A peer sending garbage gets one warning per kind of refusal."""
        inj, _ = _injector()
        with capturedLogs() as events:
            for _ in range(50):
                inj.apply(MouseInput(7))
            inj.apply(KeyInput(press=True, control_key=C.Final))
        warnings = [e for e in events if e["log_level"] is LogLevel.warn]
        self.assertEqual([w["code"] for w in warnings], ["invalid", "unsupported"])


_ints = st.one_of(
    st.integers(-(2**40), 2**40),
    st.sampled_from([0, 1, 2, 3, 4, 5, 9, 10, 17, 18, 33, 255, -1, 2**31 - 1, 2**31]),
)
_junk = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=5), st.binary(max_size=5))
_maybe_int = st.one_of(_ints, _junk)
_modifiers = st.one_of(
    st.lists(st.one_of(st.sampled_from(list(ControlKey)), _ints), max_size=20),
    _junk,
)


@st.composite
def mouse_inputs(draw_: st.DrawFn) -> MouseInput:
    draw: Any = draw_  # deliberately ill-typed values: that is the point
    return MouseInput(draw(_maybe_int), draw(_maybe_int), draw(_maybe_int), draw(_modifiers))


@st.composite
def key_inputs(draw_: st.DrawFn) -> KeyInput:
    draw: Any = draw_
    return KeyInput(
        down=draw(st.one_of(st.booleans(), _junk)),
        press=draw(st.one_of(st.booleans(), _junk)),
        control_key=draw(st.one_of(st.none(), st.sampled_from(list(ControlKey)), _maybe_int)),
        chr=draw(st.one_of(st.none(), st.integers(0, 0x10FFFF), _maybe_int)),
        unicode=draw(st.one_of(st.none(), st.integers(-5, 0x11_0000), _maybe_int)),
        seq=draw(st.one_of(st.none(), st.text(max_size=30), _junk)),
        modifiers=draw(_modifiers),
        mode=draw(st.one_of(st.sampled_from([0, 1, 2, 3]), _maybe_int)),
    )


class PropertyTests(unittest.SynchronousTestCase):
    @given(st.lists(st.one_of(mouse_inputs(), key_inputs()), max_size=12), st.booleans())
    def test_arbitrary_events_never_raise(self, events: list[object], view_only: bool) -> None:
        """Whatever values a peer puts in MouseEvent/KeyEvent, the injector
        returns a result (never raises); refused events inject nothing; and
        release_all leaves no key or button held."""
        inj, be = _injector(view_only=view_only)
        with capturedLogs():
            for ev in events:
                before = len(be.calls)
                result = inj.apply(ev)
                self.assertIsInstance(result, InjectResult)
                if not result.ok:
                    self.assertTrue(result.reason)
                    self.assertEqual(be.calls[before:], [])
                if view_only:
                    self.assertEqual(result.code, "view-only")
                for call in be.calls[before:]:
                    if call[0] == "move":
                        self.assertTrue(0 <= call[1] < 1920 and 0 <= call[2] < 1080, call)
                    if call[0] == "scroll":
                        self.assertTrue(abs(call[1]) <= 20 and abs(call[2]) <= 20, call)
                    if call[0] == "type":
                        self.assertLessEqual(len(call[1]), MAX_SEQ_CHARS)
            inj.release_all()
        self.assertEqual((inj.held_keys, inj.held_buttons), ((), ()))
        # Every key ever pressed has been released by now.
        downs = [c[1] for c in be.calls if c[0] == "kdown"]
        ups = {c[1] for c in be.calls if c[0] == "kup"}
        self.assertLessEqual(set(downs), ups)


class NoDisplayTests(unittest.SynchronousTestCase):
    def test_importing_needs_no_display(self) -> None:
        """The viewer runs without X: importing the input package (keys,
        mouse, injector, clipboard) works without DISPLAY and does not
        import pynput, which would fail there."""
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "PYNPUT_BACKEND")}
        code = (
            "import sys, litedesk.input, litedesk.input.inject, litedesk.input.worker,"
            " litedesk.input.clipboard;"
            "assert not [m for m in sys.modules if m.startswith(('pynput', 'Xlib'))], sys.modules"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_without_a_display_input_is_unavailable_not_a_crash(self) -> None:
        """With no X display configured, events are refused as
        "unavailable" (logged), and importing the module needed no X."""
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "DISPLAY"})
        inj = InputInjector(PynputBackend(None))
        with capturedLogs():
            result = inj.apply(mouse.move(1, 1))
        self.assertEqual(result.code, "unavailable")
        self.assertIn("DISPLAY", result.reason)

    def test_unreachable_display_is_reported(self) -> None:
        """An explicit display that does not exist is reported as
        unavailable with its name."""
        inj = InputInjector(display=":987")
        with capturedLogs():
            result = inj.apply(text_input("x"))
        self.assertEqual(result.code, "unavailable")
        self.assertIn(":987", result.reason)


class WorkerUnitTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_moves_are_dropped_under_backlog_but_keys_are_not(self):
        """When the input thread falls behind, surplus absolute moves are
        dropped (the next move supersedes them) but key and button events
        are always queued."""
        inj, be = _injector()
        worker = InputWorker(inj, max_pending=2)
        self.addCleanup(worker.stop)
        ds = [worker.submit(mouse.move(i, i)) for i in range(5)]
        ds.append(worker.submit(mouse.button_down(MouseButton.LEFT)))
        ds.append(worker.submit(KeyInput(down=True, chr=ord("z"))))
        results = yield defer.gatherResults(ds)
        codes = [r.code for r in results]
        self.assertEqual(codes[:2], ["ok", "ok"])
        self.assertIn("overloaded", codes[2:5])
        self.assertEqual(codes[5:], ["ok", "ok"])
        self.assertEqual(worker.dropped, codes.count("overloaded"))
        yield worker.stop()
        self.assertEqual(be.calls[-3:], [("kup", "z"), ("bup", MouseButton.LEFT), ("close",)])
