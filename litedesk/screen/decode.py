"""Video decoding on the viewer over PyAV: L{EncodedFrame}s to Pillow images.

The decoder crops each picture back to the captured size carried in the
L{EncodedFrame} (the encoder pads odd sizes, see
L{litedesk.screen.codec.pad_to_even}).  It is separate from the encoder
(L{litedesk.screen.encode}): the viewer needs only this half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
from PIL import Image
from twisted.logger import Logger

from litedesk.screen.codec import Codec, EncodedFrame, is_key_frame

__all__ = ["DecodedFrame", "VideoDecoder"]

_log = Logger()

# FFmpeg's native decoders: the h264 one is the only H.264 decoder in PyAV's
# wheel, and the native VP9 decoder is faster than libvpx's.
_DECODERS = {Codec.H264: "h264", Codec.VP9: "vp9"}


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A decoded picture, cropped to the captured size."""

    image: Image.Image
    pts: int

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def rgb(self) -> bytes:
        """Packed RGB bytes, 3 per pixel, row-major."""
        return self.image.tobytes()


class VideoDecoder:
    """Decode L{EncodedFrame}s (or raw C{data}) to Pillow RGB images.

    Never raises on bad input: a frame that does not decode is counted in
    L{errors}, described in L{last_error}, logged, and the decoder then
    ignores everything until the next key frame (frames predicted from a
    broken picture would only spread the damage).  It also waits for a key
    frame at the start, so a viewer that joins mid-stream shows nothing
    rather than grey smears.

    @ivar errors: frames that failed to decode.
    @ivar skipped: frames ignored while waiting for a key frame.
    @ivar waiting_for_key: the next non-key frame will be skipped.
    """

    def __init__(
        self, codec: str = Codec.H264, on_error: Callable[[str], None] | None = None
    ) -> None:
        self._codec = Codec(codec)
        self._on_error = on_error
        self._ctx: Any = None
        self.errors = 0
        self.skipped = 0
        self.last_error: str | None = None
        self.waiting_for_key = True

    @property
    def codec(self) -> str:
        return str(self._codec)

    def _new_ctx(self) -> Any:
        ctx = av.CodecContext.create(_DECODERS[self._codec], "r")
        # Fail loudly on damaged input instead of concealing it: a concealed
        # frame looks like a valid one and poisons the frames that follow.
        ctx.options = {"err_detect": "crccheck+bitstream+buffer+explode"}
        ctx.thread_count = 1  # frame threading would add a frame of delay
        ctx.open()
        return ctx

    def reset(self, codec: str | None = None) -> None:
        """Forget all decoder state (new stream, display switch, codec change)."""
        if codec is not None:
            self._codec = Codec(codec)
        self._ctx = None
        self.waiting_for_key = True

    def decode_frame(self, frame: EncodedFrame) -> DecodedFrame | None:
        """Decode one L{EncodedFrame} (switching codec if it changed)."""
        if frame.codec != self._codec:
            try:
                self.reset(frame.codec)
            except ValueError:
                self._fail(f"unknown codec {frame.codec!r}")
                return None
        return self.decode(frame.data, frame.key, frame.pts, frame.width, frame.height)

    def decode(
        self,
        data: bytes,
        key: bool | None = None,
        pts: int = 0,
        width: int | None = None,
        height: int | None = None,
    ) -> DecodedFrame | None:
        """Decode one frame's data; C{None} when nothing can be shown (yet).

        @param key: the sender's key-frame flag; C{None} to look at the data.
            A frame the flag calls key but whose data says otherwise is not
            trusted as an entry point.
        @param width: crop the picture to this width (the padded coded size
            of an odd-sized display is one pixel larger).
        """
        try:
            return self._decode(data, key, pts, width, height)
        except Exception as e:  # PyAV raises many types; none may escape
            self._fail(f"{type(e).__name__}: {e}")
            return None

    def _decode(
        self, data: bytes, key: bool | None, pts: int, width: int | None, height: int | None
    ) -> DecodedFrame | None:
        is_key = is_key_frame(self._codec, data)
        if key is False:
            is_key = False
        if self.waiting_for_key:
            if not is_key:
                self.skipped += 1
                return None
            self._ctx = None  # start from clean state at the key frame
        if self._ctx is None:
            self._ctx = self._new_ctx()
        frames = self._ctx.decode(av.Packet(data))
        if not frames:
            # zero-delay streams give one picture per frame; nothing here
            # means the decoder could not make sense of it.
            self._fail("no picture in frame")
            return None
        picture = frames[-1]
        if getattr(picture, "is_corrupt", False):
            self._fail("corrupt picture")
            return None
        self.waiting_for_key = False
        # Faster than PyAV's to_image() (which fills a new Pillow image first,
        # measured about twice as slow at 1080p) and the same pixels: convert
        # with libswscale, copy the plane once, let Pillow read it in place.
        rgb = picture.reformat(format="rgb24", interpolation="POINT")
        plane = rgb.planes[0]
        image = Image.frombuffer(
            "RGB", (rgb.width, rgb.height), bytes(plane), "raw", "RGB", plane.line_size, 1
        )
        w = image.width if width is None else min(width, image.width)
        h = image.height if height is None else min(height, image.height)
        if (w, h) != image.size:
            image = image.crop((0, 0, w, h))
        return DecodedFrame(image, pts)

    def _fail(self, reason: str) -> None:
        self.errors += 1
        self.last_error = reason
        self.waiting_for_key = True
        self._ctx = None
        _log.warn(
            "{codec} frame did not decode ({reason}); waiting for a key frame",
            codec=str(self._codec),
            reason=reason,
        )
        if self._on_error is not None:
            self._on_error(reason)
