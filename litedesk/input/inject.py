"""Host-side input injection: RustDesk mouse and key events into an X display.

Three layers:

* Validation (L{InputInjector.plan_mouse}, L{InputInjector.plan_key}) turns an
  untrusted L{MouseInput}/L{KeyInput} into an action or an L{InjectResult}
  saying why it was refused.  It never raises and never touches X, so it is
  safe on the reactor thread and is fuzzed by the tests.
* Execution (L{InputInjector.run}) drives an L{InputBackend}: modifiers
  pressed around a key are always released, held keys and buttons are
  tracked, and L{InputInjector.release_all} lets go of everything when a
  session ends so that no key stays stuck on the host.
* L{PynputBackend} injects named keys, buttons, wheel and motion through
  pynput's Xorg backend (XTEST), and characters and text through XTEST as
  well (L{_XTestTyper}): real key events that every client accepts, with a
  spare keycode borrowed (and given back on close) for characters that are
  not on the host's keyboard.  pynput is imported lazily: it cannot be
  imported at all without a display.

X calls block (a round trip each; typing takes about 1.5 ms a character), so
a session should use L{InputWorker}, which validates on the reactor thread and
executes on one dedicated thread, in order.

Coordinates: absolute moves carry virtual-desktop coordinates, which the
viewer computes by adding the shown monitor's origin (see
L{litedesk.input.mouse.ViewMapping}).  On X11 the virtual desktop is the
root window, so they are root coordinates; they are clamped to the desktop.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from litedesk.input.keys import (
    CONTROL_KEY_MAP,
    CTRL_ALT_DEL,
    LOCK_KEYS,
    MODIFIER_KEYS,
    ControlKey,
    KeyboardMode,
    KeyInput,
    is_typeable,
)
from litedesk.input.mouse import (
    ALL_BUTTONS,
    MAX_RELATIVE,
    MouseButton,
    MouseInput,
    MouseType,
    Rect,
)

#: Longest C{seq} text typed in one event.  RustDesk sends short IME
#: compositions here; typing costs about 1.5 ms a character, so this bounds
#: one event at a few seconds of the input thread.
MAX_SEQ_CHARS: Final = 2048
#: Wheel notches applied per event and axis; more is clamped.
MAX_WHEEL_STEPS: Final = 20
#: Trackpad scroll deltas are pixels; this many make one wheel notch.
TRACKPAD_UNITS_PER_STEP: Final = 40
#: Pause after mapping a spare keycode to a character not on the keyboard,
#: before the first key event on it (see L{_XTestTyper._borrow}).  With 0.05 s
#: a loaded 2-core machine lost a character now and then; 0.15 s is a wider
#: margin, not a guarantee.
BORROW_SETTLE_SECONDS: Final = 0.15
#: A borrowed keycode is not remapped until this long after its last use.
EVICT_GUARD_SECONDS: Final = 0.6
#: More modifiers than this in one event is not a keyboard.
MAX_MODIFIERS: Final = 16

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

#: A key for the backend: a named key, or a single character to type.
KeyRef = ControlKey | str


@dataclass(frozen=True, slots=True)
class InjectResult:
    """What happened to one event.

    @ivar code: C{"ok"}, or why it was not injected: C{"view-only"},
        C{"invalid"} (malformed values), C{"unsupported"} (valid, but not
        possible on this host), C{"backend"} (X failed), C{"unavailable"}
        (no usable display), C{"overloaded"} (a move dropped under backlog).
    """

    ok: bool
    code: str = "ok"
    reason: str = ""


OK: Final = InjectResult(True)
_VIEW_ONLY: Final = InjectResult(False, "view-only", "input refused: view-only session")


class InputUnavailable(Exception):
    """No usable X display (none configured, unreachable, or no XTEST)."""


class InputBackend(Protocol):
    """The low-level operations an injector needs; one per display."""

    def desktop(self) -> Rect:
        """The virtual desktop in the coordinates of L{move_to}."""

    def pointer(self) -> tuple[int, int]: ...

    def move_to(self, x: int, y: int) -> None: ...

    def press_button(self, button: MouseButton) -> None: ...

    def release_button(self, button: MouseButton) -> None: ...

    def scroll(self, dx: int, dy: int) -> None: ...

    def press_key(self, key: KeyRef) -> None: ...

    def release_key(self, key: KeyRef) -> None: ...

    def type_text(self, text: str) -> None: ...

    def close(self) -> None: ...


class _Refused(Exception):
    def __init__(self, result: InjectResult) -> None:
        super().__init__(result.reason)
        self.result = result


def _invalid(reason: str) -> _Refused:
    return _Refused(InjectResult(False, "invalid", reason))


def _unsupported(reason: str) -> _Refused:
    return _Refused(InjectResult(False, "unsupported", reason))


# --- validated actions --------------------------------------------------------


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
    """A validated key event: C{key} or C{text} is set, never both."""

    action: str  # "press", "down" or "up"
    key: KeyRef | None
    text: str | None
    modifiers: tuple[ControlKey, ...]


Action = MouseAction | KeyAction


def _is_int(value: object) -> bool:
    # bool is an int subclass, and True is not a coordinate.
    return isinstance(value, int) and not isinstance(value, bool)


def _int32(value: object, what: str) -> int:
    if not _is_int(value):
        raise _invalid(f"{what} is not an integer")
    assert isinstance(value, int)
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise _invalid(f"{what} out of the 32-bit range")
    return value


def _modifiers(value: object) -> tuple[ControlKey, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise _invalid("modifiers is not a list")
    if len(value) > MAX_MODIFIERS:
        raise _invalid(f"{len(value)} modifiers")
    mods: list[ControlKey] = []
    for item in value:
        if not _is_int(item):
            raise _invalid("modifier is not an integer")
        try:
            ck = ControlKey(item)
        except ValueError:
            raise _invalid(f"unknown ControlKey {item} in modifiers") from None
        if ck in LOCK_KEYS:
            # Peers report lock state this way; pressing would toggle it.
            continue
        if ck not in MODIFIER_KEYS:
            raise _invalid(f"{ck.name} is not a modifier")
        if ck not in mods:
            mods.append(ck)
    return tuple(mods)


def _char_key(cp: object, what: str) -> KeyRef:
    if not _is_int(cp):
        raise _invalid(f"{what} is not an integer")
    assert isinstance(cp, int)
    if not is_typeable(cp):
        raise _invalid(f"{what} {cp:#x} is not a typeable character")
    # Line breaks and tabs are keys, not characters, for X clients.
    if cp in (0x0A, 0x0D):
        return ControlKey.Return
    if cp == 0x09:
        return ControlKey.Tab
    return chr(cp)


def plan_mouse(ev: object) -> MouseAction:
    """Validate a mouse event.  @raise _Refused: with the reason."""
    if not isinstance(ev, MouseInput):
        raise _invalid("not a MouseInput")
    mask = _int32(ev.mask, "mask")
    x = _int32(ev.x, "x")
    y = _int32(ev.y, "y")
    if mask < 0:
        raise _invalid("negative mask")
    kind_bits, button_bits = mask & 7, mask >> 3
    try:
        kind = MouseType(kind_bits)
    except ValueError:
        raise _invalid(f"unknown mouse event type {kind_bits}") from None
    mods = _modifiers(ev.modifiers)
    buttons: tuple[MouseButton, ...] = ()
    if kind in (MouseType.DOWN, MouseType.UP):
        if button_bits == 0:
            raise _invalid("button event without a button")
        if button_bits & ~ALL_BUTTONS:
            raise _invalid(f"unknown button bits {button_bits:#x}")
        buttons = tuple(b for b in MouseButton if button_bits & b)
    # Moves may carry the held buttons (drags); they change nothing here.
    return MouseAction(kind, buttons, x, y, mods)


def plan_key(ev: object) -> KeyAction:
    """Validate a key event.  @raise _Refused: with the reason."""
    if not isinstance(ev, KeyInput):
        raise _invalid("not a KeyInput")
    if not isinstance(ev.down, bool) or not isinstance(ev.press, bool):
        raise _invalid("down/press are not booleans")
    if not _is_int(ev.mode):
        raise _invalid("mode is not an integer")
    if ev.mode == KeyboardMode.Map:
        # Map mode carries the viewer's physical key codes, which only mean
        # something on the same platform and layout.
        raise _unsupported("keyboard mode Map is not supported; use Legacy")
    if ev.mode not in tuple(KeyboardMode):
        raise _invalid(f"unknown keyboard mode {ev.mode}")
    mods = _modifiers(ev.modifiers)
    action = "press" if ev.press else ("down" if ev.down else "up")
    present = [
        name for name in ("control_key", "chr", "unicode", "seq") if getattr(ev, name) is not None
    ]
    if not present:
        raise _invalid("no key in the event")
    if len(present) > 1:
        raise _invalid(f"more than one key field: {', '.join(present)}")
    if ev.control_key is not None:
        if not _is_int(ev.control_key):
            raise _invalid("control_key is not an integer")
        try:
            ck = ControlKey(ev.control_key)
        except ValueError:
            raise _invalid(f"unknown ControlKey {ev.control_key}") from None
        if ck is ControlKey.CtrlAltDel:
            *extra, key = CTRL_ALT_DEL
            merged = tuple(dict.fromkeys((*mods, *extra)))
            return KeyAction(action, key, None, merged)
        if ck not in CONTROL_KEY_MAP:
            raise _unsupported(f"{ck.name} has no X11 equivalent")
        return KeyAction(action, ck, None, mods)
    if ev.chr is not None:
        return KeyAction(action, _char_key(ev.chr, "chr"), None, mods)
    if ev.unicode is not None:
        return KeyAction(action, _char_key(ev.unicode, "unicode"), None, mods)
    seq = ev.seq
    if not isinstance(seq, str):
        raise _invalid("seq is not a string")
    if len(seq) > MAX_SEQ_CHARS:
        raise _invalid(f"seq of {len(seq)} characters exceeds {MAX_SEQ_CHARS}")
    if not all(is_typeable(ord(c)) for c in seq):
        raise _invalid("seq contains characters that cannot be typed")
    # Text is typed as is; modifiers would turn it into shortcuts.
    return KeyAction(action, None, seq, ())


# --- the injector ------------------------------------------------------------


class InputInjector:
    """Apply validated input events to one display, for one session.

    @param backend: where events go; by default a L{PynputBackend} for
        C{display}, created on first use (so constructing an injector never
        touches X).
    @param display: the X display name (C{":0"}); C{None} uses C{$DISPLAY}.
    @param view_only: refuse every event (and say so) instead of injecting.
    @param desktop: the virtual desktop; by default the backend's root window.
    """

    _log = Logger()

    def __init__(
        self,
        backend: InputBackend | None = None,
        *,
        display: str | None = None,
        view_only: bool = False,
        desktop: Rect | None = None,
    ) -> None:
        self._backend = backend
        self._display = display
        self.view_only = view_only
        self._desktop = desktop
        self._held_keys: dict[KeyRef, None] = {}
        self._held_buttons: dict[MouseButton, None] = {}
        self._trackpad = [0, 0]
        self._warned: set[str] = set()
        self.refused = 0

    # -- state ------------------------------------------------------------------

    @property
    def held_keys(self) -> tuple[KeyRef, ...]:
        return tuple(self._held_keys)

    @property
    def held_buttons(self) -> tuple[MouseButton, ...]:
        return tuple(self._held_buttons)

    def _get_backend(self) -> InputBackend:
        if self._backend is None:
            self._backend = PynputBackend(self._display)
        return self._backend

    def desktop(self) -> Rect:
        if self._desktop is None:
            self._desktop = self._get_backend().desktop()
        return self._desktop

    # -- validation -------------------------------------------------------------

    def _refuse(self, result: InjectResult) -> InjectResult:
        self.refused += 1
        # One warning per kind of refusal and session: a misbehaving peer
        # must not flood the log, but the first instance is worth seeing.
        if result.code not in self._warned:
            self._warned.add(result.code)
            if result.code == "view-only":
                self._log.info("Input refused: this is a view-only session")
            else:
                self._log.warn(
                    "Input event refused ({code}): {reason}",
                    code=result.code,
                    reason=result.reason,
                )
        return result

    def check(self, ev: object) -> Action | InjectResult:
        """Validate C{ev} (a MouseInput or KeyInput) without injecting it.

        Returns the action to L{run}, or the refusal.  Never raises.
        """
        if self.view_only:
            return self._refuse(_VIEW_ONLY)
        try:
            if isinstance(ev, MouseInput):
                return plan_mouse(ev)
            if isinstance(ev, KeyInput):
                return plan_key(ev)
            raise _invalid(f"not an input event: {type(ev).__name__}")
        except _Refused as e:
            return self._refuse(e.result)
        except Exception as e:
            # Validation must never take the session down, whatever arrives.
            self._log.failure("Input validation failed unexpectedly")
            return self._refuse(InjectResult(False, "invalid", f"{type(e).__name__}"))

    def apply(self, ev: object) -> InjectResult:
        """Validate and inject one event.  Never raises."""
        checked = self.check(ev)
        if isinstance(checked, InjectResult):
            return checked
        return self.run(checked)

    apply_mouse = apply
    apply_key = apply

    # -- execution --------------------------------------------------------------

    def run(self, action: Action) -> InjectResult:
        """Inject a validated action.  Never raises."""
        if self.view_only:
            # The mode can change between validation and execution.
            return self._refuse(_VIEW_ONLY)
        try:
            if isinstance(action, MouseAction):
                self._run_mouse(action)
            else:
                self._run_key(action)
        except _Refused as e:
            return self._refuse(e.result)
        except InputUnavailable as e:
            return self._refuse(InjectResult(False, "unavailable", str(e)))
        except Exception as e:
            # pynput raises its own exception types (and Xlib errors) for keys
            # it cannot resolve; none of them may escape into the session.
            self._log.debug("Injection failed: {error!r}", error=e)
            return self._refuse(InjectResult(False, "backend", f"{type(e).__name__}: {e}"))
        return OK

    def _run_mouse(self, a: MouseAction) -> None:
        be = self._get_backend()
        if a.kind is MouseType.MOVE:
            be.move_to(*self.desktop().clamp(a.x, a.y))
        elif a.kind is MouseType.MOVE_RELATIVE:
            dx = max(-MAX_RELATIVE, min(MAX_RELATIVE, a.x))
            dy = max(-MAX_RELATIVE, min(MAX_RELATIVE, a.y))
            px, py = be.pointer()
            be.move_to(*self.desktop().clamp(px + dx, py + dy))
        elif a.kind is MouseType.DOWN:
            with self._modifiers_held(a.modifiers):
                for b in a.buttons:
                    be.press_button(b)
                    self._held_buttons[b] = None
        elif a.kind is MouseType.UP:
            with self._modifiers_held(a.modifiers):
                for b in a.buttons:
                    self._held_buttons.pop(b, None)
                    be.release_button(b)
        elif a.kind is MouseType.WHEEL:
            self._scroll(a.x, a.y, a.modifiers)
        else:  # TRACKPAD: pixel deltas, turned into whole notches
            acc = self._trackpad
            acc[0] += a.x
            acc[1] += a.y
            sx = int(acc[0] / TRACKPAD_UNITS_PER_STEP)
            sy = int(acc[1] / TRACKPAD_UNITS_PER_STEP)
            acc[0] -= sx * TRACKPAD_UNITS_PER_STEP
            acc[1] -= sy * TRACKPAD_UNITS_PER_STEP
            if sx or sy:
                self._scroll(sx, sy, a.modifiers)

    def _scroll(self, dx: int, dy: int, mods: Sequence[ControlKey]) -> None:
        dx = max(-MAX_WHEEL_STEPS, min(MAX_WHEEL_STEPS, dx))
        dy = max(-MAX_WHEEL_STEPS, min(MAX_WHEEL_STEPS, dy))
        if dx or dy:
            with self._modifiers_held(mods):
                self._get_backend().scroll(dx, dy)

    def _run_key(self, a: KeyAction) -> None:
        be = self._get_backend()
        if a.text is not None:
            # Text has no "up": it is typed on press or down.
            if a.action != "up" and a.text:
                be.type_text(a.text)
            return
        assert a.key is not None
        key = a.key
        if a.action == "up":
            self._held_keys.pop(key, None)
            be.release_key(key)
            return
        with self._modifiers_held(a.modifiers):
            be.press_key(key)
            if a.action == "press":
                be.release_key(key)
            else:
                self._held_keys[key] = None

    def _modifiers_held(self, mods: Iterable[ControlKey]) -> _ModifierScope:
        return _ModifierScope(self, tuple(m for m in mods if m not in self._held_keys))

    def release_all(self) -> None:
        """Release every key and button this injector holds down.

        Called when a session ends (or the viewer loses focus) so that a key
        whose "up" never arrived does not stay pressed on the host.  Never
        raises; failures are logged.
        """
        if self._backend is None:
            self._held_keys.clear()
            self._held_buttons.clear()
            return
        be = self._backend
        for key in reversed(list(self._held_keys)):
            try:
                be.release_key(key)
            except Exception:
                self._log.failure("Could not release a held key")
        for button in list(self._held_buttons):
            try:
                be.release_button(button)
            except Exception:
                self._log.failure("Could not release a held button")
        if self._held_keys or self._held_buttons:
            self._log.info(
                "Released {keys} held key(s) and {buttons} button(s)",
                keys=len(self._held_keys),
                buttons=len(self._held_buttons),
            )
        self._held_keys.clear()
        self._held_buttons.clear()
        self._trackpad = [0, 0]

    def close(self) -> None:
        """Release everything and close the backend's display connection."""
        self.release_all()
        if self._backend is not None:
            try:
                self._backend.close()
            except Exception:
                self._log.failure("Closing the input backend failed")
            self._backend = None


