"""Where the remote picture sits in the viewer's canvas: scale-to-fit and 1:1.

Pure arithmetic on L{ViewMapping} (no Tk), so that the mapping every click
goes through is unit-tested at any scale without a display; the frame view
(L{litedesk.viewer.frame_view}) only applies what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from litedesk.input.mouse import Rect, ViewMapping

FIT = "fit"
ONE_TO_ONE = "1:1"


class Monitor(Protocol):
    """What geometry needs of a host monitor (a C{DisplayInfo})."""

    @property
    def x(self) -> int: ...

    @property
    def y(self) -> int: ...


def view_mapping(
    remote: Rect, mode: str, view_w: int, view_h: int, scroll_x: float = 0.0, scroll_y: float = 0.0
) -> ViewMapping:
    """How the remote monitor is drawn in a C{view_w} x C{view_h} canvas.

    C{"fit"}: scaled (never enlarged beyond what fits) and centred, keeping
    the aspect ratio.  C{"1:1"}: one remote pixel per window pixel, scrolled
    by (C{scroll_x}, C{scroll_y}) window pixels, centred when smaller.
    """
    if mode == FIT:
        return ViewMapping.fit(remote, max(1, view_w), max(1, view_h))
    ox = (view_w - remote.width) / 2 if remote.width < view_w else 0.0 - scroll_x
    oy = (view_h - remote.height) / 2 if remote.height < view_h else 0.0 - scroll_y
    return ViewMapping(remote, 1.0, ox, oy)


def drawn_size(m: ViewMapping) -> tuple[int, int]:
    """The size of the scaled image for mapping C{m}."""
    return (
        max(1, round(m.remote.width * m.scale)),
        max(1, round(m.remote.height * m.scale)),
    )


def monitor_rect(monitors: Sequence[Monitor], current: int, frame_w: int, frame_h: int) -> Rect:
    """The shown monitor in virtual-desktop coordinates.

    Its origin comes from the host's monitor list (the current one, the
    first if the index is stale), its size from the frame: the picture is
    what is drawn, whatever the list said earlier.
    """
    x = y = 0
    if monitors:
        d = monitors[current if 0 <= current < len(monitors) else 0]
        x, y = d.x, d.y
    return Rect(x, y, frame_w, frame_h)


def canvas_mapping(remote: Rect, mode: str, canvas_w: int, canvas_h: int) -> ViewMapping:
    """The mapping for a canvas of this size.

    In 1:1 the canvas scrolls: items live at canvas coordinates (not window
    coordinates), so the scroll offset is not part of the mapping and the
    view is as large as the picture when the picture is larger.
    """
    if mode == ONE_TO_ONE:
        return view_mapping(
            remote, ONE_TO_ONE, max(canvas_w, remote.width), max(canvas_h, remote.height)
        )
    return view_mapping(remote, FIT, canvas_w, canvas_h)


def cursor_scale(m: ViewMapping) -> float:
    """How much the remote cursor image is shrunk (never enlarged)."""
    return min(1.0, m.scale)


__all__ = [
    "FIT",
    "ONE_TO_ONE",
    "canvas_mapping",
    "cursor_scale",
    "drawn_size",
    "monitor_rect",
    "view_mapping",
]
