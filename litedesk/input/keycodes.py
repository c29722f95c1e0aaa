"""X11 keycodes that RustDesk's Map and Translate modes treat specially.

A stock RustDesk client controlling a "Linux" host sends the physical key
as its X11 keycode (the Linux input event code + 8; rdev's
C{keycodes/linux.rs} table), and a RustDesk Linux host presses that keycode
with XTEST, so the host's own keyboard layout decides what it types.  A few
keys get different treatment on the way; these sets name them by keycode,
independently of any layout.  Nothing here touches X.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALTGR",
    "HOTKEY_KEYCODES",
    "LOCK_SYNC_EXEMPT",
    "MAX_KEYCODE",
    "MIN_KEYCODE",
    "MODIFIER_KEYCODES",
    "NUMPAD_KEYCODES",
    "SHIFT_KEYCODES",
]

#: The core protocol's KEYCODE range; servers use a part of it.
MIN_KEYCODE: Final = 8
MAX_KEYCODE: Final = 255

SHIFT_L: Final = 50
SHIFT_R: Final = 62
CONTROL_L: Final = 37
CONTROL_R: Final = 105
ALT_L: Final = 64
#: The right Alt key: AltGr (ISO_Level3_Shift) on most non-US layouts.
ALTGR: Final = 108
META_L: Final = 133
META_R: Final = 134
TAB: Final = 23
RETURN: Final = 36

#: Keys a RustDesk Linux host holds from down to up; every other key's down
#: is a click and its up changes nothing (rustdesk keyboard.rs is_modifier,
#: used by server/connection.rs for KeyEvents to a Linux host).
SHIFT_KEYCODES: Final = frozenset({SHIFT_L, SHIFT_R})
HOTKEY_KEYCODES: Final = frozenset({CONTROL_L, CONTROL_R, ALT_L, ALTGR, META_L, META_R})
MODIFIER_KEYCODES: Final = SHIFT_KEYCODES | HOTKEY_KEYCODES

#: Keys whose events leave Caps Lock and Num Lock alone (input_service.rs
#: skip_led_sync_rdev_key): syncing the locks around a lone modifier press
#: would turn a tap of Meta into Meta+CapsLock.
LOCK_SYNC_EXEMPT: Final = MODIFIER_KEYCODES | {TAB, RETURN}

#: The keypad keys (keyboard.rs is_numpad_rdev_key): KP_0..KP_9 and the
#: keypad's - * / + and decimal point.  Only for these does the client
#: report Num Lock, and only for these does the host match it.
NUMPAD_KEYCODES: Final = frozenset({90, 87, 88, 89, 83, 84, 85, 79, 80, 81, 82, 63, 106, 86, 91})
