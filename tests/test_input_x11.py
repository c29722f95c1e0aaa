"""Input injection into a real X server (Xvfb) observed by a Tk window.

Every test starts its own Xvfb and recorder window (about half a second), so
no state (held keys, keymap changes, focus) leaks between tests.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from litedesk.input import mouse
from litedesk.input.inject import InputInjector
from litedesk.input.key_combos import parse_combo, parse_key_list, text_input
from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.mouse import MouseButton
from litedesk.input.results import InjectResult
from litedesk.input.worker import InputWorker
from tests.support.recorder import (
    Recorder,
    _xlib_display,
    pointer_position,
    pressed_keycodes,
    start_xvfb,
)
from tests.support.skips import requires
from tests.support.xvfb import Xvfb


class _X11Case:
    """Per-test Xvfb, recorder window and injector."""

    xvfb: Xvfb
    rec: Recorder
    inj: InputInjector

    def setUp(self) -> None:
        self.xvfb = start_xvfb()
        self.addCleanup(self.xvfb.stop)  # type: ignore[attr-defined]
        self.rec = Recorder(self.xvfb.env)
        self.addCleanup(self.rec.stop)  # type: ignore[attr-defined]
        self.inj = InputInjector(display=self.xvfb.display)
        self.addCleanup(self.inj.close)  # type: ignore[attr-defined]
        # A point on the recorder's canvas, away from its edges.
        self.cx = self.rec.ready["canvas_x"] + 300
        self.cy = self.rec.ready["canvas_y"] + 200

    def ok(self, *events: object) -> None:
        for ev in events:
            result = self.inj.apply(ev)
            assert result.ok, (ev, result)

    def keysyms(self, start: int, ev: str = "KeyPress") -> list[str]:
        return [e["keysym"] for e in self.rec.since(start, ev)]


@requires("Xvfb", "tkinter")
class KeyboardTests(_X11Case, unittest.SynchronousTestCase):
    def test_typed_text_arrives_including_unicode_and_capitals(self) -> None:
        """Text from the viewer's --type (KeyEvent.seq) appears verbatim in
        the focused text field, with capitals, punctuation and characters
        that are not on the host's keyboard (é, €, ß)."""
        text = "Hello, World! 123 é€ß"
        start = self.rec.mark()
        self.ok(text_input(text))
        self.assertEqual(self.rec.sync()["text"], text)
        # Real key events, not XSendEvent ones that xterm would ignore.
        self.assertFalse([e for e in self.rec.since(start, "KeyPress") if e["synthetic"]])

    def test_chr_unicode_and_shift_modifier(self) -> None:
        """Single characters sent as chr or unicode are typed, and the Shift
        modifier in a KeyEvent capitalises a letter."""
        self.ok(
            KeyInput(press=True, chr=ord("x")),
            KeyInput(press=True, unicode=ord("é")),
            KeyInput(press=True, chr=ord("q"), modifiers=[ControlKey.Shift]),
        )
        self.assertEqual(self.rec.sync()["text"], "xéQ")

    def test_ctrl_a_selects_and_return_submits(self) -> None:
        """--keys ctrl+a,Return: Ctrl+A reaches the application as a
        shortcut (it selects all), typing then replaces the selection, and
        Return submits the field."""
        self.ok(text_input("old text"))
        self.rec.sync()
        start = self.rec.mark()
        self.ok(parse_combo("ctrl+a"))
        sel = self.rec.wait_for(lambda e: e["ev"] == "selectall", start=start)
        self.assertEqual(sel["selection"], "old text")
        self.ok(text_input("new"), *parse_key_list("Return"))
        submitted = self.rec.wait_for(lambda e: e["ev"] == "submit", start=start)
        self.assertEqual(submitted["text"], "new")

    def test_backspace_and_arrow_keys_edit_text(self) -> None:
        """Named keys act as on a keyboard: BackSpace deletes, Left and Home
        move the cursor before the next character is typed."""
        self.ok(
            text_input("abcd"),
            KeyInput(press=True, control_key=ControlKey.Backspace),
            KeyInput(press=True, control_key=ControlKey.LeftArrow),
            text_input("X"),
            KeyInput(press=True, control_key=ControlKey.Home),
            text_input(">"),
        )
        self.assertEqual(self.rec.sync()["text"], ">abXc")

    def test_named_keys_reach_the_application(self) -> None:
        """Function, navigation and keypad keys arrive as the X keysyms an
        application expects, and Shift+Tab as ISO_Left_Tab."""
        start = self.rec.mark()
        self.ok(*parse_key_list("F5,Escape,PageDown,Insert,KP_Enter,F12,shift+Tab"))
        self.rec.sync()
        self.assertEqual(
            self.keysyms(start),
            ["F5", "Escape", "Next", "Insert", "KP_Enter", "F12", "Shift_L", "ISO_Left_Tab"],
        )

    def test_modifiers_are_released_after_a_combo(self) -> None:
        """After ctrl+alt+Delete (and the CtrlAltDel request) no key is left
        pressed on the host: modifiers held around a key are released."""
        start = self.rec.mark()
        self.ok(parse_combo("ctrl+alt+Delete"), KeyInput(press=True, control_key=100))
        self.rec.sync()
        self.assertEqual(self.keysyms(start), ["Control_L", "Alt_L", "Delete"] * 2)
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])

    def test_held_keys_and_buttons_are_released_on_session_end(self) -> None:
        """A key and a button pressed by a viewer that then disappears
        (no "up" ever arrives) are released by release_all()."""
        start = self.rec.mark()
        self.ok(
            KeyInput(down=True, control_key=ControlKey.Shift),
            mouse.move(self.cx, self.cy),
            mouse.button_down(MouseButton.LEFT),
        )
        self.rec.sync()
        self.assertNotEqual(pressed_keycodes(self.xvfb.display), [])
        self.assertEqual(self.inj.held_keys, (ControlKey.Shift,))
        self.inj.release_all()
        self.rec.sync()
        self.assertEqual(self.keysyms(start, "KeyRelease"), ["Shift_L"])
        self.assertEqual([e["num"] for e in self.rec.since(start, "ButtonRelease")], [1])
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])
        self.assertEqual((self.inj.held_keys, self.inj.held_buttons), ((), ()))

    def test_key_down_and_up_events(self) -> None:
        """Separate down and up events (a viewer forwarding a held key)
        produce a press and a release, with auto-typing of nothing else."""
        start = self.rec.mark()
        self.ok(
            KeyInput(down=True, chr=ord("k")),
            KeyInput(down=False, chr=ord("k")),
        )
        self.rec.sync()
        self.assertEqual(self.keysyms(start), ["k"])
        self.assertEqual(self.keysyms(start, "KeyRelease"), ["k"])

    def test_borrowed_keycodes_are_given_back_on_close(self) -> None:
        """Characters missing from the host keyboard borrow spare keycodes;
        closing the injector (session end) empties them again, leaving the
        host keymap as it was."""

        def mapped() -> int:
            d = _xlib_display(self.xvfb.display)
            try:
                info = d.display.info
                rows = d.get_keyboard_mapping(
                    info.min_keycode, info.max_keycode - info.min_keycode + 1
                )
                return sum(1 for row in rows if any(row))
            finally:
                d.close()

        before = mapped()
        self.ok(text_input("€ß→"), KeyInput(press=True, unicode=ord("☃")))
        self.assertEqual(self.rec.sync()["text"], "€ß→☃")
        self.assertEqual(mapped(), before + 4)
        self.inj.close()
        self.assertEqual(mapped(), before)

    def test_text_with_more_missing_characters_than_spare_keycodes(self) -> None:
        """A text with more distinct characters missing from the keyboard
        than there are spare keycodes (Xvfb has 19) is still typed exactly,
        in order, and so are repeated characters."""
        text = "".join(chr(0x4E00 + i) for i in range(30)) + "\u4e00 x\u4e1d"
        self.ok(text_input(text))
        self.assertEqual(self.rec.sync(settle=0.3)["text"], text)

    def test_key_missing_from_keymap_is_refused_not_raised(self) -> None:
        """A valid ControlKey with no key in the host's keymap (Clear on
        Xvfb's default keymap) is refused with a reason; nothing is typed."""
        start = self.rec.mark()
        result = self.inj.apply(KeyInput(press=True, control_key=ControlKey.Clear))
        self.assertEqual(result.code, "unsupported")
        self.assertIn("Clear", result.reason)
        self.rec.sync()
        self.assertEqual(self.rec.since(start, "KeyPress"), [])


