"""Input events between their protobuf form and the plain values of L{litedesk.input}.

The viewer builds C{KeyEvent}s from L{KeyInput}s; the host turns received
C{MouseEvent}/C{KeyEvent}s back into L{MouseInput}/L{KeyInput}s for the
injector, which validates them.

LiteDesk viewers send what the injector understands directly: Legacy key
events and RustDesk's mouse mask.  Stock RustDesk clients
(docs/protocol.rst §8.3) differ in two ways, converted here when the host
says the peer is one (C{rustdesk=True}):

* Keyboard: against a host whose C{PeerInfo.version} is 1.2.0 or later and
  whose platform is not Android, a stock client sends Map mode: one event per
  physical key, C{chr} holding the key's code in the I{host's} native space;
  for a "Linux" host that is the X11 keycode (evdev code + 8).  Translate mode
  sends the same codes for keys that produce no text (and text as C{seq}).
  Those codes become Legacy events for the same key on a US layout: the
  ControlKey of a named key, or the unshifted character of a character key
  (Shift, held as a key of its own, still applies on the host).  Like a
  RustDesk Linux host (connection.rs, KeyEvent handling), the down of a key
  that is not a modifier is a click, and its up is dropped: keys held across
  a slow network would otherwise auto-repeat on the host.
* Mouse: a RustDesk host negates the horizontal wheel and trackpad delta
  (input_service.rs, handle_mouse_), so a stock client sends C{x > 0} to
  scroll left; the injector's convention is C{x > 0} right.
"""

from __future__ import annotations

from typing import Final

from litedesk.input.keys import ControlKey, KeyboardMode, KeyInput
from litedesk.input.mouse import MouseInput, MouseType
from litedesk.proto import message_pb2 as pb

__all__ = [
    "X11_KEYCODES",
    "key_from_proto",
    "key_to_proto",
    "keycode_key",
    "mouse_from_proto",
]

_CK = ControlKey


def _x11_keycodes() -> dict[int, ControlKey | str]:
    """X11 keycode (evdev + 8) -> the key it is on a US layout.

    Written from the Linux input event codes (linux/input-event-codes.h),
    which is what RustDesk's key tables (rdev's linux keycodes) use too.
    """
    table: dict[int, ControlKey | str] = {}

    def run(first_evdev: int, keys: str) -> None:
        for i, c in enumerate(keys):
            table[first_evdev + 8 + i] = c

    run(2, "1234567890-=")
    run(16, "qwertyuiop[]")
    run(30, "asdfghjkl;'`")
    run(43, "\\zxcvbnm,./")
    named = {
        1: _CK.Escape,
        14: _CK.Backspace,
        15: _CK.Tab,
        28: _CK.Return,
        29: _CK.Control,
        42: _CK.Shift,
        54: _CK.RShift,
        55: _CK.Multiply,
        56: _CK.Alt,
        57: _CK.Space,
        58: _CK.CapsLock,
        69: _CK.NumLock,
        70: _CK.Scroll,
        71: _CK.Numpad7,
        72: _CK.Numpad8,
        73: _CK.Numpad9,
        74: _CK.Subtract,
        75: _CK.Numpad4,
        76: _CK.Numpad5,
        77: _CK.Numpad6,
        78: _CK.Add,
        79: _CK.Numpad1,
        80: _CK.Numpad2,
        81: _CK.Numpad3,
        82: _CK.Numpad0,
        83: _CK.Decimal,
        87: _CK.F11,
        88: _CK.F12,
        96: _CK.NumpadEnter,
        97: _CK.RControl,
        98: _CK.Divide,
        99: _CK.Print,
        100: _CK.RAlt,
        102: _CK.Home,
        103: _CK.UpArrow,
        104: _CK.PageUp,
        105: _CK.LeftArrow,
        106: _CK.RightArrow,
        107: _CK.End,
        108: _CK.DownArrow,
        109: _CK.PageDown,
        110: _CK.Insert,
        111: _CK.Delete,
        113: _CK.VolumeMute,
        114: _CK.VolumeDown,
        115: _CK.VolumeUp,
        116: _CK.Power,
        117: _CK.Equals,
        119: _CK.Pause,
        125: _CK.Meta,
        126: _CK.RWin,
        127: _CK.Apps,
    }
    for n in range(1, 11):  # F1..F10 are evdev 59..68
        named[58 + n] = ControlKey[f"F{n}"]
    for evdev, key in named.items():
        table[evdev + 8] = key
    # The ISO key left of Z (evdev KEY_102ND): "<" on most layouts, "\" on US.
    table[86 + 8] = "\\"
    return table


