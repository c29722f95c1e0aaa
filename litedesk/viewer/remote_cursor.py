"""The host's cursor as the viewer draws it: its image and where it goes.

Tk-free: the frame view (L{litedesk.viewer.frame_view}) puts the image and
position these functions compute on the canvas.
"""

from __future__ import annotations

import zstandard
from PIL import Image

from litedesk.input.mouse import ViewMapping
from litedesk.proto import message_pb2 as pb

#: Seconds after a local pointer move during which the cursor is drawn at
#: the local pointer rather than where the host last reported it (the
#: host's report of our own move arrives one round trip late and would make
#: the cursor jump back).
LOCAL_CURSOR_HOLD = 0.5


def decode_cursor(shape: pb.CursorData) -> Image.Image | None:
    """The RGBA image of a C{CursorData} (zstd RGBA), or C{None} if damaged."""
    if shape.width <= 0 or shape.height <= 0 or shape.width * shape.height > 256 * 256:
        return None
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            shape.colors, max_output_size=shape.width * shape.height * 4
        )
    except zstandard.ZstdError:
        return None
    if len(raw) != shape.width * shape.height * 4:
        return None
    return Image.frombytes("RGBA", (shape.width, shape.height), raw)


def scaled_cursor(img: Image.Image, scale: float) -> Image.Image:
    """The cursor image shrunk with the picture (C{scale} <= 1)."""
    if scale >= 1.0:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR)


def cursor_spot(
    m: ViewMapping,
    now: float,
    local: tuple[float, float] | None,
    local_moved_at: float,
    remote: tuple[int, int] | None,
) -> tuple[float, float] | None:
    """Where the cursor's hot spot is drawn (canvas point), or C{None} to hide it.

    At the local pointer for L{LOCAL_CURSOR_HOLD} seconds after it moved,
    else where the host last reported its cursor.
    """
    if local is not None and now - local_moved_at < LOCAL_CURSOR_HOLD:
        return local
    if remote is not None:
        return m.to_local(*remote)
    return None


def cursor_corner(spot: tuple[float, float], shape: pb.CursorData, scale: float) -> tuple[int, int]:
    """The top-left corner of the cursor image whose hot spot is at C{spot}."""
    return round(spot[0] - shape.hotx * scale), round(spot[1] - shape.hoty * scale)
