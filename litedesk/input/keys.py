"""Keyboard vocabulary shared by the host's injector and the viewer.

* L{ControlKey}: RustDesk's C{ControlKey} enum from C{message.proto}, with the
  same names and numbers, so a protobuf value converts with C{ControlKey(n)}.
* L{KeyInput}: one C{KeyEvent} as plain Python values (the session layer
  converts protobuf to this in one line; nothing here imports protobuf).
* L{is_typeable}: which code points may be typed as text.

Built on these: L{litedesk.input.keysyms} (ControlKey <-> X keysyms, for the
host and for the viewer's Tk events) and L{litedesk.input.key_combos}
(C{"ctrl+a,Return"}, the viewer's C{--keys} option, to KeyInput values).

This module imports neither pynput nor Xlib: the viewer runs without X, and
pynput cannot even be imported without a display.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field

__all__ = ["ControlKey", "KeyInput", "KeyboardMode", "is_typeable"]


class ControlKey(enum.IntEnum):
    """RustDesk's C{ControlKey} (message.proto), numbers as on the wire."""

    Unknown = 0
    Alt = 1
    Backspace = 2
    CapsLock = 3
    Control = 4
    Delete = 5
    DownArrow = 6
    End = 7
    Escape = 8
    F1 = 9
    F10 = 10
    F11 = 11
    F12 = 12
    F2 = 13
    F3 = 14
    F4 = 15
    F5 = 16
    F6 = 17
    F7 = 18
    F8 = 19
    F9 = 20
    Home = 21
    LeftArrow = 22
    Meta = 23
    Option = 24
    PageDown = 25
    PageUp = 26
    Return = 27
    RightArrow = 28
    Shift = 29
    Space = 30
    Tab = 31
    UpArrow = 32
    Numpad0 = 33
    Numpad1 = 34
    Numpad2 = 35
    Numpad3 = 36
    Numpad4 = 37
    Numpad5 = 38
    Numpad6 = 39
    Numpad7 = 40
    Numpad8 = 41
    Numpad9 = 42
    Cancel = 43
    Clear = 44
    Menu = 45
    Pause = 46
    Kana = 47
    Hangul = 48
    Junja = 49
    Final = 50
    Hanja = 51
    Kanji = 52
    Convert = 53
    Select = 54
    Print = 55
    Execute = 56
    Snapshot = 57
    Insert = 58
    Help = 59
    Sleep = 60
    Separator = 61
    Scroll = 62
    NumLock = 63
    RWin = 64
    Apps = 65
    Multiply = 66
    Add = 67
    Subtract = 68
    Decimal = 69
    Divide = 70
    Equals = 71
    NumpadEnter = 72
    RShift = 73
    RControl = 74
    RAlt = 75
    VolumeMute = 76
    VolumeUp = 77
    VolumeDown = 78
    Power = 79
    CtrlAltDel = 100
    LockScreen = 101


class KeyboardMode(enum.IntEnum):
    """RustDesk's C{KeyboardMode}.

    LiteDesk viewers send Legacy events.  Map and Translate events from stock
    RustDesk clients carry physical keys as X11 keycodes, which the session
    layer puts in L{KeyInput.keycode}; Auto is handled as Legacy, as a
    RustDesk host does.
    """

    Legacy = 0
    Map = 1
    Translate = 2
    Auto = 3


@dataclass(slots=True)
class KeyInput:
    """One RustDesk C{KeyEvent} as plain values.

    At most one of C{control_key}, C{chr}, C{unicode}, C{seq} and
    C{keycode} is set (the protobuf oneof).  C{press} means down and up;
    otherwise C{down} says whether the key goes down or up.  C{modifiers} are
    ControlKey numbers held around the key.  Values are not trusted: the
    injector validates them.

    C{keycode} is a physical key by its X11 keycode: what C{chr} holds in the
    Map and Translate modes of a stock RustDesk client controlling a Linux
    host (C{mode} says which).  It is pressed as that key, so the host's
    keyboard layout decides the character; C{modifiers} then only report
    Caps Lock and Num Lock, which the host matches around the key.
    """

    down: bool = False
    press: bool = False
    control_key: int | None = None
    chr: int | None = None
    unicode: int | None = None
    seq: str | None = None
    modifiers: list[int] = field(default_factory=list)
    mode: int = 0  # KeyboardMode.Legacy
    keycode: int | None = None


def is_typeable(cp: int) -> bool:
    """Whether code point C{cp} is a character that can be typed as text.

    Control characters other than tab and newline, surrogates and
    non-characters are refused: they are not keys, and some X clients choke on them.
    """
    if not 0 <= cp <= 0x10FFFF:
        return False
    if cp in (0x09, 0x0A, 0x0D):
        return True
    category = unicodedata.category(chr(cp))
    # Cc control, Cs surrogate, Cn unassigned/non-character.
    return category not in ("Cc", "Cs", "Cn")
