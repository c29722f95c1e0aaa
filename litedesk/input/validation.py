"""Validation of untrusted input events into actions.

L{plan_mouse} and L{plan_key} turn a L{MouseInput}/L{KeyInput} straight from
the network into a L{MouseAction}/L{KeyAction}, or raise
L{litedesk.input.results.Refused} saying
why not.  They never touch X, so they are safe on the reactor thread and are
fuzzed by the tests; they are separate from the injector so that nothing
here can reach a display.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from litedesk.input.keycodes import LOCK_SYNC_EXEMPT, MAX_KEYCODE, MIN_KEYCODE, NUMPAD_KEYCODES
from litedesk.input.keys import ControlKey, KeyboardMode, KeyInput, is_typeable
from litedesk.input.keysyms import CONTROL_KEY_MAP, CTRL_ALT_DEL, LOCK_KEYS, MODIFIER_KEYS
from litedesk.input.mouse import ALL_BUTTONS, MouseButton, MouseInput, MouseType
from litedesk.input.results import invalid, unsupported

__all__ = [
    "MAX_MODIFIERS",
    "MAX_SEQ_CHARS",
    "Action",
    "KeyAction",
    "KeyRef",
    "LockSync",
    "MouseAction",
    "PhysicalKey",
    "plan_key",
    "plan_mouse",
]

#: Longest C{seq} text typed in one event.  RustDesk sends short IME
#: compositions here; typing costs about 1.5 ms a character, so this bounds
#: one event at a few seconds of the input thread.
MAX_SEQ_CHARS: Final = 2048
#: More modifiers than this in one event is not a keyboard.
MAX_MODIFIERS: Final = 16

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PhysicalKey:
    """A key by its X11 keycode, pressed as that key: the host's keyboard
    layout, not the peer's, decides what it types (RustDesk's Map mode)."""

    code: int


#: A key for the backend: a named key, a single character to type, or a
#: physical key.
KeyRef = ControlKey | str | PhysicalKey


@dataclass(frozen=True, slots=True)
class LockSync:
    """The Caps Lock and Num Lock states a key event wants on the host.

    A RustDesk host compares them with its own before the key, toggles the
    locks that differ, and toggles them back after it (input_service.rs,
    LockModesHandler): the key is typed as under the peer's locks while the
    host's own lock state is left as it was.  C{num} None leaves Num Lock alone.
    """

    caps: bool
    num: bool | None = None


@dataclass(frozen=True, slots=True)
class MouseAction:
    """A validated mouse event."""

    kind: MouseType
    buttons: tuple[MouseButton, ...]
    x: int
    y: int
    modifiers: tuple[ControlKey, ...]


@dataclass(frozen=True, slots=True)
class KeyAction:
    """A validated key event: C{key} or C{text} is set, never both.

    @ivar locks: lock states to hold around the key or text (L{LockSync}),
        or None to leave the locks alone.
    @ivar release_shift: before typing C{text}, let go of the Shift keys
        the peer holds, unless a hotkey modifier is held too: the peer sent
        the characters Shift already produced on its side (RustDesk's
        Translate mode; input_service.rs release_shift_for_char_input).
    """

    action: str  # "press", "down" or "up"
    key: KeyRef | None
    text: str | None
    modifiers: tuple[ControlKey, ...]
    locks: LockSync | None = None
    release_shift: bool = False


Action = MouseAction | KeyAction


def _is_int(value: object) -> bool:
    # bool is an int subclass, and True is not a coordinate.
    return isinstance(value, int) and not isinstance(value, bool)


def _int32(value: object, what: str) -> int:
    if not _is_int(value):
        raise invalid(f"{what} is not an integer")
    assert isinstance(value, int)
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise invalid(f"{what} out of the 32-bit range")
    return value


def _modifiers(value: object) -> tuple[ControlKey, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise invalid("modifiers is not a list")
    if len(value) > MAX_MODIFIERS:
        raise invalid(f"{len(value)} modifiers")
    mods: list[ControlKey] = []
    for item in value:
        if not _is_int(item):
            raise invalid("modifier is not an integer")
        try:
            ck = ControlKey(item)
        except ValueError:
            raise invalid(f"unknown ControlKey {item} in modifiers") from None
        if ck in LOCK_KEYS:
            # Peers report lock state this way; pressing would toggle it.
            continue
        if ck not in MODIFIER_KEYS:
            raise invalid(f"{ck.name} is not a modifier")
        if ck not in mods:
            mods.append(ck)
    return tuple(mods)


def _char_key(cp: object, what: str) -> KeyRef:
    if not _is_int(cp):
        raise invalid(f"{what} is not an integer")
    assert isinstance(cp, int)
    if not is_typeable(cp):
        raise invalid(f"{what} {cp:#x} is not a typeable character")
    # Line breaks and tabs are keys, not characters, for X clients.
    if cp in (0x0A, 0x0D):
        return ControlKey.Return
    if cp == 0x09:
        return ControlKey.Tab
    return chr(cp)


def plan_mouse(ev: object) -> MouseAction:
    """Validate a mouse event.  @raise litedesk.input.results.Refused: with the reason."""
    if not isinstance(ev, MouseInput):
        raise invalid("not a MouseInput")
    mask = _int32(ev.mask, "mask")
    x = _int32(ev.x, "x")
    y = _int32(ev.y, "y")
    if mask < 0:
        raise invalid("negative mask")
    kind_bits, button_bits = mask & 7, mask >> 3
    try:
        kind = MouseType(kind_bits)
    except ValueError:
        raise invalid(f"unknown mouse event type {kind_bits}") from None
    mods = _modifiers(ev.modifiers)
    buttons: tuple[MouseButton, ...] = ()
    if kind in (MouseType.DOWN, MouseType.UP):
        if button_bits == 0:
            raise invalid("button event without a button")
        if button_bits & ~ALL_BUTTONS:
            raise invalid(f"unknown button bits {button_bits:#x}")
        buttons = tuple(b for b in MouseButton if button_bits & b)
    # Moves may carry the held buttons (drags); they change nothing here.
    return MouseAction(kind, buttons, x, y, mods)


def plan_key(ev: object) -> KeyAction:
    """Validate a key event.  @raise litedesk.input.results.Refused: with the reason."""
    if not isinstance(ev, KeyInput):
        raise invalid("not a KeyInput")
    if not isinstance(ev.down, bool) or not isinstance(ev.press, bool):
        raise invalid("down/press are not booleans")
    if not _is_int(ev.mode):
        raise invalid("mode is not an integer")
    if ev.mode not in tuple(KeyboardMode):
        raise invalid(f"unknown keyboard mode {ev.mode}")
    action = "press" if ev.press else ("down" if ev.down else "up")
    _check_one_key_field(ev)
    if ev.keycode is not None:
        return _keycode_action(ev, action)
    if ev.mode == KeyboardMode.Map:
        # A Map-mode chr is a physical key code of the peer's platform; only
        # the session layer knows whether the peer is a RustDesk client that
        # meant an X11 keycode (KeyInput.keycode).
        raise unsupported("keyboard mode Map is not supported; use Legacy")
    mods = _modifiers(ev.modifiers)
    if ev.control_key is not None:
        return _control_key_action(ev.control_key, action, mods)
    if ev.chr is not None:
        return KeyAction(action, _char_key(ev.chr, "chr"), None, mods)
    if ev.unicode is not None:
        return KeyAction(action, _char_key(ev.unicode, "unicode"), None, mods)
    text = _typeable_seq(ev.seq)
    if ev.mode == KeyboardMode.Translate:
        # What the peer's layout produced, typed as text under the peer's
        # Caps Lock (a stock client reports none here, so the host's is off
        # while typing) and without the Shift that produced it.
        caps = ControlKey.CapsLock in _lock_states(ev.modifiers)
        return KeyAction(action, None, text, (), LockSync(caps), release_shift=True)
    # Text is typed as is; modifiers would turn it into shortcuts.
    return KeyAction(action, None, text, ())


def _check_one_key_field(ev: KeyInput) -> None:
    """Exactly one of the key fields is set, as in the protobuf oneof."""
    present = [
        name
        for name in ("control_key", "chr", "unicode", "seq", "keycode")
        if getattr(ev, name) is not None
    ]
    if not present:
        raise invalid("no key in the event")
    if len(present) > 1:
        raise invalid(f"more than one key field: {', '.join(present)}")


def _keycode_action(ev: KeyInput, action: str) -> KeyAction:
    """A physical key (RustDesk's Map and Translate modes), by X11 keycode.

    Modifiers in the event only report lock states: a stock client sends
    Shift, Control and the rest as keys of their own.  The locks are matched
    around every key that may produce a character (not the modifiers, Tab
    or Return; Num Lock only for keypad keys), as a RustDesk host does.
    """
    if ev.mode not in (KeyboardMode.Map, KeyboardMode.Translate):
        raise invalid(f"a keycode in keyboard mode {ev.mode}, not Map or Translate")
    code = ev.keycode
    if not _is_int(code):
        raise invalid("keycode is not an integer")
    assert isinstance(code, int)
    if not MIN_KEYCODE <= code <= MAX_KEYCODE:
        raise invalid(f"keycode {code} is not an X11 keycode ({MIN_KEYCODE}-{MAX_KEYCODE})")
    locks = _lock_states(ev.modifiers)
    sync = None
    if action != "up" and code not in LOCK_SYNC_EXEMPT:
        num = ControlKey.NumLock in locks if code in NUMPAD_KEYCODES else None
        sync = LockSync(ControlKey.CapsLock in locks, num)
    return KeyAction(action, PhysicalKey(code), None, (), sync)


def _lock_states(value: object) -> frozenset[ControlKey]:
    """The lock keys listed in a physical key's or a Translate text's modifiers.

    The rest of the list means nothing there (a RustDesk host ignores it),
    but it must still be a short list of ControlKey numbers.
    """
    if value is None:
        return frozenset()
    if not isinstance(value, list | tuple):
        raise invalid("modifiers is not a list")
    if len(value) > MAX_MODIFIERS:
        raise invalid(f"{len(value)} modifiers")
    locks = set()
    for item in value:
        if not _is_int(item):
            raise invalid("modifier is not an integer")
        try:
            ck = ControlKey(item)
        except ValueError:
            raise invalid(f"unknown ControlKey {item} in modifiers") from None
        if ck in LOCK_KEYS:
            locks.add(ck)
    return frozenset(locks)


def _control_key_action(value: int, action: str, mods: tuple[ControlKey, ...]) -> KeyAction:
    """The action for a C{control_key} field, which must name a key X11 has."""
    if not _is_int(value):
        raise invalid("control_key is not an integer")
    try:
        ck = ControlKey(value)
    except ValueError:
        raise invalid(f"unknown ControlKey {value}") from None
    if ck is ControlKey.CtrlAltDel:
        *extra, key = CTRL_ALT_DEL
        merged = tuple(dict.fromkeys((*mods, *extra)))
        return KeyAction(action, key, None, merged)
    if ck not in CONTROL_KEY_MAP:
        raise unsupported(f"{ck.name} has no X11 equivalent")
    return KeyAction(action, ck, None, mods)


def _typeable_seq(seq: object) -> str:
    """A C{seq} field checked to be short text that can be typed."""
    if not isinstance(seq, str):
        raise invalid("seq is not a string")
    if len(seq) > MAX_SEQ_CHARS:
        raise invalid(f"seq of {len(seq)} characters exceeds {MAX_SEQ_CHARS}")
    if not all(is_typeable(ord(c)) for c in seq):
        raise invalid("seq contains characters that cannot be typed")
    return seq