@requires("Xvfb", "tkinter")
class MouseTests(_X11Case, unittest.SynchronousTestCase):
    def presses(self, start: int) -> list[tuple[int, int, int]]:
        return [(e["num"], e["x_root"], e["y_root"]) for e in self.rec.since(start, "ButtonPress")]

    def test_click_lands_at_the_coordinates(self) -> None:
        """--click X,Y: the left button goes down and up exactly at the given
        virtual-desktop (root window) coordinates."""
        start = self.rec.mark()
        self.ok(*mouse.click(self.cx, self.cy))
        self.rec.sync()
        self.assertEqual(self.presses(start), [(1, self.cx, self.cy)])
        release = self.rec.since(start, "ButtonRelease")
        self.assertEqual(
            [(e["num"], e["x_root"], e["y_root"]) for e in release], [(1, self.cx, self.cy)]
        )

    def test_right_and_middle_click(self) -> None:
        """Right (mask 17/18) and middle (33/34) clicks arrive as X buttons 3
        and 2."""
        start = self.rec.mark()
        self.ok(
            mouse.move(self.cx, self.cy),
            mouse.MouseInput(17),
            mouse.MouseInput(18),
            mouse.move(self.cx + 10, self.cy + 5),
            mouse.MouseInput(33),
            mouse.MouseInput(34),
        )
        self.rec.sync()
        self.assertEqual(
            self.presses(start), [(3, self.cx, self.cy), (2, self.cx + 10, self.cy + 5)]
        )

    def test_wheel_scrolls_up_down_and_sideways(self) -> None:
        """Wheel events (mask 3) scroll one notch per unit: y > 0 is up
        (X button 4), y < 0 down (5), x < 0 left (6), x > 0 right (7)."""
        start = self.rec.mark()
        self.ok(
            mouse.move(self.cx, self.cy),
            mouse.wheel(0, 2),
            mouse.wheel(0, -1),
            mouse.wheel(-1, 0),
            mouse.wheel(1, 0),
        )
        self.rec.sync()
        # Tk 8.6 reports X buttons 6 and 7 as Shift + 4 and Shift + 5.
        got = [(e["num"], e["state"] & 1) for e in self.rec.since(start, "ButtonPress")]
        self.assertEqual(got, [(4, 0), (4, 0), (5, 0), (4, 1), (5, 1)])

    def test_drag(self) -> None:
        """Press, moves and release make a drag: motion events with button 1
        held, ending where the button is released."""
        start = self.rec.mark()
        x0, y0 = self.cx, self.cy
        self.ok(
            mouse.move(x0, y0),
            mouse.button_down(MouseButton.LEFT),
            mouse.move(x0 + 50, y0 + 20),
            mouse.move(x0 + 120, y0 + 60),
            mouse.button_up(MouseButton.LEFT),
        )
        self.rec.sync()
        motions = self.rec.since(start, "Motion")
        self.assertTrue(motions)
        self.assertTrue(all(m["state"] & 0x100 for m in motions))  # Button1Mask
        self.assertEqual((motions[-1]["x_root"], motions[-1]["y_root"]), (x0 + 120, y0 + 60))
        (release,) = self.rec.since(start, "ButtonRelease")
        self.assertEqual((release["x_root"], release["y_root"]), (x0 + 120, y0 + 60))

    def test_moves_are_clamped_to_the_desktop(self) -> None:
        """Absolute moves beyond the 1920x1080 desktop stop at its edge, and
        relative moves are applied (and clamped to ±10000 and the desktop)."""
        self.ok(mouse.move(5000, -20))
        self.assertEqual(pointer_position(self.xvfb.display), (1919, 0))
        self.ok(mouse.move(500, 500), mouse.relative(10, -20))
        self.assertEqual(pointer_position(self.xvfb.display), (510, 480))
        self.ok(mouse.relative(-(2**31), 2**31 - 1))
        self.assertEqual(pointer_position(self.xvfb.display), (0, 1079))

    def test_ctrl_click_holds_the_modifier_around_the_click(self) -> None:
        """A click whose MouseEvent lists Control arrives with the Control
        state bit set, and Control is released afterwards."""
        start = self.rec.mark()
        self.ok(mouse.move(self.cx, self.cy))
        down = mouse.button_down(MouseButton.LEFT)
        down.modifiers = [ControlKey.Control]
        self.ok(down, mouse.button_up(MouseButton.LEFT))
        self.rec.sync()
        (press,) = self.rec.since(start, "ButtonPress")
        self.assertTrue(press["state"] & 0x4)  # ControlMask
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])


