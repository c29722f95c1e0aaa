"""ControlKey numbering, keysym mappings and combo parsing (no X needed)."""

from __future__ import annotations

from twisted.trial import unittest

from litedesk.input.key_combos import describe, parse_combo, parse_key_list, text_input
from litedesk.input.keys import ControlKey, KeyInput, is_typeable
from litedesk.input.keysyms import (
    CONTROL_KEY_MAP,
    KEYSYM_TO_CONTROL_KEY,
    MODIFIER_KEYS,
    key_input_for_tk,
    keysym_to_unicode,
)

# message.proto's ControlKey, written out from the specification
# (docs/protocol.rst §8.3, checked against upstream).
_SPEC = {
    "Unknown": 0,
    "Alt": 1,
    "Backspace": 2,
    "CapsLock": 3,
    "Control": 4,
    "Delete": 5,
    "DownArrow": 6,
    "End": 7,
    "Escape": 8,
    "F1": 9,
    "F10": 10,
    "F11": 11,
    "F12": 12,
    **{f"F{n}": 11 + n for n in range(2, 10)},
    "Home": 21,
    "LeftArrow": 22,
    "Meta": 23,
    "Option": 24,
    "PageDown": 25,
    "PageUp": 26,
    "Return": 27,
    "RightArrow": 28,
    "Shift": 29,
    "Space": 30,
    "Tab": 31,
    "UpArrow": 32,
    **{f"Numpad{n}": 33 + n for n in range(10)},
    "Cancel": 43,
    "Clear": 44,
    "Menu": 45,
    "Pause": 46,
    "Kana": 47,
    "Hangul": 48,
    "Junja": 49,
    "Final": 50,
    "Hanja": 51,
    "Kanji": 52,
    "Convert": 53,
    "Select": 54,
    "Print": 55,
    "Execute": 56,
    "Snapshot": 57,
    "Insert": 58,
    "Help": 59,
    "Sleep": 60,
    "Separator": 61,
    "Scroll": 62,
    "NumLock": 63,
    "RWin": 64,
    "Apps": 65,
    "Multiply": 66,
    "Add": 67,
    "Subtract": 68,
    "Decimal": 69,
    "Divide": 70,
    "Equals": 71,
    "NumpadEnter": 72,
    "RShift": 73,
    "RControl": 74,
    "RAlt": 75,
    "VolumeMute": 76,
    "VolumeUp": 77,
    "VolumeDown": 78,
    "Power": 79,
    "CtrlAltDel": 100,
    "LockScreen": 101,
}


class ControlKeyTests(unittest.SynchronousTestCase):
    def test_numbers_match_the_wire_protocol(self) -> None:
        """Every ControlKey has RustDesk's name and number, so a key from a
        RustDesk peer means the same key here."""
        self.assertEqual({k.name: k.value for k in ControlKey}, _SPEC)

    def test_numbers_match_the_generated_protobuf(self) -> None:
        """The enum agrees with the project's compiled message.proto, and
        KeyInput has the KeyEvent fields the session layer copies over."""
        # The generated module is part of the package: an import error here
        # is a regression to report, not a reason to skip.
        from litedesk.proto import message_pb2

        self.assertEqual(dict(message_pb2.ControlKey.items()), _SPEC)
        fields = {f.name for f in message_pb2.KeyEvent.DESCRIPTOR.fields}
        # keycode is chr read as an X11 keycode (Map and Translate modes).
        self.assertLessEqual(set(KeyInput.__slots__) - {"keycode"}, fields)

    def test_every_key_but_final_and_unknown_maps_to_x11(self) -> None:
        """All ControlKeys except Unknown, Final (no X11 equivalent) and the
        CtrlAltDel request have an X keysym; the F keys are in order."""
        missing = {k.name for k in ControlKey if k not in CONTROL_KEY_MAP}
        self.assertEqual(missing, {"Unknown", "Final", "CtrlAltDel"})
        for n in range(1, 13):
            m = CONTROL_KEY_MAP[ControlKey[f"F{n}"]]
            self.assertEqual(
                (m.keysym_name, m.keysym, m.pynput_name), (f"F{n}", 0xFFBD + n, f"f{n}")
            )
        self.assertEqual(CONTROL_KEY_MAP[ControlKey.Numpad7].keysym, 0xFFB7)
        self.assertEqual(CONTROL_KEY_MAP[ControlKey.PageUp].keysym_name, "Prior")
        self.assertEqual(CONTROL_KEY_MAP[ControlKey.Meta].pynput_name, "cmd")

    def test_modifiers_have_pynput_keys(self) -> None:
        """Modifiers map to pynput Key members, which pynput tracks so that
        characters typed with Ctrl/Shift held carry the modifier state."""
        for k in MODIFIER_KEYS:
            self.assertIsNotNone(CONTROL_KEY_MAP[k].pynput_name, k)


