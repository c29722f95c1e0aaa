"""The encoder's picture, kept between frames and converted only where it changed.

Both encoders take planar YUV 4:2:0; the screen is BGRA.  Converting a whole
1920x1080 frame with libswscale costs 5-9 ms on this project's 2-core
machine, as much as libx264 ultrafast's encode of a typical desktop change,
and most changes (typing, a blinking cursor, a moving window) touch a small
part of the screen.  L{YuvCanvas} holds one persistent C{yuv420p}
C{av.VideoFrame} of the whole monitor: L{YuvCanvas.fill} converts a whole
grab (the first frame, key frames, the fallback path); L{YuvCanvas.paint}
converts one grabbed rectangle (even coordinates and size, as 4:2:0 chroma
needs) and copies its rows into the planes.  The same frame object goes to
the encoder every time: libx264 (through FFmpeg) and libvpx copy the
picture into their own buffers before C{encode} returns, with no look-ahead
in the settings used here, so writing into it for the next frame is safe.

L{to_yuv} is the one-shot conversion the encoder's C{encode(bgra, ...)}
uses.
"""

from __future__ import annotations

import av
from av.video.plane import VideoPlane
from av.video.reformatter import VideoReformatter

from .change import Rect
from .codec import pad_to_even

__all__ = ["YuvCanvas", "bgra_frame", "to_yuv"]


def bgra_frame(data: bytes | bytearray, width: int, height: int) -> av.VideoFrame:
    """Packed BGRA bytes (stride C{width * 4}) as an C{av.VideoFrame}."""
    src = av.VideoFrame(width, height, "bgra")
    plane = src.planes[0]
    stride = width * 4
    if plane.line_size == stride:
        # Any buffer does (PyAV's stub says bytes): no copy of a bytearray.
        plane.update(data)  # type: ignore[arg-type]
    else:  # libav pads rows for alignment when width*4 is not a multiple of 32
        pad = b"\x00" * (plane.line_size - stride)
        plane.update(b"".join(data[y * stride : (y + 1) * stride] + pad for y in range(height)))
    return src


def to_yuv(data: bytes | bytearray, width: int, height: int) -> av.VideoFrame:
    """Convert one even-sized BGRA image to a new C{yuv420p} frame."""
    return bgra_frame(data, width, height).reformat(format="yuv420p", interpolation="POINT")


class YuvCanvas:
    """One monitor's picture as the encoder sees it, updated in place.

    @ivar frame: the C{yuv420p} frame (coded size: even), or C{None} before
        the first L{fill}.
    @ivar width: the monitor's width (the coded width may be one more).
    @ivar height: the monitor's height.
    @ivar painted: pixels converted by L{paint} and L{fill} since creation
        (tests and the benchmark read it).
    """

    def __init__(self) -> None:
        self.frame: av.VideoFrame | None = None
        self.width = 0
        self.height = 0
        self.painted = 0
        # Caches libswscale's context while rectangles keep their size.
        self._reformatter = VideoReformatter()

    def fits(self, width: int, height: int) -> bool:
        """Whether L{paint} may update a picture of this size in place."""
        return (
            self.frame is not None
            and (self.width, self.height) == (width, height)
            and width % 2 == 0
            and height % 2 == 0
        )

    def fill(self, bgra: bytes | bytearray, width: int, height: int) -> av.VideoFrame:
        """Replace the whole picture with a grab of C{width x height} pixels."""
        data, cw, ch = pad_to_even(bgra, width, height)
        self.frame = to_yuv(data, cw, ch)
        self.width, self.height = width, height
        self.painted += width * height
        return self.frame

    def paint(self, rect: Rect, bgra: bytes) -> None:
        """Convert C{bgra} (C{rect}'s pixels, stride C{rect.width * 4}) into place.

        @raise ValueError: C{rect} is not inside the picture, on even
            coordinates with an even size, or C{bgra} is not its size.
        """
        if len(bgra) != rect.width * rect.height * 4:
            raise ValueError(
                f"{len(bgra)} bytes is not a {rect.width}x{rect.height} BGRA rectangle"
            )
        self.paint_from(rect, bgra, rect.width * 4, 0, 0)

    def paint_from(
        self, rect: Rect, source: bytes | bytearray, stride: int, sx: int, sy: int
    ) -> None:
        """Convert C{rect}'s pixels, read at C{(sx, sy)} of a larger BGRA
        image (C{stride} bytes a row), into place.

        The rows go straight from C{source} into the converter's input: a
        window moving over the desktop changes a box of some 700 x 500
        pixels each frame, and slicing, joining and padding its rows cost
        the damage path about 2 ms a frame (bench/README.rst).

        @raise ValueError: C{rect} is not inside the picture, on even
            coordinates with an even size, or not inside C{source}.
        """
        frame = self.frame
        if frame is None or not self.fits(self.width, self.height):
            raise ValueError("paint() needs an even-sized picture from fill() first")
        x, y, w, h = rect.x, rect.y, rect.width, rect.height
        if (x | y | w | h) & 1 or w <= 0 or h <= 0:
            raise ValueError(f"{rect} is not on even coordinates with an even size")
        if x < 0 or y < 0 or rect.right > self.width or rect.bottom > self.height:
            raise ValueError(f"{rect} is not inside {self.width}x{self.height}")
        n = w * 4
        first = sy * stride + sx * 4
        if sx < 0 or sy < 0 or sx * 4 + n > stride or first + (h - 1) * stride + n > len(source):
            raise ValueError(f"{rect} at ({sx}, {sy}) is not inside the source image")
        src = av.VideoFrame(w, h, "bgra")
        plane = src.planes[0]
        line = plane.line_size
        with memoryview(plane) as d, memoryview(source) as s:
            if line == n == stride:
                d[: n * h] = s[first : first + n * h]
            else:
                for row in range(h):
                    o = first + row * stride
                    d[row * line : row * line + n] = s[o : o + n]
        band = self._reformatter.reformat(src, format="yuv420p", interpolation="POINT")
        _copy_plane(band.planes[0], frame.planes[0], x, y, w, h)
        for p in (1, 2):
            _copy_plane(band.planes[p], frame.planes[p], x // 2, y // 2, w // 2, h // 2)
        self.painted += w * h


def _copy_plane(src: VideoPlane, dst: VideoPlane, x: int, y: int, w: int, h: int) -> None:
    """Copy a C{w x h} block of bytes from C{src}'s corner to C{(x, y)} in C{dst}."""
    s = memoryview(src)
    d = memoryview(dst)
    sl, dl = src.line_size, dst.line_size
    if x == 0 and w == dst.width and sl == dl:
        # Whole rows with the same stride: one copy.
        d[y * dl : (y + h) * dl] = s[: h * sl]
        return
    for row in range(h):
        o = (y + row) * dl + x
        d[o : o + w] = s[row * sl : row * sl + w]
