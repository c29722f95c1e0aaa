"""ControlKey <-> X keysyms, in both directions.

* L{CONTROL_KEY_MAP}: ControlKey -> X keysym (name and number) and the
  name of the matching C{pynput.keyboard.Key} member, for the host.
* L{control_key_for_keysym} / L{key_input_for_tk}: the reverse direction for
  the viewer, from Tk/X keysym names (C{"Return"}, C{"Control_L"},
  C{"KP_Enter"}) to a ControlKey or a character.

They are tables about X rather than the protocol's vocabulary
(L{litedesk.input.keys}), hence a module of their own.  Nothing here imports
pynput or Xlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from litedesk.input.keys import ControlKey, KeyInput, is_typeable

__all__ = [
    "CONTROL_KEY_MAP",
    "CTRL_ALT_DEL",
    "KEYSYM_TO_CONTROL_KEY",
    "LOCK_KEYS",
    "MODIFIER_KEYS",
    "KeyMapping",
    "control_key_for_keysym",
    "key_input_for_tk",
    "keysym_to_unicode",
]


@dataclass(frozen=True, slots=True)
class KeyMapping:
    """How one ControlKey is produced on an X11 host.

    @ivar keysym_name: the X keysym name (also what Tk reports).
    @ivar keysym: its numeric value; stored so that nothing depends on which
        keysym groups python-xlib has loaded (it knows no XF86 names by default).
    @ivar pynput_name: the C{pynput.keyboard.Key} member, when pynput has one.
        Using the member (rather than a bare keysym) matters for modifiers:
        pynput tracks them and adds their mask to the characters it sends.
    """

    keysym_name: str
    keysym: int
    pynput_name: str | None = None


def _fkeys() -> dict[ControlKey, KeyMapping]:
    # F1 is keysym 0xffbe and F2..F12 follow it; ControlKey's order differs
    # (F1, F10, F11, F12, F2..F9), hence the lookup by name.
    return {ControlKey[f"F{n}"]: KeyMapping(f"F{n}", 0xFFBE + n - 1, f"f{n}") for n in range(1, 13)}


def _numpad() -> dict[ControlKey, KeyMapping]:
    return {ControlKey[f"Numpad{n}"]: KeyMapping(f"KP_{n}", 0xFFB0 + n) for n in range(10)}


_ALT_L = KeyMapping("Alt_L", 0xFFE9, "alt")


#: ControlKey -> X keysym and pynput key.  Keys without an X11 equivalent
#: (C{Unknown}, C{Final}) and the synthetic C{CtrlAltDel} are absent; see
#: L{CTRL_ALT_DEL}.  C{Option} and C{Menu} are deprecated aliases of Alt in
#: message.proto and map to Alt here; C{Apps} is the context-menu key, whose
#: X name is "Menu".
CONTROL_KEY_MAP: Final[dict[ControlKey, KeyMapping]] = {
    ControlKey.Alt: _ALT_L,
    ControlKey.Backspace: KeyMapping("BackSpace", 0xFF08, "backspace"),
    ControlKey.CapsLock: KeyMapping("Caps_Lock", 0xFFE5, "caps_lock"),
    ControlKey.Control: KeyMapping("Control_L", 0xFFE3, "ctrl"),
    ControlKey.Delete: KeyMapping("Delete", 0xFFFF, "delete"),
    ControlKey.DownArrow: KeyMapping("Down", 0xFF54, "down"),
    ControlKey.End: KeyMapping("End", 0xFF57, "end"),
    ControlKey.Escape: KeyMapping("Escape", 0xFF1B, "esc"),
    **_fkeys(),
    ControlKey.Home: KeyMapping("Home", 0xFF50, "home"),
    ControlKey.LeftArrow: KeyMapping("Left", 0xFF51, "left"),
    ControlKey.Meta: KeyMapping("Super_L", 0xFFEB, "cmd"),
    ControlKey.Option: _ALT_L,
    ControlKey.PageDown: KeyMapping("Next", 0xFF56, "page_down"),
    ControlKey.PageUp: KeyMapping("Prior", 0xFF55, "page_up"),
    ControlKey.Return: KeyMapping("Return", 0xFF0D, "enter"),
    ControlKey.RightArrow: KeyMapping("Right", 0xFF53, "right"),
    ControlKey.Shift: KeyMapping("Shift_L", 0xFFE1, "shift"),
    ControlKey.Space: KeyMapping("space", 0x0020, "space"),
    ControlKey.Tab: KeyMapping("Tab", 0xFF09, "tab"),
    ControlKey.UpArrow: KeyMapping("Up", 0xFF52, "up"),
    **_numpad(),
    ControlKey.Cancel: KeyMapping("Cancel", 0xFF69),
    ControlKey.Clear: KeyMapping("Clear", 0xFF0B),
    ControlKey.Menu: _ALT_L,
    ControlKey.Pause: KeyMapping("Pause", 0xFF13, "pause"),
    ControlKey.Kana: KeyMapping("Hiragana_Katakana", 0xFF27),
    ControlKey.Hangul: KeyMapping("Hangul", 0xFF31),
    ControlKey.Junja: KeyMapping("Hangul_Jeonja", 0xFF38),
    ControlKey.Hanja: KeyMapping("Hangul_Hanja", 0xFF34),
    ControlKey.Kanji: KeyMapping("Kanji", 0xFF21),
    ControlKey.Convert: KeyMapping("Henkan_Mode", 0xFF23),
    ControlKey.Select: KeyMapping("Select", 0xFF60),
    ControlKey.Print: KeyMapping("Print", 0xFF61, "print_screen"),
    ControlKey.Execute: KeyMapping("Execute", 0xFF62),
    ControlKey.Snapshot: KeyMapping("Print", 0xFF61, "print_screen"),
    ControlKey.Insert: KeyMapping("Insert", 0xFF63, "insert"),
    ControlKey.Help: KeyMapping("Help", 0xFF6A),
    ControlKey.Sleep: KeyMapping("XF86Sleep", 0x1008FF10),
    ControlKey.Separator: KeyMapping("KP_Separator", 0xFFAC),
    ControlKey.Scroll: KeyMapping("Scroll_Lock", 0xFF14, "scroll_lock"),
    ControlKey.NumLock: KeyMapping("Num_Lock", 0xFF7F, "num_lock"),
    ControlKey.RWin: KeyMapping("Super_R", 0xFFEC, "cmd_r"),
    ControlKey.Apps: KeyMapping("Menu", 0xFF67, "menu"),
    ControlKey.Multiply: KeyMapping("KP_Multiply", 0xFFAA),
    ControlKey.Add: KeyMapping("KP_Add", 0xFFAB),
    ControlKey.Subtract: KeyMapping("KP_Subtract", 0xFFAD),
    ControlKey.Decimal: KeyMapping("KP_Decimal", 0xFFAE),
    ControlKey.Divide: KeyMapping("KP_Divide", 0xFFAF),
    ControlKey.Equals: KeyMapping("KP_Equal", 0xFFBD),
    ControlKey.NumpadEnter: KeyMapping("KP_Enter", 0xFF8D),
    ControlKey.RShift: KeyMapping("Shift_R", 0xFFE2, "shift_r"),
    ControlKey.RControl: KeyMapping("Control_R", 0xFFE4, "ctrl_r"),
    ControlKey.RAlt: KeyMapping("Alt_R", 0xFFEA, "alt_r"),
    ControlKey.VolumeMute: KeyMapping("XF86AudioMute", 0x1008FF12, "media_volume_mute"),
    ControlKey.VolumeUp: KeyMapping("XF86AudioRaiseVolume", 0x1008FF13, "media_volume_up"),
    ControlKey.VolumeDown: KeyMapping("XF86AudioLowerVolume", 0x1008FF11, "media_volume_down"),
    ControlKey.Power: KeyMapping("XF86PowerOff", 0x1008FF2A),
    # Desktops bind the screen-saver key to "lock screen"; X has no lock key.
    ControlKey.LockScreen: KeyMapping("XF86ScreenSaver", 0x1008FF2D),
}


#: C{CtrlAltDel} is a request, not a key: it is sent as Control+Alt+Delete.
CTRL_ALT_DEL: Final[tuple[ControlKey, ...]] = (
    ControlKey.Control,
    ControlKey.Alt,
    ControlKey.Delete,
)


#: ControlKeys that may appear in C{modifiers} and are held around a key.
MODIFIER_KEYS: Final[frozenset[ControlKey]] = frozenset(
    {
        ControlKey.Alt,
        ControlKey.Control,
        ControlKey.Shift,
        ControlKey.Meta,
        ControlKey.Option,
        ControlKey.Menu,
        ControlKey.RWin,
        ControlKey.RShift,
        ControlKey.RControl,
        ControlKey.RAlt,
    }
)


#: Lock keys that RustDesk peers list in C{modifiers} to report lock state.
#: They are never pressed as modifiers (that would toggle the lock); a
#: physical key or Translate text matches the host's locks to them
#: (L{litedesk.input.validation.LockSync}), a Legacy key ignores them.
LOCK_KEYS: Final[frozenset[ControlKey]] = frozenset(
    {ControlKey.CapsLock, ControlKey.NumLock, ControlKey.Scroll}
)


# Names that X/Tk report for keys whose ControlKey is not the "canonical" one
# in CONTROL_KEY_MAP: right-hand modifiers, alternative keysym spellings, and
# the keypad's navigation keysyms (NumLock off), which are sent as the
# navigation key they mean rather than as a keypad digit whose meaning would
# then depend on the host's NumLock.
_KEYSYM_ALIASES: Final[dict[str, ControlKey]] = {
    "Alt_L": ControlKey.Alt,
    "Alt_R": ControlKey.RAlt,
    "ISO_Level3_Shift": ControlKey.RAlt,
    "Meta_L": ControlKey.Alt,
    "Meta_R": ControlKey.RAlt,
    "Super_L": ControlKey.Meta,
    "Super_R": ControlKey.RWin,
    "Hyper_L": ControlKey.Meta,
    "Hyper_R": ControlKey.RWin,
    "Page_Up": ControlKey.PageUp,
    "Page_Down": ControlKey.PageDown,
    "Print": ControlKey.Snapshot,
    "Sys_Req": ControlKey.Snapshot,
    "Break": ControlKey.Pause,
    "ISO_Left_Tab": ControlKey.Tab,
    "KP_Tab": ControlKey.Tab,
    "KP_Space": ControlKey.Space,
    "KP_Home": ControlKey.Home,
    "KP_End": ControlKey.End,
    "KP_Up": ControlKey.UpArrow,
    "KP_Down": ControlKey.DownArrow,
    "KP_Left": ControlKey.LeftArrow,
    "KP_Right": ControlKey.RightArrow,
    "KP_Prior": ControlKey.PageUp,
    "KP_Page_Up": ControlKey.PageUp,
    "KP_Next": ControlKey.PageDown,
    "KP_Page_Down": ControlKey.PageDown,
    "KP_Insert": ControlKey.Insert,
    "KP_Delete": ControlKey.Delete,
    "Henkan": ControlKey.Convert,
    "Kana_Lock": ControlKey.Kana,
    "Katakana": ControlKey.Kana,
    "Hiragana": ControlKey.Kana,
    "XF86ScreenSaver": ControlKey.LockScreen,
}


# Deprecated aliases share a keysym with Alt; the reverse map must pick Alt.
_NOT_REVERSED: Final[frozenset[ControlKey]] = frozenset(
    {ControlKey.Option, ControlKey.Menu, ControlKey.Print, ControlKey.LockScreen}
)


KEYSYM_TO_CONTROL_KEY: Final[dict[str, ControlKey]] = {
    **{m.keysym_name: k for k, m in CONTROL_KEY_MAP.items() if k not in _NOT_REVERSED},
    **_KEYSYM_ALIASES,
}


def control_key_for_keysym(name: str) -> ControlKey | None:
    """The ControlKey for an X/Tk keysym name (C{"BackSpace"} -> Backspace).

    Printable keysyms (C{"a"}, C{"eacute"}) are not ControlKeys and give
    C{None}, except C{"space"}, which is sent as the named key.
    """
    return KEYSYM_TO_CONTROL_KEY.get(name)


def keysym_to_unicode(keysym: int) -> int | None:
    """The code point an X keysym types, for the two ranges that need no table.

    Latin-1 keysyms equal their code point; C{0x01000000 + cp} is the
    "Unicode keysym" range.  Other legacy keysyms give C{None}: the viewer
    then uses the character Tk reports.
    """
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return keysym
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return keysym - 0x01000000
    return None


def key_input_for_tk(
    keysym: str,
    char: str,
    *,
    down: bool,
    modifiers: Sequence[int] = (),
    keysym_num: int | None = None,
) -> KeyInput | None:
    """Build the KeyInput for a Tk C{<KeyPress>}/C{<KeyRelease>} event.

    Named keys become C{control_key}; anything that types a character becomes
    C{chr} (with Ctrl held, Tk's C{char} is a control code such as C{"\\x01"},
    so the character is recovered from the keysym).  Returns C{None} for keys
    the protocol cannot express (F13 and up, unknown keysyms).
    """
    mods = list(modifiers)
    ck = control_key_for_keysym(keysym)
    if ck is not None:
        return KeyInput(down=down, control_key=int(ck), modifiers=mods)
    cp: int | None = None
    if len(keysym) == 1:
        cp = ord(keysym)
    elif keysym_num is not None:
        cp = keysym_to_unicode(keysym_num)
    if cp is None and len(char) == 1 and is_typeable(ord(char)):
        cp = ord(char)
    if cp is None or not is_typeable(cp):
        return None
    return KeyInput(down=down, chr=cp, modifiers=mods)
