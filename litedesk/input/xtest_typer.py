"""Typing characters into X with XTEST, borrowing spare keycodes when needed.

The backend (L{litedesk.input.pynput_backend}) hands every character key,
every text and every physical key (an X11 keycode) here; it is separate
because the keymap bookkeeping is a subject of its own, and physical keys
must stay clear of the keycodes it borrows.  python-xlib is imported
lazily: it is only usable with a display.
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Final

from litedesk.input.results import unsupported

__all__ = ["BORROW_SETTLE_SECONDS", "EVICT_GUARD_SECONDS", "XTestTyper", "char_to_keysym"]

#: Pause after mapping a spare keycode to a character not on the keyboard,
#: before the first key event on it (see L{XTestTyper._borrow}).  With 0.05 s
#: a loaded 2-core machine lost a character now and then; with 0.15 s a euro
#: sign was still lost once in four full test runs with every process under
#: coverage tracing.  0.3 s is a wider margin, not a guarantee; it is paid
#: only on the first use of each missing character (the mapping then stays).
BORROW_SETTLE_SECONDS: Final = 0.3
#: A borrowed keycode is not remapped until this long after its last use.
EVICT_GUARD_SECONDS: Final = 0.6


def char_to_keysym(ch: str) -> int:
    """The X keysym that types C{ch}: Latin-1 keysyms equal the code point,
    everything else has a Unicode keysym (C{0x01000000 + cp})."""
    cp = ord(ch)
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    return 0x01000000 + cp


class XTestTyper:
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
                    raise unsupported("no spare keycode to type this character")
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
            raise unsupported("no spare keycode to type these characters")
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

    def press_keycode(self, kc: int) -> None:
        """Press the physical key C{kc}: the host's layout decides what it is.

        Refused (not pressed) when the host's keymap has no key there, or
        only a character this typer borrowed the keycode for: pressing it
        would type nothing, or that character.
        """
        if not self._first <= kc < self._first + self._count:
            raise unsupported(
                f"keycode {kc} is outside this display's range "
                f"{self._first}-{self._first + self._count - 1}"
            )
        self._refresh()
        if not any(self._map[kc - self._first]) or kc in self._borrowed.values():
            raise unsupported(f"keycode {kc} has no key in the host's keymap")
        self._key(kc, True)
        self._d.sync()

    def release_keycode(self, kc: int) -> None:
        """Release the physical key C{kc} (nothing happens if it is up)."""
        if self._first <= kc < self._first + self._count:
            self._key(kc, False)
            self._d.sync()

    def restore(self) -> None:
        """Give borrowed keycodes back (empty them) and release held ones."""
        for ch in list(self._down):
            self.release(ch)
        for kc in self._borrowed.values():
            width = len(self._map[kc - self._first])
            self._d.change_keyboard_mapping(kc, [[0] * width])
        self._borrowed.clear()
        self._d.sync()
