"""Key combinations as people write them: C{"ctrl+a,Return"}.

The viewer's C{--keys} option and its "Send keys" menu turn such strings into
L{KeyInput} values here; it is separate from the keysym tables
(L{litedesk.input.keysyms}) because it is a small parser with its own words.
"""

from __future__ import annotations

from typing import Final

from litedesk.input.keys import ControlKey, KeyInput, is_typeable
from litedesk.input.keysyms import control_key_for_keysym

__all__ = ["describe", "parse_combo", "parse_key_list", "text_input"]


_MODIFIER_WORDS: Final[dict[str, ControlKey]] = {
    "ctrl": ControlKey.Control,
    "control": ControlKey.Control,
    "ctl": ControlKey.Control,
    "shift": ControlKey.Shift,
    "alt": ControlKey.Alt,
    "option": ControlKey.Alt,
    "opt": ControlKey.Alt,
    "meta": ControlKey.Meta,
    "super": ControlKey.Meta,
    "win": ControlKey.Meta,
    "cmd": ControlKey.Meta,
    "command": ControlKey.Meta,
    "rctrl": ControlKey.RControl,
    "rshift": ControlKey.RShift,
    "ralt": ControlKey.RAlt,
    "altgr": ControlKey.RAlt,
    "rwin": ControlKey.RWin,
    "rsuper": ControlKey.RWin,
}


# Friendly key names, matched case-insensitively like ControlKey names.
_KEY_WORDS: Final[dict[str, ControlKey]] = {
    "enter": ControlKey.Return,
    "esc": ControlKey.Escape,
    "del": ControlKey.Delete,
    "ins": ControlKey.Insert,
    "up": ControlKey.UpArrow,
    "down": ControlKey.DownArrow,
    "left": ControlKey.LeftArrow,
    "right": ControlKey.RightArrow,
    "pgup": ControlKey.PageUp,
    "pgdn": ControlKey.PageDown,
    "pagedown": ControlKey.PageDown,
    "pageup": ControlKey.PageUp,
    "bs": ControlKey.Backspace,
    "menu": ControlKey.Apps,
    "printscreen": ControlKey.Snapshot,
    "kpenter": ControlKey.NumpadEnter,
}


# Characters that cannot appear literally in a "+"/"," separated list.
_CHAR_WORDS: Final[dict[str, str]] = {"plus": "+", "comma": ",", "minus": "-"}


_CONTROL_KEY_BY_LOWER: Final[dict[str, ControlKey]] = {
    k.name.lower(): k for k in ControlKey if k is not ControlKey.Unknown
}


def _parse_key_token(token: str) -> tuple[ControlKey | None, int | None]:
    if len(token) == 1:
        if not is_typeable(ord(token)):
            raise ValueError(f"cannot type {token!r}")
        return None, ord(token)
    lower = token.lower()
    if lower in _CHAR_WORDS:
        return None, ord(_CHAR_WORDS[lower])
    # Modifier words are also valid keys: "shift" alone taps Shift.
    for table in (_MODIFIER_WORDS, _KEY_WORDS, _CONTROL_KEY_BY_LOWER):
        if lower in table:
            return table[lower], None
    ck = control_key_for_keysym(token)
    if ck is not None:
        return ck, None
    raise ValueError(f"unknown key name {token!r}")


def parse_combo(combo: str) -> KeyInput:
    """Parse one combo such as C{"ctrl+alt+Delete"} into a pressed KeyInput.

    Every part but the last is a modifier (ctrl, shift, alt, meta/super/win,
    and right-hand variants); the last is a key: one character (C{"a"}), a
    ControlKey name in any case (C{"Return"}, C{"pageup"}), a friendly alias
    (C{"enter"}, C{"esc"}, C{"del"}), an X keysym name (C{"BackSpace"},
    C{"KP_Enter"}), or C{plus}/C{comma}/C{minus}.  A character key is sent as
    C{chr}, a named key as C{control_key}; modifiers go in C{modifiers}.

    @raise ValueError: on an empty part, an unknown name, or a non-modifier
        before the last part.
    """
    text = combo.strip()
    if not text:
        raise ValueError("empty key combination")
    # A trailing "+" after a separator is the plus key itself: "ctrl++".
    if text.endswith("++"):
        parts = [*text[:-2].split("+"), "+"]
    elif text == "+":
        parts = ["+"]
    else:
        parts = text.split("+")
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        raise ValueError(f"empty part in key combination {combo!r}")
    modifiers: list[int] = []
    for word in parts[:-1]:
        mod = _MODIFIER_WORDS.get(word.lower())
        if mod is None:
            raise ValueError(f"{word!r} is not a modifier (in {combo!r})")
        if int(mod) not in modifiers:
            modifiers.append(int(mod))
    ck, cp = _parse_key_token(parts[-1])
    if ck is not None:
        return KeyInput(press=True, control_key=int(ck), modifiers=modifiers)
    return KeyInput(press=True, chr=cp, modifiers=modifiers)


def parse_key_list(spec: str) -> list[KeyInput]:
    """Parse a comma-separated list of combos (C{"ctrl+a,Return"}).

    A lone C{","} cannot be written; use C{comma}.
    """
    if not spec.strip():
        raise ValueError("empty key list")
    return [parse_combo(part) for part in spec.split(",")]


def text_input(text: str) -> KeyInput:
    """The KeyInput that types C{text} (the viewer's C{--type})."""
    return KeyInput(press=True, seq=text)


def describe(ev: KeyInput) -> str:
    """A short human-readable form for logs (never the typed text itself)."""
    if ev.control_key is not None:
        try:
            what = ControlKey(ev.control_key).name
        except ValueError:
            what = f"control_key={ev.control_key}"
    elif ev.chr is not None:
        what = "chr"
    elif ev.unicode is not None:
        what = "unicode"
    elif ev.seq is not None:
        what = f"seq[{len(ev.seq) if isinstance(ev.seq, str) else '?'}]"
    else:
        what = "nothing"
    action = "press" if ev.press else ("down" if ev.down else "up")
    return f"{action} {what}"
