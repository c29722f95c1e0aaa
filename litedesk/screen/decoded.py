"""Decoded pictures on the viewer: YUV as decoded, RGB only when and as large as needed.

A viewer that scales the remote screen to fit its window used to convert
every 1080p picture to full-size RGB (libswscale), copy it into a Pillow
image, then shrink it with Pillow: three passes over 8 MB per frame, about
20 ms, the larger part of the viewer's CPU.  A L{DecodedFrame} keeps the
decoder's YUV picture instead and converts it on demand:

  - L{PictureScaler.picture}: straight from YUV to RGBA at the size the
    window shows, in one libswscale call (colour conversion and
    area-averaging together), into a buffer the window hands Tk as it is
    (L{PictureScaler.scale}: the same as a Pillow image reading it in place);
  - L{DecodedFrame.image}: the full-size RGB picture, converted once on
    first use and kept (screenshots, tests, a window showing 1:1).

PyAV frames are reference-counted FFmpeg buffers: the decoder hands out a
new one per picture and never writes into a frame it returned, so a frame
may be converted in a worker thread while the next one decodes.
"""

from __future__ import annotations

from typing import Any

from av.video.reformatter import VideoReformatter
from PIL import Image

__all__ = ["DecodedFrame", "PictureScaler"]


class DecodedFrame:
    """A decoded picture, cropped to the captured size.

    @ivar pts: the sender's presentation time stamp.
    @ivar width: the captured width (the picture may be one pixel wider:
        the encoder's even padding).
    @ivar height: the captured height.
    """

    __slots__ = ("_image", "height", "picture", "pts", "width")

    def __init__(self, picture: Any, pts: int, width: int, height: int) -> None:
        """
        @param picture: the decoder's C{av.VideoFrame} (YUV, never written to).
        @param width: the captured width, at most the picture's.
        @param height: the captured height, at most the picture's.
        """
        self.picture = picture
        self.pts = pts
        self.width = width
        self.height = height
        self._image: Image.Image | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def image(self) -> Image.Image:
        """The picture as a full-size Pillow RGB image, converted on first use.

        Safe from any one thread at a time per frame; two threads asking at
        once would each convert (same pixels) and one result is kept.
        """
        image = self._image
        if image is None:
            image = self._image = _full_size_rgb(self.picture, self.width, self.height)
        return image

    def rgb(self) -> bytes:
        """Packed RGB bytes, 3 per pixel, row-major."""
        return self.image.tobytes()


def _full_size_rgb(picture: Any, width: int, height: int) -> Image.Image:
    # POINT: no scaling, and chroma taken as is (FFmpeg's to_image default
    # would interpolate it, for nothing visible on screen content).  A
    # reformatter of its own, single-threaded: a fresh one per call is what
    # PyAV does anyway, and its default (threads=0) would start a thread per
    # CPU for every picture.
    rgb = VideoReformatter().reformat(picture, format="rgb24", interpolation="POINT", threads=1)
    plane = rgb.planes[0]
    # frombuffer with an RGB raw mode copies once, straight from the plane
    # (any buffer will do; Pillow's stubs name only bytes and arrays).
    pixels: Any = plane
    image = Image.frombuffer(
        "RGB", (rgb.width, rgb.height), pixels, "raw", "RGB", plane.line_size, 1
    )
    if (width, height) != image.size:
        image = image.crop((0, 0, width, height))
    return image


class PictureScaler:
    """Converts decoded pictures to RGB at a given size, in one libswscale step.

    Keeps one libswscale context, reconfigured only when the size changes,
    so it must be used from one thread at a time (the frame view has at
    most one scaling in flight).
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def scale(self, frame: DecodedFrame, width: int, height: int) -> Image.Image:
        """C{frame}'s captured area as a C{width} x C{height} Pillow image.

        The image is RGBA (alpha 255) and reads the converted pixels in place
        (the padded picture of an odd-sized LiteDesk display comes back RGB,
        through the full-size image; see L{picture}).
        """
        picture = self._convert(frame, width, height)
        if isinstance(picture, Image.Image):
            return picture
        plane = picture.planes[0]
        pixels: Any = plane  # read in place: RGBA is one of Pillow's mapped modes
        return Image.frombuffer("RGBA", (width, height), pixels, "raw", "RGBA", plane.line_size, 1)

    def picture(self, frame: DecodedFrame, width: int, height: int) -> Any:
        """C{frame}'s captured area at C{width} x C{height}, as the window draws it.

        An RGBA C{av.VideoFrame} (alpha 255, one plane) straight from
        libswscale, which the window puts into its Tk photo without another
        copy (L{litedesk.viewer.tk_photo}); or, for the padded picture of an
        odd-sized display, a Pillow image.  Area averaging when shrinking
        (text stays legible and no pixel row is skipped), bilinear when
        enlarging, and at the picture's own size the chroma taken as is,
        exactly as L{DecodedFrame.image} (1:1 and screenshots agree).
        """
        return self._convert(frame, width, height)

    def _convert(self, frame: DecodedFrame, width: int, height: int) -> Any:
        picture = frame.picture
        shrink = width < frame.width or height < frame.height
        if (picture.width, picture.height) != frame.size:
            # The padded picture of an odd-sized display: libswscale cannot
            # leave the pad column out (PyAV has no cropped view of a frame)
            # and scaling it along would shift the picture by up to half a
            # pixel, so these take the slower way through the full size.
            full = frame.image
            if (width, height) == full.size:
                return full
            resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
            return full.resize((width, height), resample)
        if (width, height) == frame.size:
            interpolation = "POINT"
        else:
            interpolation = "AREA" if shrink else "BILINEAR"
        return self._reformatter.reformat(
            picture,
            width=width,
            height=height,
            format="rgba",
            interpolation=interpolation,
            threads=1,
        )
