"""Video encoding (host) and decoding (viewer) over PyAV.

The wire format is RustDesk's C{EncodedVideoFrame}: C{data} is what the
encoder produced for one input frame, C{key} says whether a decoder can start
there, C{pts} is a timestamp in milliseconds.

H.264 (libx264, default):
  - C{preset=ultrafast}, C{tune=zerolatency}: no look-ahead, no B-frames,
    sliced threads, so every input frame comes straight back out as one
    access unit (no encoder delay);
  - no global header, so the output is Annex-B with SPS/PPS repeated before
    every IDR frame: any key frame is a complete entry point for a viewer that
    joins late;
  - C{forced-idr=1}: a requested key frame is an IDR, not an open-GOP I-frame
    that later frames could reach across;
  - average bitrate with a VBV cap (C{maxrate = 2 x bitrate}) and a
    quantizer cap per image quality (L{VideoEncoder.set_qmax}).  libx264 re-reads
    C{bit_rate} and the max rate before every frame (FFmpeg calls
    C{x264_encoder_reconfig}), so bitrate changes cost nothing.  The VBV
    buffer size can only be set when the context is opened; a bitrate far
    from the one the buffer was sized for reopens the context.
VP9 (libvpx-vp9, selectable):
  - C{deadline=realtime}, C{cpu-used=8}, C{lag-in-frames=0} (libvpx would
    otherwise hold back up to 25 frames), C{row-mt=1}, CBR;
  - FFmpeg's libvpx wrapper does not apply C{bit_rate} changes after opening
    (measured: identical output), so a bitrate change reopens the context,
    which means a key frame.  Small changes are therefore ignored
    (hysteresis) and reopens are rate-limited.

Timestamps are milliseconds (time base 1/1000) and frames may come at any
rate.  libvpx's rate control follows the timestamps.  libx264's does not:
C{tune=zerolatency} implies C{force-cfr}, so it budgets C{bit_rate / framerate}
per frame whatever the timestamps say (measured: at 10 frames/s a context
opened for 30 spent a third of its bitrate).  Turning that off
(C{force-cfr=0}) costs a frame of delay, which a live desktop cannot afford,
so instead L{VideoEncoder} hands libx264 C{bitrate * opened_fps / fps}: the
per-second bitrate holds as the frame rate changes, without a reopen.

Frames come from mss as BGRA.  libswscale converts them to yuv420p with
point-sampled chroma, measured about three times faster than its default
bilinear filter at 1080p for a difference too small to see on desktop content.
yuv420p needs even dimensions: an odd width or height is padded by repeating
the last column or row, and the decoder crops back to the size in the
L{EncodedFrame}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any

import av
from PIL import Image
from twisted.logger import Logger

__all__ = [
    "Codec",
    "DecodedFrame",
    "EncodedFrame",
    "VideoDecoder",
    "VideoEncoder",
    "is_key_frame",
    "pad_to_even",
]

_log = Logger()

_TIME_BASE = Fraction(1, 1000)
H264_QMIN = 24


class Codec(StrEnum):
    """Codec names as used in L{EncodedFrame.codec}; they match the C{VideoFrame}
    union member minus the trailing C{s} (C{h264s}, C{vp9s})."""

    H264 = "h264"
    VP9 = "vp9"


_ENCODERS = {Codec.H264: "libx264", Codec.VP9: "libvpx-vp9"}
# FFmpeg's native decoders: the h264 one is the only H.264 decoder in PyAV's
# wheel, and the native VP9 decoder is faster than libvpx's.
_DECODERS = {Codec.H264: "h264", Codec.VP9: "vp9"}


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded video frame, ready to be put in an C{EncodedVideoFrame}.

    @ivar data: the bitstream (Annex-B access unit for H.264, a VP9 frame or
        superframe).
    @ivar key: a decoder can start decoding here.
    @ivar pts: milliseconds, increasing.
    @ivar width: the captured size; the coded size may be one pixel larger
        in either direction (see L{pad_to_even}).
    """

    data: bytes
    key: bool
    pts: int
    codec: str
    width: int
    height: int


def pad_to_even(data: bytes, width: int, height: int, bpp: int = 4) -> tuple[bytes, int, int]:
    """Pad a packed image to even dimensions by repeating its last column/row.

    Repeating edge pixels (rather than adding black) keeps the padding cheap
    to code and invisible at the edge once the decoder crops it away.
    """
    if width % 2 == 0 and height % 2 == 0:
        return data, width, height
    stride = width * bpp
    rows = [data[y * stride : (y + 1) * stride] for y in range(height)]
    if width % 2:
        rows = [r + r[-bpp:] for r in rows]
        width += 1
    if height % 2:
        rows.append(rows[-1])
        height += 1
    return b"".join(rows), width, height


