"""Input events between their protobuf form and the plain values of L{litedesk.input}.

The viewer builds C{KeyEvent}s from L{KeyInput}s; the host turns received
C{MouseEvent}/C{KeyEvent}s back into L{MouseInput}/L{KeyInput}s for the
injector, which validates them.

LiteDesk viewers send what the injector understands directly: Legacy key
events and RustDesk's mouse mask.  Stock RustDesk clients
(docs/protocol.rst §8.3) differ in two ways, converted here when the host
says the peer is one (C{rustdesk=True}), as a RustDesk Linux host on X11
handles them (src/server/connection.rs and input_service.rs, 1.4.9):

* Keyboard: against a host whose C{PeerInfo.version} is 1.2.0 or later and
  whose platform is not Android, a stock client sends Map mode: one event per
  physical key, C{chr} holding the key's code in the I{host's} native space;
  for a "Linux" host that is the X11 keycode (evdev code + 8).  The host
  presses that keycode, so the host's keyboard layout decides the character
  (a German host types "z" for the key a US client calls "y"): the code
  becomes L{KeyInput.keycode}.  Translate mode sends the text a key produced
  on the client as C{seq} (typed as text, once, whatever C{down} says) and
  the other keys as Map does; its C{unicode} and C{control_key} events are
  left alone by a RustDesk host, and so they are here.  Shift, Control, Alt,
  AltGr and Meta come as keys of their own and are held from down to up;
  the down of any other key is a click, and its up is dropped (a RustDesk
  Linux host injects it as the release of a key already up, which X
  ignores): keys held across a slow network would otherwise auto-repeat on
  the host.  The Caps Lock and Num Lock states the client reports are
  matched around each key (L{litedesk.input.validation.LockSync}).  Legacy
  events (and Auto, which a RustDesk host handles as Legacy) keep their
  meaning and are clicked on down the same way.
* Mouse: a RustDesk host negates the horizontal wheel and trackpad delta
  (input_service.rs, handle_mouse_), so a stock client sends C{x > 0} to
  scroll left; the injector's convention is C{x > 0} right.
"""

from __future__ import annotations

from typing import Final

from litedesk.input.keycodes import MODIFIER_KEYCODES
from litedesk.input.keys import ControlKey, KeyboardMode, KeyInput
from litedesk.input.mouse import MouseInput, MouseType
from litedesk.proto import message_pb2 as pb

__all__ = ["key_from_proto", "key_to_proto", "mouse_from_proto"]

_CK = ControlKey

# The Legacy keys a RustDesk Linux host holds rather than clicks (common.rs
# is_modifier: Alt, Shift, Control, Meta, both sides).
_HELD_KEYS: Final[frozenset[ControlKey]] = frozenset(
    {_CK.Alt, _CK.RAlt, _CK.Shift, _CK.RShift, _CK.Control, _CK.RControl, _CK.Meta, _CK.RWin}
)


def mouse_from_proto(ev: pb.MouseEvent, *, rustdesk: bool = False) -> MouseInput:
    mask = ev.mask
    x = ev.x
    if rustdesk and mask & 7 in (MouseType.WHEEL, MouseType.TRACKPAD):
        # A stock client's x > 0 means left (module docstring).
        x = -x
    return MouseInput(mask, x, ev.y, list(ev.modifiers))


def key_from_proto(ev: pb.KeyEvent, *, rustdesk: bool = False) -> KeyInput | None:
    """The L{KeyInput} for a received C{KeyEvent}, or None when there is nothing to do.

    None means: a stock client's key up that the host drops, or an event a
    RustDesk host ignores (see the module docstring).  With
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
    mode = int(ev.mode)
    if which == "win2win_hotkey":
        # Only sent between two Windows machines; nothing to type on X11.
        return None
    if mode == KeyboardMode.Map or (mode == KeyboardMode.Translate and which == "chr"):
        if which != "chr":
            # A RustDesk host reads only chr in Map mode.
            return None
        # Translate mode ORs a Windows virtual-key code into the high 16 bits
        # for Windows peers; a RustDesk host masks it off to find the key.
        k.keycode = ev.chr & 0xFFFF if mode == KeyboardMode.Translate else ev.chr
        k.chr = None
        return _physical_click_on_down(k)
    if mode == KeyboardMode.Translate:
        if which != "seq":
            return None
        k.press = True
        return k
    return _click_on_down(k)


def _physical_click_on_down(k: KeyInput) -> KeyInput | None:
    """A RustDesk Linux host's rule for physical keys: modifiers go down and
    up as sent, other keys are clicked on down and their ups dropped."""
    if k.keycode in MODIFIER_KEYCODES:
        k.press = False
        return k
    if k.press or k.down:
        k.press = True
        return k
    return None


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
    elif k.keycode is not None:
        ev.chr = k.keycode
        ev.mode = k.mode  # type: ignore[assignment]
    return ev