class _ModifierScope:
    """Hold modifiers for the duration of a C{with} block; always release."""

    def __init__(self, injector: InputInjector, mods: tuple[ControlKey, ...]) -> None:
        self._injector = injector
        self._mods = mods
        self._pressed: list[ControlKey] = []

    def __enter__(self) -> None:
        be = self._injector._get_backend()
        try:
            for m in self._mods:
                be.press_key(m)
                self._pressed.append(m)
        except BaseException:
            self._release()
            raise

    def __exit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        be = self._injector._get_backend()
        while self._pressed:
            m = self._pressed.pop()
            try:
                be.release_key(m)
            except Exception:
                InputInjector._log.failure("Could not release modifier {mod}", mod=m.name)


# --- pynput backend ----------------------------------------------------------

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
        self._typer = _XTestTyper(xdisplay)
        self._log.debug("pynput injection ready on {display}", display=name)

    def desktop(self) -> Rect:
        self._ensure()
        screen = self._xdisplay.screen()
        return Rect(0, 0, screen.width_in_pixels, screen.height_in_pixels)

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
            raise _unsupported(f"{mapping.keysym_name} is not in the host's keymap")
        if mapping.pynput_name is not None:
            member = getattr(self._keys.Key, mapping.pynput_name, None)
            if member is not None:
                return member
        return self._keys.KeyCode.from_vk(mapping.keysym)

    def press_key(self, key: KeyRef) -> None:
        self._ensure()
        if isinstance(key, str):
            self._typer.press(key)
        else:
            self._kb.press(self._pynput_key(key))

    def release_key(self, key: KeyRef) -> None:
        self._ensure()
        if isinstance(key, str):
            self._typer.release(key)
        else:
            self._kb.release(self._pynput_key(key))

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