def is_key_frame(codec: str, data: bytes) -> bool:
    """Whether C{data} starts a decodable sequence, from the bitstream alone.

    H.264: an Annex-B stream containing an IDR slice (NAL type 5).  VP9: the
    uncompressed header says C{frame_type == KEY_FRAME} and carries the sync
    code.  Garbage is not a key frame.
    """
    if codec == Codec.H264:
        i = data.find(b"\x00\x00\x01")
        while i >= 0 and i + 3 < len(data):
            if data[i + 3] & 0x1F == 5:
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
        return False
    if codec == Codec.VP9:
        if len(data) < 4:
            return False
        b = data[0]
        if b >> 6 != 0b10:  # frame_marker
            return False
        profile = ((b >> 5) & 1) | (((b >> 4) & 1) << 1)
        bit = 4 if profile < 3 else 5  # profile 3 has a reserved zero bit
        show_existing = (b >> (7 - bit)) & 1
        if show_existing:
            return False
        bit += 1
        frame_type = (b >> (7 - bit)) & 1 if bit < 8 else data[1] >> 7
        if frame_type != 0:
            return False
        # The key-frame header continues with show_frame, error_resilient and
        # the 24-bit sync code 0x49 0x83 0x42, bit-aligned after them.
        pos = bit + 3
        bits = int.from_bytes(data[:5].ljust(5, b"\x00"), "big")
        sync = (bits >> (40 - pos - 24)) & 0xFFFFFF
        return sync == 0x498342
    return False


def _bps_to_option(bps: float) -> str:
    return str(max(1, int(bps)))


