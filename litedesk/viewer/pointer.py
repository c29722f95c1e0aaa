"""Tk pointer events as RustDesk C{MouseEvent}s, through the current view mapping.

Tk-free (the event's kind, button number, position and modifier state are
passed in), so the mapping of presses, releases, wheel notches and motion
is unit-tested without a display; L{litedesk.viewer.input_map} feeds it
from the canvas bindings.
"""

from __future__ import annotations

from litedesk.input.mouse import MouseType, ViewMapping, encode_mask
from litedesk.input.mouse import x_button as mouse_x_button
from litedesk.input.mouse import x_wheel as mouse_x_wheel
from litedesk.proto import message_pb2 as pb
from litedesk.viewer.keymap import modifiers_for_state


def mouse_events(
    kind: str, num: int, m: ViewMapping, lx: float, ly: float, state: int
) -> list[pb.MouseEvent]:
    """The MouseEvents for one Tk pointer event at window point (lx, ly).

    C{kind} is "press", "release" or "motion"; C{num} the X button number.
    A press is preceded by a move, since the host presses at its pointer.
    """
    mods = modifiers_for_state(state)
    x, y = m.to_remote(lx, ly)
    if kind == "motion":
        return [pb.MouseEvent(mask=encode_mask(MouseType.MOVE), x=x, y=y)]
    notch = mouse_x_wheel(num)
    if notch is not None:
        if kind != "press":
            return []
        return [
            pb.MouseEvent(
                mask=encode_mask(MouseType.WHEEL),
                x=notch[0],
                y=notch[1],
                modifiers=mods,  # type: ignore[arg-type]
            )
        ]
    button = mouse_x_button(num)
    if button is None:
        return []
    t = MouseType.DOWN if kind == "press" else MouseType.UP
    out = [pb.MouseEvent(mask=encode_mask(MouseType.MOVE), x=x, y=y)] if kind == "press" else []
    out.append(
        pb.MouseEvent(mask=encode_mask(t, button), x=x, y=y, modifiers=mods)  # type: ignore[arg-type]
    )
    return out


def wheel_step(delta: int) -> int:
    """Notches for a C{<MouseWheel>} delta: 120 per notch on Windows, 1 on macOS."""
    return delta // 120 if abs(delta) >= 120 else delta
