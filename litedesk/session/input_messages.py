"""Input events between their protobuf form and the plain values of L{litedesk.input}.

The viewer builds C{KeyEvent}s from L{KeyInput}s; the host turns received
C{MouseEvent}/C{KeyEvent}s back into L{MouseInput}/L{KeyInput}s for the
injector, which validates them.
"""

from __future__ import annotations

from litedesk.input.keys import KeyInput
from litedesk.input.mouse import MouseInput
from litedesk.proto import message_pb2 as pb


def mouse_from_proto(ev: pb.MouseEvent) -> MouseInput:
    return MouseInput(ev.mask, ev.x, ev.y, list(ev.modifiers))


def key_from_proto(ev: pb.KeyEvent) -> KeyInput:
    which = ev.WhichOneof("union")
    return KeyInput(
        down=ev.down,
        press=ev.press,
        control_key=ev.control_key if which == "control_key" else None,
        chr=ev.chr if which == "chr" else None,
        unicode=ev.unicode if which == "unicode" else None,
        seq=ev.seq if which == "seq" else None,
        modifiers=list(ev.modifiers),
        mode=ev.mode,
    )


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
