"""The X input backend: pynput's Xorg controllers and python-xlib queries.

Named keys, buttons, wheel and motion go through pynput's Xorg backend
(XTEST); characters, text and physical keys through
L{litedesk.input.xtest_typer}.  pynput and python-xlib are imported on first
use: neither can be imported without a display, and the viewer imports the
input package without one.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from twisted.logger import Logger

from litedesk.input.keys import ControlKey
from litedesk.input.keysyms import CONTROL_KEY_MAP
from litedesk.input.mouse import MouseButton, Rect
from litedesk.input.results import InputUnavailable, unsupported
from litedesk.input.validation import KeyRef, PhysicalKey
from litedesk.input.xtest_typer import XTestTyper

__all__ = ["PynputBackend"]

# pynput reads $DISPLAY when it is imported and whenever a controller is
# created; an explicit display name is therefore put into the environment
# for exactly those moments, under this lock.
_ENV_LOCK = threading.Lock()


class PynputBackend:
    """Inject into an X display with pynput (and python-xlib for queries).

    Use it from a single thread: the pynput controllers and the Xlib
    connection are not shared across threads.
    """

    _log = Logger()

    def __init__(self, display: str | None = None) -> None:
        self._display_name = display
        self._kb: Any = None
        self._mouse: Any = None
        self._keys: Any = None
        self._buttons: dict[MouseButton, Any] = {}
        self._xdisplay: Any = None
        self._typer: Any = None

    def _ensure(self) -> None:
        if self._kb is not None:
            return
        name = self._display_name or os.environ.get("DISPLAY")
        if not name:
            raise InputUnavailable("no X display: set DISPLAY or pass a display name")
        try:
            # Through importlib: python-xlib has no type stubs here.
            xdisplay = importlib.import_module("Xlib.display").Display(name)
        except Exception as e:
            raise InputUnavailable(f"cannot open X display {name}: {e}") from e
        if not xdisplay.has_extension("XTEST"):
            xdisplay.close()
            raise InputUnavailable(f"X display {name} has no XTEST extension")
        with _ENV_LOCK:
            old = os.environ.get("DISPLAY")
            os.environ["DISPLAY"] = name
            try:
                # The Xorg modules directly: pynput would otherwise honour
                # $PYNPUT_BACKEND (e.g. "dummy", or uinput into the console).
                kb_mod = importlib.import_module("pynput.keyboard._xorg")
                mouse_mod = importlib.import_module("pynput.mouse._xorg")
                self._kb = kb_mod.Controller()
                self._mouse = mouse_mod.Controller()
            except Exception as e:
                xdisplay.close()
                raise InputUnavailable(f"pynput cannot use X display {name}: {e}") from e
            finally:
                if old is None:
                    del os.environ["DISPLAY"]
                else:
                    os.environ["DISPLAY"] = old
        self._keys = kb_mod
        B = mouse_mod.Button
        self._buttons = {
            MouseButton.LEFT: B.left,
            MouseButton.RIGHT: B.right,
            MouseButton.MIDDLE: B.middle,
            MouseButton.BACK: B.button8,
            MouseButton.FORWARD: B.button9,
        }
        self._xdisplay = xdisplay
        self._typer = XTestTyper(xdisplay)
        self._log.debug("pynput injection ready on {display}", display=name)

    def desktop(self) -> Rect:
        self._ensure()
        # Asked of the server: the screen size in the connection's setup
        # data stays what it was at connect time when RandR resizes the root.
        geometry = self._xdisplay.screen().root.get_geometry()
        return Rect(0, 0, geometry.width, geometry.height)

    def pointer(self) -> tuple[int, int]:
        self._ensure()
        x, y = self._mouse.position
        return int(x), int(y)

    def move_to(self, x: int, y: int) -> None:
        self._ensure()
        self._mouse.position = (x, y)

    def press_button(self, button: MouseButton) -> None:
        self._ensure()
        self._mouse.press(self._buttons[button])

    def release_button(self, button: MouseButton) -> None:
        self._ensure()
        self._mouse.release(self._buttons[button])

    def scroll(self, dx: int, dy: int) -> None:
        self._ensure()
        self._mouse.scroll(dx, dy)

    def _pynput_key(self, key: ControlKey) -> Any:
        mapping = CONTROL_KEY_MAP[key]
        # Named keys go through XTEST by keycode; a keysym missing from the
        # keymap would be sent as keycode 0, which X rejects.
        if not self._xdisplay.keysym_to_keycode(mapping.keysym):
            raise unsupported(f"{mapping.keysym_name} is not in the host's keymap")
        if mapping.pynput_name is not None:
            member = getattr(self._keys.Key, mapping.pynput_name, None)
            if member is not None:
                return member
        return self._keys.KeyCode.from_vk(mapping.keysym)

    def press_key(self, key: KeyRef) -> None:
        self._ensure()
        if isinstance(key, PhysicalKey):
            self._typer.press_keycode(key.code)
        elif isinstance(key, str):
            self._typer.press(key)
        else:
            self._kb.press(self._pynput_key(key))

    def release_key(self, key: KeyRef) -> None:
        self._ensure()
        if isinstance(key, PhysicalKey):
            self._typer.release_keycode(key.code)
        elif isinstance(key, str):
            self._typer.release(key)
        else:
            self._kb.release(self._pynput_key(key))

    def lock_state(self) -> tuple[bool, bool]:
        """Whether Caps Lock and Num Lock are on, from the core modifier state.

        Caps Lock is the Lock modifier; Num Lock is whichever modifier the
        Num_Lock key is mapped to (Mod2 on every common layout).
        """
        self._ensure()
        mask = int(self._xdisplay.screen().root.query_pointer().mask)
        return bool(mask & 0x02), bool(mask & self._numlock_mask())

    def _numlock_mask(self) -> int:
        # Asked each time: setxkbmap may have remapped the modifiers.
        numlock = self._xdisplay.keysym_to_keycode(0xFF7F)  # Num_Lock
        for index, keycodes in enumerate(self._xdisplay.get_modifier_mapping()):
            if numlock and numlock in keycodes:
                return 1 << index
        return 0x10  # Mod2

    def type_text(self, text: str) -> None:
        self._ensure()
        self._typer.type(text)

    def close(self) -> None:
        if self._xdisplay is not None:
            try:
                self._typer.restore()
            finally:
                self._xdisplay.close()
                self._xdisplay = None
        # pynput's controllers close their connections when collected.
        self._kb = self._mouse = None