class TkMappingTests(unittest.SynchronousTestCase):
    def test_tk_keysyms_map_to_control_keys(self) -> None:
        """The viewer's Tk keysym names become the right ControlKeys,
        including right-hand modifiers, keypad keys and Shift+Tab."""
        cases = {
            "Return": ControlKey.Return,
            "BackSpace": ControlKey.Backspace,
            "Control_L": ControlKey.Control,
            "Control_R": ControlKey.RControl,
            "Shift_R": ControlKey.RShift,
            "Alt_L": ControlKey.Alt,
            "Super_L": ControlKey.Meta,
            "F5": ControlKey.F5,
            "F10": ControlKey.F10,
            "KP_Enter": ControlKey.NumpadEnter,
            "KP_3": ControlKey.Numpad3,
            "KP_End": ControlKey.End,
            "Prior": ControlKey.PageUp,
            "Next": ControlKey.PageDown,
            "ISO_Left_Tab": ControlKey.Tab,
            "Print": ControlKey.Snapshot,
            "Menu": ControlKey.Apps,
            "space": ControlKey.Space,
            "Escape": ControlKey.Escape,
        }
        for keysym, ck in cases.items():
            self.assertIs(KEYSYM_TO_CONTROL_KEY.get(keysym), ck, keysym)

    def test_round_trip_for_canonical_keysyms(self) -> None:
        """For every key the host can produce, the keysym it produces maps
        back to a ControlKey that produces the same keysym."""
        for ck, m in CONTROL_KEY_MAP.items():
            back = KEYSYM_TO_CONTROL_KEY[m.keysym_name]
            self.assertEqual(CONTROL_KEY_MAP[back].keysym, m.keysym, ck)

    def test_key_input_for_tk_events(self) -> None:
        """Tk key events become KeyInputs: named keys as control_key,
        characters as chr (recovered from the keysym when Ctrl turned the
        character into a control code), unknown keys as None."""
        self.assertEqual(
            key_input_for_tk("Return", "\r", down=True),
            KeyInput(down=True, control_key=ControlKey.Return),
        )
        self.assertEqual(
            key_input_for_tk("a", "\x01", down=True, modifiers=[ControlKey.Control]),
            KeyInput(down=True, chr=ord("a"), modifiers=[ControlKey.Control]),
        )
        self.assertEqual(
            key_input_for_tk("eacute", "é", down=False, keysym_num=0xE9),
            KeyInput(down=False, chr=0xE9),
        )
        self.assertEqual(
            key_input_for_tk("EuroSign", "€", down=True, keysym_num=0x20AC),
            KeyInput(down=True, chr=ord("€")),
        )
        self.assertIsNone(key_input_for_tk("F13", "", down=True))
        self.assertIsNone(key_input_for_tk("XF86Launch1", "", down=True, keysym_num=0x1008FF41))

    def test_keysym_to_unicode(self) -> None:
        """Latin-1 and Unicode keysyms give their code point, others None."""
        self.assertEqual(keysym_to_unicode(0x61), 0x61)
        self.assertEqual(keysym_to_unicode(0xE9), 0xE9)
        self.assertEqual(keysym_to_unicode(0x010020AC), 0x20AC)
        self.assertIsNone(keysym_to_unicode(0xFF0D))
        self.assertIsNone(keysym_to_unicode(0x1F))

    def test_typeable_characters(self) -> None:
        """Printable characters, tab and newline are typeable; other control
        characters, surrogates and out-of-range values are not."""
        for c in "aZ é€😀\t\n\r":
            self.assertTrue(is_typeable(ord(c)), c)
        for cp in (0, 0x1B, 0x7F, 0x85, 0xD800, 0x110000, -1):
            self.assertFalse(is_typeable(cp), hex(cp))


