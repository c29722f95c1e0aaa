"""Tk keyboard events to RustDesk C{KeyEvent}s, for the viewer window.

L{litedesk.input.keys} already knows keysym names and combo strings; this
module adds what only a window needs: the modifier bits of Tk's
C{event.state}, the bookkeeping of keys held down (so that losing the focus
releases them on the host instead of leaving Ctrl stuck), the host key that
opens the viewer's menu and never reaches the remote desktop, and the
"Send keys" table for combinations the local desktop would swallow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from litedesk.input.key_combos import parse_combo
from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.keysyms import control_key_for_keysym, key_input_for_tk
from litedesk.proto import message_pb2 as pb
from litedesk.session.input_messages import key_to_proto as to_key_event

# X11 modifier bits as Tk reports them in event.state.
STATE_SHIFT: Final = 0x0001
STATE_LOCK: Final = 0x0002
STATE_CONTROL: Final = 0x0004
STATE_MOD1: Final = 0x0008  # Alt on every common layout
STATE_MOD4: Final = 0x0040  # Super/Windows
STATE_BUTTONS: Final = 0x1F00

# Mod2 is NumLock and Mod5 usually AltGr (ISO_Level3_Shift): neither is sent
# as a modifier, the character Tk reports already includes their effect.
_STATE_MODIFIERS: Final[tuple[tuple[int, ControlKey], ...]] = (
    (STATE_CONTROL, ControlKey.Control),
    (STATE_SHIFT, ControlKey.Shift),
    (STATE_MOD1, ControlKey.Alt),
    (STATE_MOD4, ControlKey.Meta),
)

MODIFIER_KEYSYMS: Final[frozenset[str]] = frozenset(
    {
        "Shift_L",
        "Shift_R",
        "Control_L",
        "Control_R",
        "Alt_L",
        "Alt_R",
        "Meta_L",
        "Meta_R",
        "Super_L",
        "Super_R",
        "ISO_Level3_Shift",
    }
)


def modifiers_for_state(state: int) -> list[int]:
    """ControlKey numbers for the modifiers held according to C{event.state}."""
    return [int(ck) for bit, ck in _STATE_MODIFIERS if state & bit]


def key_for_tk_event(
    keysym: str, char: str, keysym_num: int | None, state: int, *, down: bool
) -> KeyInput | None:
    """The KeyInput for one Tk key event, or C{None} when the protocol cannot say it.

    Modifier keys themselves are sent as named keys (so Ctrl+click and
    Shift+drag work on the host); other keys carry the held modifiers.
    """
    mods = [] if keysym in MODIFIER_KEYSYMS else modifiers_for_state(state)
    return key_input_for_tk(keysym, char, down=down, modifiers=mods, keysym_num=keysym_num)


class HeldKeys:
    """Keys sent down and not yet up, by X keycode (the physical key).

    The release must undo exactly what the press sent: with Shift released
    first, pressing "H" and releasing "h" are one key, which only the
    keycode says.  Auto-repeat (repeated press/release pairs) is harmless.
    Focus loss releases whatever is still held.
    """

    def __init__(self) -> None:
        self._held: dict[int, KeyInput] = {}

    def down(self, keycode: int, k: KeyInput) -> None:
        self._held[keycode] = k

    def up(self, keycode: int) -> KeyInput | None:
        """The key-up to send for C{keycode}, or C{None} if it was never sent
        down (e.g. the release of the host key, or of a key pressed before
        the window had the focus)."""
        k = self._held.pop(keycode, None)
        if k is None:
            return None
        return _up(k)

    def release_all(self) -> list[KeyInput]:
        """Key-up events for everything held, modifiers last."""
        ups = [_up(k) for k in self._held.values()]
        self._held.clear()
        ups.sort(key=lambda k: k.control_key is not None)
        return ups

    def __len__(self) -> int:
        return len(self._held)


def _up(k: KeyInput) -> KeyInput:
    return KeyInput(down=False, control_key=k.control_key, chr=k.chr, modifiers=[])


@dataclass(frozen=True)
class HostKey:
    """The local key that opens the viewer menu (TigerVNC's F8).

    Any keysym name Tk knows; a name that is not a ControlKey and not one
    character is refused, since the menu could then never send it on.
    """

    keysym: str = "F8"

    def __post_init__(self) -> None:
        if control_key_for_keysym(self.keysym) is None and len(self.keysym) != 1:
            raise ValueError(f"unknown host key {self.keysym!r} (use a Tk keysym name, e.g. F8)")

    def matches(self, keysym: str) -> bool:
        return keysym == self.keysym

    def send_event(self) -> KeyInput:
        """The press that sends the host key itself to the remote desktop."""
        ck = control_key_for_keysym(self.keysym)
        if ck is not None:
            return KeyInput(press=True, control_key=int(ck))
        return KeyInput(press=True, chr=ord(self.keysym))


#: "Send keys" menu: label, combo (see L{litedesk.input.key_combos.parse_combo}).
#: Ctrl+Alt+Del is RustDesk's C{CtrlAltDel} request, which the host turns
#: into the real combination.
SEND_KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("Ctrl+Alt+Del", "CtrlAltDel"),
    ("Ctrl+Alt+Backspace", "ctrl+alt+BackSpace"),
    ("Ctrl+Esc", "ctrl+Escape"),
    ("Alt+Tab", "alt+Tab"),
    ("Alt+F4", "alt+F4"),
    ("Alt+F2", "alt+F2"),
    ("Super (Windows key)", "Super_L"),
    ("Print Screen", "Print"),
    ("Ctrl+Alt+F1", "ctrl+alt+F1"),
    ("Ctrl+Alt+F2", "ctrl+alt+F2"),
    ("Ctrl+Alt+F7", "ctrl+alt+F7"),
)


def combo_event(combo: str) -> pb.KeyEvent:
    """The KeyEvent a "Send keys" entry sends."""
    if combo == "CtrlAltDel":
        return to_key_event(KeyInput(press=True, control_key=int(ControlKey.CtrlAltDel)))
    return to_key_event(parse_combo(combo))
