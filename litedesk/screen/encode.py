"""Video encoding on the host over PyAV.

The wire format (C{EncodedVideoFrame}) and what the decoder relies on are in
L{litedesk.screen.codec}; the viewer's decoder is L{litedesk.screen.decode}.

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
L{litedesk.screen.codec.EncodedFrame}.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
from twisted.logger import Logger

from litedesk.screen.codec import TIME_BASE, Codec, EncodedFrame, pad_to_even

__all__ = ["H264_QMIN", "VideoEncoder"]

_log = Logger()

H264_QMIN = 24

_ENCODERS = {Codec.H264: "libx264", Codec.VP9: "libvpx-vp9"}


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
        ctx.time_base = TIME_BASE
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
        frame.time_base = TIME_BASE
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
