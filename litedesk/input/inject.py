"""Host-side input injection: RustDesk mouse and key events into an X display.

Three layers:

* Validation (L{litedesk.input.validation}) turns an untrusted
  L{MouseInput}/L{KeyInput} into an action or an L{InjectResult} saying why
  it was refused.  It never touches X, so it is safe on the reactor thread
  and is fuzzed by the tests.
* Execution (L{InputInjector.run}) drives an L{InputBackend}: modifiers
  pressed around a key are always released, held keys and buttons are
  tracked, and L{InputInjector.release_all} lets go of everything when a
  session ends so that no key stays stuck on the host.
* L{litedesk.input.pynput_backend.PynputBackend} injects named keys,
  buttons, wheel and motion through pynput's Xorg backend (XTEST), and
  characters, text and physical keys (X11 keycodes, from stock RustDesk
  clients) through XTEST as well (L{litedesk.input.xtest_typer.XTestTyper}):
  real key events that every client accepts, with a spare keycode borrowed
  (and given back on close) for characters that are not on the host's
  keyboard.  pynput is imported lazily: it cannot be imported at all without
  a display.

X calls block (a round trip each; typing takes about 1.5 ms a character), so
a session should use L{litedesk.input.worker.InputWorker}, which validates on
the reactor thread and executes on one dedicated thread, in order.

This module holds the execution layer: L{InputInjector} and the
L{InputBackend} interface it drives.

Coordinates: absolute moves carry virtual-desktop coordinates, which the
viewer computes by adding the shown monitor's origin (see
L{litedesk.input.mouse.ViewMapping}).  On X11 the virtual desktop is the
root window, so they are root coordinates; they are clamped to the desktop.
The root window grows when a monitor is added (RandR), so a point outside
the desktop as last read makes the injector read it again before clamping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, Protocol, runtime_checkable

from twisted.logger import Logger

from litedesk.input.keycodes import HOTKEY_KEYCODES, SHIFT_KEYCODES
from litedesk.input.keys import ControlKey, KeyInput
from litedesk.input.mouse import MAX_RELATIVE, MouseButton, MouseInput, MouseType, Rect
from litedesk.input.pynput_backend import PynputBackend
from litedesk.input.results import OK, InjectResult, InputUnavailable, Refused, invalid
from litedesk.input.validation import (
    Action,
    KeyAction,
    KeyRef,
    LockSync,
    MouseAction,
    PhysicalKey,
    plan_key,
    plan_mouse,
)

__all__ = [
    "MAX_WHEEL_STEPS",
    "TRACKPAD_UNITS_PER_STEP",
    "InputBackend",
    "InputInjector",
    "LockStateBackend",
]

#: Wheel notches applied per event and axis; more is clamped.
MAX_WHEEL_STEPS: Final = 20
#: Trackpad scroll deltas are pixels; this many make one wheel notch.
TRACKPAD_UNITS_PER_STEP: Final = 40

_VIEW_ONLY: Final = InjectResult(False, "view-only", "input refused: view-only session")

# Held keys that make typed text a shortcut (Ctrl+Shift+Z): while one of
# them is down, a held Shift stays down for Translate text too.
_HOTKEYS: Final[frozenset[KeyRef]] = frozenset(
    {
        ControlKey.Control,
        ControlKey.RControl,
        ControlKey.Alt,
        ControlKey.RAlt,
        ControlKey.Option,
        ControlKey.Menu,
        ControlKey.Meta,
        ControlKey.RWin,
        *(PhysicalKey(c) for c in HOTKEY_KEYCODES),
    }
)
_SHIFTS: Final[tuple[KeyRef, ...]] = (
    ControlKey.Shift,
    ControlKey.RShift,
    *(PhysicalKey(c) for c in sorted(SHIFT_KEYCODES)),
)


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


@runtime_checkable
class LockStateBackend(Protocol):
    """A backend that can tell the host's lock states.

    Without it (test doubles) the locks are left alone.
    """

    def lock_state(self) -> tuple[bool, bool]:
        """Whether Caps Lock and Num Lock are on."""


class InputInjector:
    """Apply validated input events to one display, for one session.

    @param backend: where events go; by default a L{PynputBackend} for
        C{display}, created on first use (so constructing an injector never
        touches X).
    @param display: the X display name (C{":0"}); C{None} uses C{$DISPLAY}.
    @param view_only: refuse every event (and say so) instead of injecting.
    @param desktop: the virtual desktop, fixed; by default the backend's root
        window, read again whenever a point falls outside it.
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
        self._desktop_fixed = desktop is not None
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

    def _clamp(self, x: int, y: int) -> tuple[int, int]:
        """(x, y) on the desktop, read again first if the point is outside it
        (a monitor added since?): one X round trip more per such point, as
        many as the move itself costs."""
        desk = self.desktop()
        if not desk.contains(x, y) and not self._desktop_fixed:
            desk = self._desktop = self._get_backend().desktop()
        return desk.clamp(x, y)

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
            raise invalid(f"not an input event: {type(ev).__name__}")
        except Refused as e:
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
        except Refused as e:
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
            be.move_to(*self._clamp(a.x, a.y))
        elif a.kind is MouseType.MOVE_RELATIVE:
            dx = max(-MAX_RELATIVE, min(MAX_RELATIVE, a.x))
            dy = max(-MAX_RELATIVE, min(MAX_RELATIVE, a.y))
            px, py = be.pointer()
            be.move_to(*self._clamp(px + dx, py + dy))
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
                with self._locks_matched(a.locks):
                    if a.release_shift:
                        self._release_shift()
                    be.type_text(a.text)
            return
        assert a.key is not None
        key = a.key
        if a.action == "up":
            self._held_keys.pop(key, None)
            be.release_key(key)
            return
        with self._locks_matched(a.locks), self._modifiers_held(a.modifiers):
            be.press_key(key)
            if a.action == "press":
                be.release_key(key)
            else:
                self._held_keys[key] = None

    def _release_shift(self) -> None:
        """Let go of the Shift keys the peer holds before typing its text,
        unless a hotkey modifier is held too (see L{KeyAction.release_shift}).

        They stay released: the peer's own Shift up follows, and pressing
        them again here would shift the next key it sends.
        """
        if any(k in self._held_keys for k in _HOTKEYS):
            return
        be = self._get_backend()
        for key in _SHIFTS:
            if key in self._held_keys:
                del self._held_keys[key]
                be.release_key(key)

    @contextlib.contextmanager
    def _locks_matched(self, want: LockSync | None) -> Iterator[None]:
        """Set Caps Lock and Num Lock as C{want}s for the block, then back.

        Toggling twice (RustDesk's way) leaves the host's locks as the host's
        user set them, even when the block fails.
        """
        be = self._get_backend()
        if want is None or not isinstance(be, LockStateBackend):
            yield
            return
        caps, num = be.lock_state()
        toggle = [ControlKey.CapsLock] if caps != want.caps else []
        if want.num is not None and num != want.num:
            toggle.append(ControlKey.NumLock)
        done: list[ControlKey] = []
        try:
            for lock in toggle:
                be.press_key(lock)
                be.release_key(lock)
                done.append(lock)
            yield
        finally:
            for lock in reversed(done):
                try:
                    be.press_key(lock)
                    be.release_key(lock)
                except Exception:
                    self._log.failure("Could not restore {lock}", lock=lock.name)

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
