"""The encoder's picture, kept between frames and converted only where it changed.

Both encoders take planar YUV 4:2:0; the screen is BGRA.  Converting a whole
1920x1080 frame with libswscale costs 5-9 ms on this project's 2-core
machine, as much as libx264 ultrafast's encode of a typical desktop change,
and most changes (typing, a blinking cursor, a moving window) touch a small
part of the screen.  L{YuvCanvas} holds one persistent C{yuv420p}
C{av.VideoFrame} of the whole monitor: L{YuvCanvas.fill} converts a whole
grab (the first frame, key frames, the fallback path); L{YuvCanvas.paint}
converts one grabbed rectangle (even coordinates and size, as 4:2:0 chroma
needs) into the planes: in place with libswscale called directly
(L{litedesk.screen.swscale}), or, where that cannot be loaded, through a
PyAV frame whose rows are then copied.  The same frame object goes to
the encoder every time: libx264 (through FFmpeg) and libvpx copy the
picture into their own buffers before C{encode} returns, with no look-ahead
in the settings used here, so writing into it for the next frame is safe.

L{to_yuv} is the one-shot conversion the encoder's C{encode(bgra, ...)}
uses.
"""

from __future__ import annotations

import mmap

import av
from av.video.plane import VideoPlane
from av.video.reformatter import VideoReformatter

from .change import Pixels, Rect, address_of
from .codec import pad_to_even
from .swscale import DirectConverter

__all__ = ["YuvCanvas", "bgra_block", "bgra_frame", "copy_block", "readable", "to_yuv"]


def readable(source: Pixels) -> int:
    """How many bytes from the start of C{source} may be read.

    Its length, except for a view of part of a memory mapping: the mapping's
    bytes after the view are readable too.  The whole grabs of
    L{litedesk.screen.shm_grab} are such views, with a page mapped after
    the last pixel, so a box at the monitor's bottom-right corner still
    takes libswscale's direct path (which reads past the box).
    """
    if isinstance(source, memoryview) and isinstance(source.obj, mmap.mmap):
        whole = memoryview(source.obj)
        return len(whole) - (address_of(source) - address_of(whole))
    return len(source)


def bgra_frame(data: Pixels, width: int, height: int) -> av.VideoFrame:
    """Packed BGRA bytes (stride C{width * 4}) as an C{av.VideoFrame}."""
    return bgra_block(data, width * 4, Rect(0, 0, width, height))


def bgra_block(source: Pixels, stride: int, r: Rect) -> av.VideoFrame:
    """Rectangle C{r} of a BGRA image (C{stride} bytes a row) as an C{av.VideoFrame}.

    Each row is copied once, straight into the frame (libav pads rows for
    alignment when C{width * 4} is not a multiple of 32).

    @raise ValueError: C{r} is not inside C{source}.
    """
    n = r.width * 4
    first = r.y * stride + r.x * 4
    last = first + (r.height - 1) * stride + n
    if r.x < 0 or r.y < 0 or r.x * 4 + n > stride or last > len(source):
        raise ValueError(f"{r} is not inside the source image")
    frame = av.VideoFrame(r.width, r.height, "bgra")
    plane = frame.planes[0]
    line = plane.line_size
    with memoryview(plane) as d, memoryview(source) as s:
        if line == n == stride:
            d[: n * r.height] = s[first : first + n * r.height]
        else:
            for row in range(r.height):
                o = first + row * stride
                d[row * line : row * line + n] = s[o : o + n]
    return frame


def to_yuv(data: Pixels, width: int, height: int) -> av.VideoFrame:
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
        self._direct = DirectConverter.get()

    def fits(self, width: int, height: int) -> bool:
        """Whether L{paint} may update a picture of this size in place."""
        return (
            self.frame is not None
            and (self.width, self.height) == (width, height)
            and width % 2 == 0
            and height % 2 == 0
        )

    def fill(self, bgra: Pixels, width: int, height: int) -> av.VideoFrame:
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

    def paint_from(self, rect: Rect, source: Pixels, stride: int, sx: int, sy: int) -> None:
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
        end = (sy + h - 1) * stride + (sx + w) * 4
        if self._direct is not None and end + DirectConverter.READ_SLACK <= readable(source):
            self._paint_direct(self._direct, frame, rect, source, stride, sx, sy)
            return
        src = bgra_block(source, stride, Rect(sx, sy, w, h))
        band = self._reformatter.reformat(src, format="yuv420p", interpolation="POINT")
        copy_block(band.planes[0], frame.planes[0], Rect(0, 0, w, h), x, y)
        for p in (1, 2):
            copy_block(band.planes[p], frame.planes[p], Rect(0, 0, w // 2, h // 2), x // 2, y // 2)
        self.painted += w * h

    def _paint_direct(
        self,
        conv: DirectConverter,
        frame: av.VideoFrame,
        rect: Rect,
        source: Pixels,
        stride: int,
        sx: int,
        sy: int,
    ) -> None:
        # Every address below is checked here: libswscale trusts them.
        x, y, w, h = rect.x, rect.y, rect.width, rect.height
        first = sy * stride + sx * 4
        if (
            sx < 0
            or sy < 0
            or (sx + w) * 4 > stride
            or first + (h - 1) * stride + w * 4 > len(source)
        ):
            raise ValueError(f"{Rect(sx, sy, w, h)} is not inside the source image")
        planes = frame.planes
        ys, us, vs = (p.line_size for p in planes)
        dst = (
            planes[0].buffer_ptr + y * ys + x,
            planes[1].buffer_ptr + (y // 2) * us + x // 2,
            planes[2].buffer_ptr + (y // 2) * vs + x // 2,
        )
        conv.convert(address_of(source) + first, stride, w, h, dst, (ys, us, vs))
        self.painted += w * h


def copy_block(src: VideoPlane, dst: VideoPlane, r: Rect, x: int, y: int) -> None:
    """Copy block C{r} of plane C{src} (bytes, rows) to C{(x, y)} of plane C{dst}."""
    s = memoryview(src)
    d = memoryview(dst)
    sl, dl = src.line_size, dst.line_size
    if r.x == x == 0 and r.width == dst.width and sl == dl:
        # Whole rows with the same stride: one copy.
        d[y * dl : (y + r.height) * dl] = s[r.y * sl : (r.y + r.height) * sl]
        return
    for row in range(r.height):
        o = (y + row) * dl + x
        i = (r.y + row) * sl + r.x
        d[o : o + r.width] = s[i : i + r.width]