def char_to_keysym(ch: str) -> int:
    """The X keysym that types C{ch}: Latin-1 keysyms equal the code point,
    everything else has a Unicode keysym (C{0x01000000 + cp})."""
    cp = ord(ch)
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    return 0x01000000 + cp


class _XTestTyper:
    """Type characters with XTEST, borrowing spare keycodes when needed.

    Why not pynput for characters: pynput sends them with C{XSendEvent},
    which applications such as xterm ignore as synthetic, and it remaps one
    keycode's shift levels for successive missing characters, which raced
    with Tk's keymap refresh here (about 1 run in 10 under load typed two
    euro signs for the euro sign and sharp s).  Here a missing character gets a
    spare keycode of its own with the same keysym on both levels (so Shift
    does not matter), the least recently used borrowed keycode is remapped
    only when no spare one is left, and every borrowed keycode is emptied
    again on L{restore}.

    Clients learn about a changed mapping from a notify event and refresh
    their keymap lazily; a key event on a freshly mapped keycode that a
    client handles before that is looked up in the old (empty) mapping and
    lost.  So after mapping keycodes we pause (L{BORROW_SETTLE_SECONDS}), once
    per batch: L{type} maps all the missing characters of a text together.
    """

    def __init__(self, display: Any) -> None:
        self._d = display
        self._xtest = importlib.import_module("Xlib.ext.xtest")
        self._X = importlib.import_module("Xlib.X")
        self._first: int = display.display.info.min_keycode
        self._count: int = display.display.info.max_keycode - self._first + 1
        self._map: list[list[int]] = []
        self._borrowed: dict[int, int] = {}  # keysym -> keycode, oldest first
        self._down: dict[str, tuple[int, bool]] = {}
        self._used: dict[int, float] = {}  # keycode -> last press (monotonic)
        self._shift: int = display.keysym_to_keycode(0xFFE1)  # Shift_L
        self._refresh()
        # Keycodes with no keysym at all are ours to borrow (Xvfb's default
        # keymap has 19 of them).
        self._capacity = sum(1 for row in self._map if not any(row))

    def _refresh(self) -> None:
        # Someone (setxkbmap, another injector) may have changed the keymap;
        # one round trip keeps our picture right and drops stale loans.
        rows = self._d.get_keyboard_mapping(self._first, self._count)
        self._map = [list(r) for r in rows]
        for ks, kc in list(self._borrowed.items()):
            if self._map[kc - self._first][:2] != [ks, ks]:
                del self._borrowed[ks]

    def _lookup(self, keysym: int, touch: bool = True) -> tuple[int, bool] | None:
        if keysym in self._borrowed:
            if touch:
                self._borrowed[keysym] = self._borrowed.pop(keysym)  # now newest
            return self._borrowed[keysym], False
        for i, row in enumerate(self._map):
            if row[:1] == [keysym]:
                return self._first + i, False
        if self._shift:
            for i, row in enumerate(self._map):
                if len(row) > 1 and row[1] == keysym:
                    return self._first + i, True
        return None

    def _borrow(self, keysyms: list[int]) -> None:
        """Map each keysym to a keycode of its own, then settle once."""
        for keysym in keysyms:
            taken = set(self._borrowed.values())
            spare = [
                self._first + i
                for i, row in enumerate(self._map)
                if not any(row) and self._first + i not in taken
            ]
            if spare:
                kc = spare[-1]  # high keycodes: no physical key there
            else:
                held = {k for k, _ in self._down.values()}
                victims = [(ks, k) for ks, k in self._borrowed.items() if k not in held]
                if not victims:
                    raise _unsupported("no spare keycode to type this character")
                old, kc = victims[0]
                del self._borrowed[old]
                # Clients look keysyms up when they handle an event, not
                # when it is sent: remapping a keycode whose key events a
                # client has not handled yet would retype them as the new
                # character.  Recently used keycodes therefore rest first.
                rest = self._used.get(kc, 0.0) + EVICT_GUARD_SECONDS - time.monotonic()
                if rest > 0:
                    self._d.sync()
                    time.sleep(rest)
            width = max(2, len(self._map[kc - self._first]))
            row = [keysym, keysym] + [0] * (width - 2)
            self._d.change_keyboard_mapping(kc, [row])
            self._map[kc - self._first] = row
            self._borrowed[keysym] = kc
        if keysyms:
            self._d.sync()
            time.sleep(BORROW_SETTLE_SECONDS)

    def _key(self, kc: int, down: bool) -> None:
        kind = self._X.KeyPress if down else self._X.KeyRelease
        self._xtest.fake_input(self._d, kind, kc)

    def _press_mapped(self, ch: str) -> None:
        found = self._lookup(char_to_keysym(ch))
        assert found is not None
        kc, shifted = found
        if shifted:
            self._key(self._shift, True)
        self._key(kc, True)
        if shifted:
            self._key(self._shift, False)
        self._down[ch] = (kc, shifted)
        self._used[kc] = time.monotonic()
        self._d.sync()

    def press(self, ch: str) -> None:
        self._refresh()
        keysym = char_to_keysym(ch)
        if self._lookup(keysym) is None:
            self._borrow([keysym])
        self._press_mapped(ch)

    def release(self, ch: str) -> None:
        kc, _ = self._down.pop(ch, (0, False))
        if not kc:
            found = self._lookup(char_to_keysym(ch), touch=False)
            if found is None:
                return  # never pressed, nothing to release
            kc = found[0]
        self._key(kc, False)
        self._d.sync()

    def type(self, text: str) -> None:
        self._refresh()
        # Cut the text into runs that need at most `capacity` borrowed
        # keycodes, so that mapping a run's characters never evicts another
        # character of the same run.
        run: list[str] = []
        loans: dict[int, None] = {}
        for ch in text:
            if ch not in "\n\r\t":
                ks = char_to_keysym(ch)
                if ks not in loans and (
                    ks in self._borrowed or self._lookup(ks, touch=False) is None
                ):
                    if len(loans) == self._capacity:
                        self._type_run(run, list(loans))
                        run, loans = [], {}
                    loans[ks] = None
            run.append(ch)
        self._type_run(run, list(loans))

    def _type_run(self, run: list[str], loans: list[int]) -> None:
        if not run:
            return
        if loans and not self._capacity:
            raise _unsupported("no spare keycode to type these characters")
        for ks in loans:  # keep this run's existing loans from eviction
            if ks in self._borrowed:
                self._borrowed[ks] = self._borrowed.pop(ks)
        self._borrow([ks for ks in loans if ks not in self._borrowed])
        for ch in run:
            if ch in "\n\r\t":
                kc = self._d.keysym_to_keycode(0xFF09 if ch == "\t" else 0xFF0D)
                self._key(kc, True)
                self._key(kc, False)
                self._d.sync()
            else:
                self._press_mapped(ch)
                self.release(ch)

    def restore(self) -> None:
        """Give borrowed keycodes back (empty them) and release held ones."""
        for ch in list(self._down):
            self.release(ch)
        for kc in self._borrowed.values():
            width = len(self._map[kc - self._first])
            self._d.change_keyboard_mapping(kc, [[0] * width])
        self._borrowed.clear()
        self._d.sync()