class ComboTests(unittest.SynchronousTestCase):
    def test_keys_option_examples(self) -> None:
        """litedesk-viewer --keys ctrl+a,Return gives Ctrl+A then Return, as
        presses with the modifiers listed."""
        self.assertEqual(
            parse_key_list("ctrl+a,Return"),
            [
                KeyInput(press=True, chr=ord("a"), modifiers=[ControlKey.Control]),
                KeyInput(press=True, control_key=ControlKey.Return),
            ],
        )

    def test_combos(self) -> None:
        """Modifier words, ControlKey names in any case, friendly aliases,
        X keysym names and single characters are all understood."""
        cases = {
            "ctrl+alt+Delete": (ControlKey.Delete, None, [ControlKey.Control, ControlKey.Alt]),
            "shift+Tab": (ControlKey.Tab, None, [ControlKey.Shift]),
            "Return": (ControlKey.Return, None, []),
            "enter": (ControlKey.Return, None, []),
            "esc": (ControlKey.Escape, None, []),
            "F5": (ControlKey.F5, None, []),
            "f12": (ControlKey.F12, None, []),
            "BackSpace": (ControlKey.Backspace, None, []),
            "KP_Enter": (ControlKey.NumpadEnter, None, []),
            "pageup": (ControlKey.PageUp, None, []),
            "Control+Shift+t": (None, ord("t"), [ControlKey.Control, ControlKey.Shift]),
            "super+e": (None, ord("e"), [ControlKey.Meta]),
            " ctrl + c ": (None, ord("c"), [ControlKey.Control]),
            "shift": (ControlKey.Shift, None, []),
            "ctrl+shift": (ControlKey.Shift, None, [ControlKey.Control]),
            "ctrl+plus": (None, ord("+"), [ControlKey.Control]),
            "ctrl++": (None, ord("+"), [ControlKey.Control]),
            "+": (None, ord("+"), []),
            "comma": (None, ord(","), []),
            "é": (None, ord("é"), []),
            "CtrlAltDel": (ControlKey.CtrlAltDel, None, []),
        }
        for text, (ck, cp, mods) in cases.items():
            ev = parse_combo(text)
            self.assertEqual(
                (ev.control_key, ev.chr, ev.modifiers, ev.press), (ck, cp, mods, True), text
            )

    def test_bad_combos_are_rejected_with_a_reason(self) -> None:
        """Empty parts, unknown names and non-modifiers before the key are
        errors that name the problem."""
        for bad, words in {
            "": "empty",
            "ctrl+": "empty",
            "ctrl++a": "empty",
            "a+b": "not a modifier",
            "ctrl+nosuchkey": "unknown key",
            "Unknown": "unknown key",
            "hyper+x": "not a modifier",
        }.items():
            e = self.assertRaises(ValueError, parse_combo, bad)
            self.assertIn(words, str(e), bad)
        self.assertRaises(ValueError, parse_key_list, "a,,b")
        self.assertRaises(ValueError, parse_key_list, " ")

    def test_text_and_describe(self) -> None:
        """--type TEXT is one seq event; log descriptions never contain
        the typed text."""
        ev = text_input("secret")
        self.assertEqual(ev, KeyInput(press=True, seq="secret"))
        self.assertNotIn("secret", describe(ev))
        self.assertEqual(describe(parse_combo("ctrl+Delete")), "press Delete")
        self.assertEqual(describe(KeyInput(down=True, chr=97)), "down chr")
        self.assertEqual(describe(KeyInput(control_key=999)), "up control_key=999")