class VideoEncoder:
    """Encode BGRA frames to H.264 or VP9, one output frame per input frame.

    Not thread-safe: call it from one thread (the streamer's worker).
    L{request_keyframe}, L{set_bitrate} and L{set_fps} only store values that
    the next L{encode} applies, so they may be called from another thread.

    @ivar opens: how many times a codec context was opened (for tests and
        statistics: each one costs a key frame).
    """

    # libx264's VBV (maxrate and buffer) is fixed when the context opens:
    # maxrate gets this much headroom over the bitrate, and a later bitrate
    # (as handed to libx264, see _x264_bitrate) above it, or below a quarter
    # of the opening one (the buffer would then hold seconds of video),
    # reopens the context.
    X264_MAXRATE_HEADROOM = 2.0
    X264_MIN_RATIO = 0.25
    # VP9 reopens (with a key frame) only for changes beyond this ratio, and
    # at most once per VP9_REOPEN_INTERVAL seconds.
    VP9_REOPEN_RATIO = 1.5
    VP9_REOPEN_INTERVAL = 5.0
    # Seconds of the bitrate the VBV/CBR buffer holds.  It bounds bursts of
    # motion; key frames are bounded by the quantizer cap instead (a 1080p
    # desktop key frame is 120-240 kB from Low to Best, more than the buffer).
    BUFFER_SECONDS = 1.0

    def __init__(
        self,
        codec: str = Codec.H264,
        *,
        bitrate: int = 2_000_000,
        fps: float = 30.0,
        qmax: int | None = None,
        threads: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._codec = Codec(codec)
        self._qmax = qmax
        self._bitrate = int(bitrate)
        self._fps = float(fps)
        self._threads = threads
        self._clock = clock
        self._ctx: Any = None
        self._size: tuple[int, int] | None = None
        self._opened_bitrate = 0
        self._opened_fps = self._fps
        self._opened_at = float("-inf")
        self._force_key = True
        self._last_pts = -1
        self.opens = 0

    @property
    def codec(self) -> str:
        return str(self._codec)

    @property
    def bitrate(self) -> int:
        return self._bitrate

    @property
    def fps(self) -> float:
        return self._fps

    def request_keyframe(self) -> None:
        """Make the next encoded frame a key frame."""
        self._force_key = True

    def set_bitrate(self, bps: int) -> None:
        """Target bits per second from the next frame on."""
        self._bitrate = max(10_000, int(bps))

    def set_fps(self, fps: float) -> None:
        """The rate frames now come at; keeps the bitrate per second.

        Reopens only for H.264, and only when the rate moved so far from the
        one the context was opened at that its VBV no longer fits (see
        L{X264_MAXRATE_HEADROOM}).
        """
        self._fps = max(1.0, float(fps))

    def set_qmax(self, qmax: int | None) -> None:
        """Cap the quantizer (a quality floor); reopens, so costs a key frame.

        With plain average-bitrate control libx264 gives a full-screen key
        frame only a few frames' worth of bits and never sharpens a static
        picture afterwards; the cap keeps text readable at the price of
        overshooting the bitrate on big changes (measured at 1080p: key frame
        MAE 9.0 without a cap at 1 Mb/s, 3.6 with C{qmax=32} at 1.5 Mb/s).
        """
        if qmax != self._qmax:
            self._qmax = qmax
            self._close_ctx()

    def set_codec(self, codec: str) -> None:
        """Switch codec; the next frame is a key frame of the new codec."""
        new = Codec(codec)
        if new != self._codec:
            self._codec = new
            self._close_ctx()

    def _open(self, width: int, height: int) -> None:
        self._close_ctx()
        name = _ENCODERS[self._codec]
        # Typed as Any: PyAV types create() as the base CodecContext, which
        # lacks the video attributes set here.
        ctx: Any = av.CodecContext.create(name, "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = _TIME_BASE
        ctx.framerate = Fraction(round(self._fps * 1000), 1000)
        ctx.bit_rate = self._bitrate
        self._opened_fps = self._fps
        ctx.max_b_frames = 0
        # Key frames only on request (new viewer, refresh, reopen): on a
        # reliable stream periodic ones would only cost bandwidth.
        ctx.gop_size = 1 << 30
        ctx.thread_count = self._threads
        if self._qmax is not None:
            ctx.qmax = self._qmax
        if self._codec is Codec.H264:
            # A quality ceiling: without it x264's rate control spends any
            # unused budget on near-lossless frames (typing in a static window
            # sent 8-23 kB frames every few keystrokes).  Measured on captured
            # typing: qmin 24 cut the bitrate 0.39 -> 0.23 Mb/s with the mean
            # pixel error 2.05 -> 2.12 (bench/session.py notes).
            ctx.qmin = min(H264_QMIN, self._qmax) if self._qmax is not None else H264_QMIN
        bufsize = _bps_to_option(self._bitrate * self.BUFFER_SECONDS)
        if self._codec is Codec.H264:
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "forced-idr": "1",
                "maxrate": _bps_to_option(self._bitrate * self.X264_MAXRATE_HEADROOM),
                "bufsize": bufsize,
            }
        else:
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "row-mt": "1",
                "end-usage": "cbr",
                "bufsize": bufsize,
            }
        ctx.open()
        self._ctx = ctx
        self._size = (width, height)
        self._opened_bitrate = self._bitrate
        self._opened_at = self._clock()
        self._force_key = True
        self.opens += 1
        _log.debug(
            "opened {encoder} {width}x{height} at {bitrate} b/s",
            encoder=name,
            width=width,
            height=height,
            bitrate=self._bitrate,
        )

    def _x264_bitrate(self) -> int:
        # libx264 budgets bit_rate/opened_fps per frame (force-cfr); scale so
        # that frames at the current rate add up to the bitrate per second.
        return int(self._bitrate * self._opened_fps / self._fps)

    def _needs_reopen(self, size: tuple[int, int]) -> bool:
        if self._ctx is None or size != self._size:
            return True
        if self._codec is Codec.H264:
            ratio = self._x264_bitrate() / self._opened_bitrate
            return not (self.X264_MIN_RATIO <= ratio <= self.X264_MAXRATE_HEADROOM)
        ratio = self._bitrate / self._opened_bitrate
        if 1 / self.VP9_REOPEN_RATIO < ratio < self.VP9_REOPEN_RATIO:
            return False
        return self._clock() - self._opened_at >= self.VP9_REOPEN_INTERVAL

    def encode(
        self, bgra: bytes, width: int, height: int, pts: int, *, keyframe: bool = False
    ) -> EncodedFrame:
        """Encode one BGRA frame.

        @param pts: milliseconds; made strictly increasing if it is not.
        @param keyframe: force a key frame (as does L{request_keyframe}).
        @raise ValueError: C{bgra} is not C{width * height * 4} bytes.
        """
        if len(bgra) != width * height * 4 or width <= 0 or height <= 0:
            raise ValueError(f"{len(bgra)} bytes is not a {width}x{height} BGRA frame")
        data, cw, ch = pad_to_even(bgra, width, height)
        if self._needs_reopen((cw, ch)):
            self._open(cw, ch)
        ctx = self._ctx
        if self._codec is Codec.H264 and ctx.bit_rate != self._x264_bitrate():
            # Picked up by libx264's reconfig before the next frame.
            ctx.bit_rate = self._x264_bitrate()
        src = av.VideoFrame(cw, ch, "bgra")
        plane = src.planes[0]
        if plane.line_size == cw * 4:
            plane.update(data)
        else:  # libav pads rows for alignment when width*4 is not a multiple of 32
            stride = cw * 4
            pad = b"\x00" * (plane.line_size - stride)
            plane.update(b"".join(data[y * stride : (y + 1) * stride] + pad for y in range(ch)))
        frame = src.reformat(format="yuv420p", interpolation="POINT")
        pts = max(int(pts), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = _TIME_BASE
        want_key = keyframe or self._force_key
        self._force_key = False
        _pt = av.video.frame.PictureType
        frame.pict_type = _pt.I if want_key else _pt.NONE
        packets = ctx.encode(frame)
        out = b"".join(bytes(p) for p in packets)
        key = any(p.is_keyframe for p in packets)
        if want_key and not key:
            # Never observed with these settings; make the next one key rather
            # than claim a key frame we did not get.
            self._force_key = True
        return EncodedFrame(out, key, pts, str(self._codec), width, height)

    def _close_ctx(self) -> None:
        self._ctx = None
        self._size = None

    def close(self) -> None:
        """Drop the codec context (the next frame reopens it with a key frame)."""
        self._close_ctx()
        self._force_key = True


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
