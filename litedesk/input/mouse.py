"""Mouse vocabulary shared by the host's injector and the viewer.

RustDesk's C{MouseEvent.mask} packs an event type and a button set:
C{mask = (buttons << 3) | type}.  Types: 0 move (absolute x, y in the
remote virtual-desktop coordinates), 1 down, 2 up, 3 wheel (x, y are deltas,
y > 0 is wheel up), 4 trackpad scroll, 5 relative move.  Buttons: 1 left,
2 right, 4 middle, 8 back, 16 forward.  So left down is 9, left up 10, right
down 17.

Coordinates: the host lists each monitor's rectangle in the virtual desktop
(C{DisplayInfo.x/y/width/height}); the viewer shows one monitor, scaled, and
L{ViewMapping} turns a point in its window into virtual-desktop coordinates by
adding that monitor's origin.  The host therefore receives coordinates that
already include the monitor offset, as RustDesk peers send them.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Final


class MouseType(enum.IntEnum):
    """The low three bits of C{MouseEvent.mask}."""

    MOVE = 0
    DOWN = 1
    UP = 2
    WHEEL = 3
    TRACKPAD = 4
    MOVE_RELATIVE = 5


class MouseButton(enum.IntFlag):
    """The button bits of C{MouseEvent.mask} (after the shift by 3)."""

    LEFT = 0x01
    RIGHT = 0x02
    MIDDLE = 0x04
    BACK = 0x08
    FORWARD = 0x10


ALL_BUTTONS: Final = 0x1F
TYPE_BITS: Final = 3
#: Relative moves are clamped to this many pixels per event and axis.
MAX_RELATIVE: Final = 10_000

# X core button numbers (what Tk reports as event.num on X11).
_X_BUTTONS: Final[dict[int, MouseButton]] = {
    1: MouseButton.LEFT,
    2: MouseButton.MIDDLE,
    3: MouseButton.RIGHT,
    8: MouseButton.BACK,
    9: MouseButton.FORWARD,
}
# X reports wheel notches as presses of buttons 4-7: (dx, dy) per notch.
_X_WHEEL: Final[dict[int, tuple[int, int]]] = {4: (0, 1), 5: (0, -1), 6: (-1, 0), 7: (1, 0)}


@dataclass(slots=True)
class MouseInput:
    """One RustDesk C{MouseEvent} as plain values (not trusted: validated
    by the injector)."""

    mask: int
    x: int = 0
    y: int = 0
    modifiers: list[int] = field(default_factory=list)


def encode_mask(kind: int, buttons: int = 0) -> int:
    """C{(buttons << 3) | kind}, checking both parts."""
    if not 0 <= kind <= 7:
        raise ValueError(f"mouse event type {kind} out of range")
    if not 0 <= buttons <= ALL_BUTTONS:
        raise ValueError(f"button set {buttons:#x} out of range")
    return (buttons << TYPE_BITS) | kind


def decode_mask(mask: int) -> tuple[int, int]:
    """Split a mask into C{(type, buttons)} without judging either."""
    return mask & 7, mask >> TYPE_BITS


def move(x: int, y: int) -> MouseInput:
    """Absolute move to virtual-desktop (x, y)."""
    return MouseInput(encode_mask(MouseType.MOVE), x, y)


def button_down(button: int = MouseButton.LEFT, x: int = 0, y: int = 0) -> MouseInput:
    return MouseInput(encode_mask(MouseType.DOWN, button), x, y)


def button_up(button: int = MouseButton.LEFT, x: int = 0, y: int = 0) -> MouseInput:
    return MouseInput(encode_mask(MouseType.UP, button), x, y)


def wheel(dx: int = 0, dy: int = 0) -> MouseInput:
    """Wheel notches: C{dy > 0} scrolls up, C{dx > 0} right."""
    return MouseInput(encode_mask(MouseType.WHEEL), dx, dy)


def relative(dx: int, dy: int) -> MouseInput:
    return MouseInput(encode_mask(MouseType.MOVE_RELATIVE), dx, dy)


def click(x: int, y: int, button: int = MouseButton.LEFT) -> list[MouseInput]:
    """Move, press and release: what the viewer's C{--click X,Y} sends.

    The move comes first because down/up act at the pointer's position
    (as on RustDesk hosts, their x/y are informational).
    """
    return [move(x, y), button_down(button, x, y), button_up(button, x, y)]


def x_button(num: int) -> MouseButton | None:
    """The MouseButton for an X/Tk button number, or C{None} (wheel, unknown)."""
    return _X_BUTTONS.get(num)


def x_wheel(num: int) -> tuple[int, int] | None:
    """The wheel notch (dx, dy) for X buttons 4-7, else C{None}."""
    return _X_WHEEL.get(num)


@dataclass(frozen=True, slots=True)
class Rect:
    """A rectangle in virtual-desktop pixels (a monitor, or the desktop)."""

    x: int
    y: int
    width: int
    height: int

    def clamp(self, x: int, y: int) -> tuple[int, int]:
        """The nearest point inside the rectangle."""
        return (
            min(max(x, self.x), self.x + self.width - 1),
            min(max(y, self.y), self.y + self.height - 1),
        )

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x + self.width and self.y <= y < self.y + self.height


@dataclass(frozen=True, slots=True)
class ViewMapping:
    """Map points of the viewer's window to the remote virtual desktop.

    The remote monitor C{remote} is drawn at C{scale} (window pixels per
    remote pixel) with its top-left corner at window point
    (C{offset_x}, C{offset_y}); offsets are negative when the view is
    scrolled, positive when the image is centred in a larger window.
    """

    remote: Rect
    scale: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number, not {self.scale!r}")
        if self.remote.width <= 0 or self.remote.height <= 0:
            raise ValueError("remote monitor has no area")

    @classmethod
    def fit(cls, remote: Rect, view_width: int, view_height: int) -> ViewMapping:
        """Scale the monitor to fit the window, keeping the aspect ratio, and
        centre it (letterboxing)."""
        if view_width <= 0 or view_height <= 0:
            raise ValueError("window has no area")
        scale = min(view_width / remote.width, view_height / remote.height)
        return cls(
            remote,
            scale,
            (view_width - remote.width * scale) / 2,
            (view_height - remote.height * scale) / 2,
        )

    def to_remote(self, lx: float, ly: float) -> tuple[int, int]:
        """The remote virtual-desktop pixel under window point (lx, ly).

        Window pixel (lx, ly) is sampled at its centre, so that at any scale
        the result is the remote pixel drawn there; points outside the image
        are clamped to the monitor's edge (a drag leaving the window keeps
        the remote pointer on the monitor).
        """
        rx = math.floor((lx - self.offset_x + 0.5) / self.scale)
        ry = math.floor((ly - self.offset_y + 0.5) / self.scale)
        return self.remote.clamp(self.remote.x + rx, self.remote.y + ry)

    def to_local(self, vx: int, vy: int) -> tuple[float, float]:
        """Window coordinates of the centre of remote pixel (vx, vy), e.g. to
        draw the remote cursor."""
        return (
            self.offset_x + (vx - self.remote.x + 0.5) * self.scale - 0.5,
            self.offset_y + (vy - self.remote.y + 0.5) * self.scale - 0.5,
        )

    def inside(self, lx: float, ly: float) -> bool:
        """Whether window point (lx, ly) lies on the drawn image."""
        rx = (lx - self.offset_x + 0.5) / self.scale
        ry = (ly - self.offset_y + 0.5) / self.scale
        return 0 <= rx < self.remote.width and 0 <= ry < self.remote.height