#: X11 keycode -> ControlKey or character, for Map/Translate events to a Linux host.
X11_KEYCODES: Final[dict[int, ControlKey | str]] = _x11_keycodes()

# The keys a RustDesk Linux host holds rather than clicks (common.rs is_modifier
# and keyboard.rs is_modifier: Alt, AltGr, Shift, Control, Meta, both sides).
_HELD_KEYS: Final[frozenset[ControlKey]] = frozenset(
    {_CK.Alt, _CK.RAlt, _CK.Shift, _CK.RShift, _CK.Control, _CK.RControl, _CK.Meta, _CK.RWin}
)


def keycode_key(code: int) -> ControlKey | str | None:
    """The key an X11 keycode names on a US layout, or None if unknown.

    Translate mode ORs a Windows virtual-key code into the high 16 bits of
    C{chr} for Windows peers; a RustDesk host masks it off (C{code & 0xFFFF}).
    """
    return X11_KEYCODES.get(code & 0xFFFF)


def mouse_from_proto(ev: pb.MouseEvent, *, rustdesk: bool = False) -> MouseInput:
    mask = ev.mask
    x = ev.x
    if rustdesk and mask & 7 in (MouseType.WHEEL, MouseType.TRACKPAD):
        # A stock client's x > 0 means left (module docstring).
        x = -x
    return MouseInput(mask, x, ev.y, list(ev.modifiers))


def key_from_proto(ev: pb.KeyEvent, *, rustdesk: bool = False) -> KeyInput | None:
    """The L{KeyInput} for a received C{KeyEvent}, or None when there is nothing to do.

    None means: a stock client's key up that the host drops (see the module
    docstring), or a Map/Translate key code with no US-layout key.  With
    C{rustdesk=False} (LiteDesk viewers) the event is passed as it came.
    """
    which = ev.WhichOneof("union")
    k = KeyInput(
        down=ev.down,
        press=ev.press,
        control_key=ev.control_key if which == "control_key" else None,
        chr=ev.chr if which == "chr" else None,
        unicode=ev.unicode if which == "unicode" else None,
        seq=ev.seq if which == "seq" else None,
        modifiers=list(ev.modifiers),
        mode=ev.mode,
    )
    if not rustdesk:
        return k
    if which == "chr" and int(ev.mode) in (KeyboardMode.Map, KeyboardMode.Translate):
        key = keycode_key(ev.chr)
        if key is None:
            return None
        k.mode = KeyboardMode.Legacy
        k.chr = None
        if isinstance(key, str):
            k.chr = ord(key)
        else:
            k.control_key = key
    elif which == "win2win_hotkey":
        # Only sent between two Windows machines; nothing to type on X11.
        return None
    return _click_on_down(k)


def _click_on_down(k: KeyInput) -> KeyInput | None:
    """A RustDesk Linux host's rule: non-modifier downs are clicks, their ups dropped."""
    if k.press or k.seq is not None:
        return k
    if k.control_key is not None and k.control_key in _HELD_KEYS:
        return k
    if k.down:
        k.press = True
        return k
    return None


def key_to_proto(k: KeyInput) -> pb.KeyEvent:
    """The protobuf C{KeyEvent} for a L{KeyInput}."""
    ev = pb.KeyEvent(down=k.down, press=k.press, modifiers=k.modifiers)  # type: ignore[arg-type]
    if k.control_key is not None:
        ev.control_key = k.control_key  # type: ignore[assignment]
    elif k.chr is not None:
        ev.chr = k.chr
    elif k.unicode is not None:
        ev.unicode = k.unicode
    elif k.seq is not None:
        ev.seq = k.seq
    return ev