# --- running off the reactor thread ----------------------------------------------

_T = TypeVar("_T")


class InputWorker:
    """Serialise an injector's work onto one thread, in arrival order.

    Validation happens at once, on the caller's (reactor) thread, so refused
    events cost no thread hop.  When more than C{max_pending} events wait,
    absolute moves are dropped (the next one supersedes them); key and button
    events never are, because dropping an "up" would leave a key stuck.
    """

    _log = Logger()

    def __init__(
        self,
        injector: InputInjector,
        reactor: Any = None,
        *,
        max_pending: int = 256,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self._reactor: Any = reactor
        assert IReactorThreads.providedBy(reactor) and IReactorFromThreads.providedBy(reactor)
        self.injector = injector
        self._max_pending = max_pending
        self._pending = 0
        self._pool: ThreadPool | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._pool is None:
            self._pool = ThreadPool(minthreads=1, maxthreads=1, name="litedesk-input")
            self._pool.start()

    def _call(self, fn: Callable[[], _T]) -> defer.Deferred[_T]:
        self.start()
        assert self._pool is not None
        self._pending += 1

        def done(result: _T) -> _T:
            self._pending -= 1
            return result

        d: defer.Deferred[_T] = deferToThreadPool(self._reactor, self._pool, fn)
        d.addBoth(done)
        return d

    def submit(self, ev: object) -> defer.Deferred[InjectResult]:
        """Validate C{ev} now and inject it on the input thread.

        The Deferred fires with the L{InjectResult}; it never fails.
        """
        checked = self.injector.check(ev)
        if isinstance(checked, InjectResult):
            return defer.succeed(checked)
        if (
            self._pending >= self._max_pending
            and isinstance(checked, MouseAction)
            and checked.kind is MouseType.MOVE
        ):
            self.dropped += 1
            return defer.succeed(InjectResult(False, "overloaded", "move dropped: input backlog"))
        action = checked
        return self._call(lambda: self.injector.run(action))

    def release_all(self) -> defer.Deferred[None]:
        """Release held keys and buttons after everything queued so far."""
        return self._call(self.injector.release_all)

    def stop(self) -> defer.Deferred[None]:
        """Release everything, close the display connection, stop the thread."""
        if self._pool is None:
            self.injector.close()
            return defer.succeed(None)
        d = self._call(self.injector.close)

        def stop_pool(result: object) -> None:
            # close() never raises, so there is no failure to report here.
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.stop()

        d.addBoth(stop_pool)
        return d