@requires("Xvfb", "tkinter")
class ViewOnlyTests(_X11Case, unittest.SynchronousTestCase):
    def test_view_only_refuses_everything(self) -> None:
        """A view-only session injects nothing: clicks, keys and text are
        refused with the reason "view-only" and the pointer does not move."""
        self.inj.view_only = True
        before = pointer_position(self.xvfb.display)
        start = self.rec.mark()
        results = [
            self.inj.apply(ev)
            for ev in (
                *mouse.click(self.cx, self.cy),
                text_input("nope"),
                parse_combo("ctrl+a"),
                mouse.wheel(0, 1),
            )
        ]
        self.assertEqual({r.code for r in results}, {"view-only"})
        self.assertFalse(any(r.ok for r in results))
        self.assertEqual(self.inj.refused, len(results))
        state = self.rec.sync()
        self.assertEqual(state["text"], "")
        self.assertEqual([e["ev"] for e in self.rec.events[start:]], ["state"])
        self.assertEqual(pointer_position(self.xvfb.display), before)


@requires("Xvfb", "tkinter")
class WorkerTests(_X11Case, unittest.TestCase):
    @defer.inlineCallbacks
    def test_worker_injects_in_order_off_the_reactor_and_releases_on_stop(self):
        """Through the InputWorker (the session's path), events are injected
        in arrival order on the input thread, refusals come back at once,
        and stopping the worker releases a key left held by the viewer."""
        worker = InputWorker(self.inj)
        start = self.rec.mark()
        ds = [worker.submit(ev) for ev in mouse.click(self.cx, self.cy)]
        ds += [worker.submit(ev) for ev in parse_key_list("a,b,c")]
        ds.append(worker.submit(KeyInput(down=True, control_key=ControlKey.RShift)))
        bad = worker.submit(KeyInput(press=True, control_key=12345))
        self.assertEqual(bad.result.code, "invalid")  # type: ignore[attr-defined]
        results: list[InjectResult] = yield defer.gatherResults(ds)
        self.assertTrue(all(r.ok for r in results), results)
        yield worker.stop()
        self.rec.wait_for(lambda e: e["ev"] == "KeyRelease" and e["keysym"] == "Shift_R", 5, start)
        self.assertEqual(self.keysyms(start), ["a", "b", "c", "Shift_R"])
        self.assertEqual(self.keysyms(start, "KeyRelease")[-1], "Shift_R")
        self.assertEqual(self.rec.since(start, "ButtonPress")[0]["x_root"], self.cx)
        self.assertEqual(pressed_keycodes(self.xvfb.display), [])
