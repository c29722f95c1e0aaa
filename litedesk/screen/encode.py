"""Video encoding on the host: H.264 through PyAV, VP9 through libvpx.

The wire format (C{EncodedVideoFrame}) and what the decoder relies on are in
L{litedesk.screen.codec}; the viewer's decoder is L{litedesk.screen.decode}.

H.264 (libx264 through PyAV, the default for LiteDesk viewers):
  - C{preset=ultrafast}, C{tune=zerolatency}: no look-ahead, no B-frames,
    sliced threads, so every input frame comes straight back out as one
    access unit (no encoder delay);
  - no global header, so the output is Annex-B with SPS/PPS repeated before
    every IDR frame: any key frame is a complete entry point for a viewer that
    joins late;
  - C{forced-idr=1}: a requested key frame is an IDR, not an open-GOP I-frame
    that later frames could reach across;
  - the image quality's quantizer cap (L{VideoEncoder.set_qmax}, which
    the streamer always sets) as a constant quantizer: the bitrate is then
    not libx264's to hold, and a new cap reopens the context;
  - without a cap, average bitrate with a VBV cap (C{maxrate = 2 x
    bitrate}) and a quantizer floor.  libx264 re-reads C{bit_rate} and the
    max rate before every frame (FFmpeg calls C{x264_encoder_reconfig}), so
    bitrate changes cost nothing.  The VBV buffer size can only be set when
    the context is opened; a bitrate far from the one the buffer was sized
    for reopens the context;
  - the changed rectangles the caller passes (L{VideoEncoder.encode_yuv})
    reach libx264 as hints (L{litedesk.screen.video_hint}) and libvpx as
    its active map (L{litedesk.screen.vpx_active_map}): what lies outside
    them is coded as skipped without analysis.

VP9 (what stock RustDesk clients get; LiteDesk viewers may ask for it).
libvpx is called directly (L{Libvpx}: ctypes on the libvpx PyAV ships, or
the system's), as RustDesk's own host calls it (libs/scrap/src/common/
vpxcodec.rs), because FFmpeg's wrapper (C{libvpx-vp9}) cannot do what two
of the settings below need: speed 9 (its C{cpu-used} stops at 8) and the
loop-filter switch; nor can it change the bitrate of a running encoder (it
ignores later C{bit_rate} changes: measured, identical output), which libvpx
takes from C{vpx_codec_enc_config_set} before the next frame, without a key
frame, as RustDesk's host changes it.  FFmpeg's wrapper remains the fallback
when no libvpx of the ABI this module knows loads (L{VideoEncoder.backend}
says which one runs); it reopens, with a key frame, only for bitrate changes
beyond L{VideoEncoder.VP9_REOPEN_RATIO}, at most once per
L{VideoEncoder.VP9_REOPEN_INTERVAL}.

The settings of both encoders, and the measurements that chose them, are in
L{litedesk.screen.encoder_settings}.

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
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, ClassVar

import av
from twisted.logger import Logger

from litedesk.screen.change import Rect
from litedesk.screen.codec import TIME_BASE, Codec, EncodedFrame, pad_to_even
from litedesk.screen.encoder_settings import (
    H264_QMIN,
    H264_QMIN_BELOW_CAP,
    VP9_QMIN,
    VP9_QMIN_BELOW_CAP,
    VP9_SETTINGS,
    X264_SETTINGS,
    h264_qmin,
    vp9_qrange,
    x264_rate,
)
from litedesk.screen.libvpx import (
    CONFIG,
    CONTROLS,
    DIRECT_ONLY,
    DirectVP9,
    Libvpx,
    VpxError,
    VpxUnusable,
    libvpx_version,
    parse_vp9_value,
)
from litedesk.screen.video_hint import VideoHints
from litedesk.screen.yuv_canvas import to_yuv

__all__ = [
    "H264_QMIN",
    "H264_QMIN_BELOW_CAP",
    "VP9_QMIN",
    "VP9_QMIN_BELOW_CAP",
    "VideoEncoder",
    "h264_qmin",
    "libvpx_version",
    "parse_vp9_value",
]

_log = Logger()

_ENCODERS = {Codec.H264: "libx264", Codec.VP9: "libvpx-vp9"}


class VideoEncoder:
    """Encode BGRA frames to H.264 or VP9, one output frame per input frame.

    Not thread-safe: call it from one thread (the streamer's worker).
    L{request_keyframe}, L{set_bitrate} and L{set_fps} only store values that
    the next L{encode} applies, so they may be called from another thread.

    @param vp9_options: VP9 settings over this module's, by FFmpeg's option
        names (C{None} drops one); the libvpx backend knows those in
        C{CONTROLS} and C{CONFIG}.  For measurements (bench/).
    @param h264_options: libx264 options (FFmpeg's names) over this
        module's, C{None} drops one.  For measurements (bench/).
    @param vp9_backend: C{"libvpx"} (direct, the default when it loads),
        C{"ffmpeg"} (PyAV's C{libvpx-vp9}), or C{None} for the default.
    @ivar opens: how many times a codec context was opened (for tests and
        statistics: each one costs a key frame).
    @ivar ignored_options: options the last opened encoder did not know.
    """

    # libx264's VBV (maxrate and buffer) is fixed when the context opens:
    # maxrate gets this much headroom over the bitrate, and a later bitrate
    # (as handed to libx264, see _x264_bitrate) above it, or below a quarter
    # of the opening one (the buffer would then hold seconds of video),
    # reopens the context.
    X264_MAXRATE_HEADROOM = 2.0
    X264_MIN_RATIO = 0.25
    # VP9 through FFmpeg reopens (with a key frame) only for changes beyond
    # this ratio, and at most once per VP9_REOPEN_INTERVAL seconds.
    VP9_REOPEN_RATIO = 1.5
    VP9_REOPEN_INTERVAL = 5.0
    # Seconds of the bitrate the VBV buffer holds.  It bounds bursts of
    # motion; key frames are bounded by the quantizer cap instead (a 1080p
    # desktop key frame is 120-240 kB from Low to Best, more than the buffer).
    BUFFER_SECONDS = 1.0
    # What VP9 is given unless vp9_options says otherwise.
    VP9_OPTIONS: ClassVar[Mapping[str, str]] = VP9_SETTINGS

    def __init__(
        self,
        codec: str = Codec.H264,
        *,
        bitrate: int = 2_000_000,
        fps: float = 30.0,
        qmax: int | None = None,
        threads: int = 2,
        clock: Callable[[], float] = time.monotonic,
        vp9_options: Mapping[str, str | None] | None = None,
        vp9_backend: str | None = None,
        h264_options: Mapping[str, str | None] | None = None,
    ) -> None:
        if vp9_backend not in (None, "libvpx", "ffmpeg"):
            raise ValueError(f"unknown VP9 backend {vp9_backend!r}")
        self._codec = Codec(codec)
        self._vp9_overrides = dict(vp9_options or {})
        self._h264_overrides = dict(h264_options or {})
        self._vp9_backend = vp9_backend
        self._qmax = qmax
        self._bitrate = int(bitrate)
        self._fps = float(fps)
        self._threads = threads
        self._clock = clock
        self._ctx: Any = None
        self._vpx: DirectVP9 | None = None
        self._vpx_applied: tuple[int, int, int] = (0, 0, 0)
        self._vpx_fixed_q: tuple[int | None, int | None] = (None, None)
        self._size: tuple[int, int] | None = None
        self._opened_bitrate = 0
        self._opened_fps = self._fps
        self._opened_qmax = qmax
        self._opened_at = float("-inf")
        self._force_key = True
        self._last_pts = -1
        self.opens = 0
        self.ignored_options: dict[str, str] = {}
        self._hints = VideoHints()

    @property
    def codec(self) -> str:
        return str(self._codec)

    @property
    def bitrate(self) -> int:
        return self._bitrate

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def backend(self) -> str | None:
        """What encodes now: C{"libx264"}, C{"libvpx"}, C{"ffmpeg-libvpx"}; C{None} until opened."""
        if self._vpx is not None:
            return "libvpx"
        if self._ctx is None:
            return None
        return "libx264" if self._codec is Codec.H264 else "ffmpeg-libvpx"

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
        """Cap the quantizer (a quality floor).

        With plain average-bitrate control libx264 gives a full-screen key
        frame only a few frames' worth of bits and never sharpens a static
        picture afterwards; the cap keeps text readable at the price of
        overshooting the bitrate on big changes (measured at 1080p: key frame
        MAE 9.0 without a cap at 1 Mb/s, 3.6 with C{qmax=32} at 1.5 Mb/s).
        libx264 and FFmpeg's VP9 take it when they open, so a change reopens
        them (a key frame); libvpx called directly takes it on the next frame.
        """
        self._qmax = qmax

    def set_codec(self, codec: str) -> None:
        """Switch codec; the next frame is a key frame of the new codec."""
        new = Codec(codec)
        if new != self._codec:
            self._codec = new
            self._close_ctx()

    # -- opening ---------------------------------------------------------------

    def _vp9_qrange(self) -> tuple[int, int]:
        return vp9_qrange(self._qmax)

    def _vp9_settings(self) -> dict[str, str]:
        options = dict(self.VP9_OPTIONS)
        for key, value in self._vp9_overrides.items():
            if value is None:
                options.pop(key, None)
            else:
                options[key] = value
        return options

    def _open_direct(self, vpx: Libvpx, width: int, height: int) -> DirectVP9 | None:
        controls: dict[str, int] = {}
        config: dict[str, int] = {}
        ignored: dict[str, str] = {}
        for key, value in self._vp9_settings().items():
            if key in ("deadline", "lag-in-frames"):
                continue  # how this backend always runs (realtime, no lag)
            target = controls if key in CONTROLS else config if key in CONFIG else None
            number = parse_vp9_value(key, value)
            if target is None or number is None:
                ignored[key] = value
            else:
                target[key] = number
        # A quantizer given in vp9_options holds; otherwise they follow qmax.
        self._vpx_fixed_q = (config.pop("qmin", None), config.pop("qmax", None))
        qmin, qmax = self._direct_qrange()
        try:
            enc = DirectVP9(
                vpx,
                width,
                height,
                bitrate=self._bitrate,
                qmin=qmin,
                qmax=qmax,
                threads=self._threads,
                controls=controls,
                config=config,
            )
        except VpxError as e:
            _log.warn("libvpx {version}: {error}; VP9 through FFmpeg", version=vpx.version, error=e)
            if isinstance(e, VpxUnusable):
                Libvpx.disable()
            return None
        self.ignored_options = ignored
        self._vpx_applied = (self._bitrate, qmin, qmax)
        return enc

    def _open_ffmpeg(self, width: int, height: int) -> Any:
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
        ctx.max_b_frames = 0
        # Key frames only on request (new viewer, refresh, reopen): on a
        # reliable stream periodic ones would only cost bandwidth.
        ctx.gop_size = 1 << 30
        ctx.thread_count = self._threads
        if self._codec is Codec.H264:
            rate, qmin = x264_rate(
                self._qmax,
                maxrate=self._bitrate * self.X264_MAXRATE_HEADROOM,
                bufsize=self._bitrate * self.BUFFER_SECONDS,
            )
            if qmin is None:
                ctx.bit_rate = 0  # a constant quantizer
            else:
                ctx.qmin = qmin
            x264 = {**X264_SETTINGS, **rate, **self._h264_overrides}
            ctx.options = {k: v for k, v in x264.items() if v is not None}
        else:
            if self._qmax is not None:
                ctx.qmax = self._qmax
            options = {"qmin": str(self._vp9_qrange()[0]), **self._vp9_settings()}
            # What FFmpeg's wrapper cannot take: speed 9 (its cpu-used stops
            # at 8), the loop filter switch, and a rate-control mode by name
            # (it infers CBR from minrate = maxrate = bitrate; VBR measured
            # better through it, with its buffer sizes).
            if int(options.get("cpu-used", "8")) > 8:
                options["cpu-used"] = "8"
            for direct_only in (*DIRECT_ONLY, *(k for k in options if k.startswith("buffer-"))):
                options.pop(direct_only, None)
            ctx.options = options
        ctx.open()
        # PyAV leaves the options FFmpeg did not take in ctx.options: an
        # unknown name is otherwise silently ignored (an "end-usage" option
        # once was, and VP9 ran in a mode nobody had chosen).
        self.ignored_options = dict(ctx.options or {})
        return ctx

    def _open(self, width: int, height: int) -> None:
        self._close_ctx()
        vpx = Libvpx.get() if self._codec is Codec.VP9 and self._vp9_backend != "ffmpeg" else None
        if vpx is None and self._vp9_backend == "libvpx" and self._codec is Codec.VP9:
            raise RuntimeError("libvpx cannot be loaded")
        direct = self._open_direct(vpx, width, height) if vpx is not None else None
        if direct is not None:
            self._vpx = direct
        else:
            self._ctx = self._open_ffmpeg(width, height)
        if self.ignored_options:
            _log.warn(
                "{backend} ignored options {options}",
                backend=self.backend,
                options=self.ignored_options,
            )
        self._opened_fps = self._fps
        self._opened_qmax = self._qmax
        self._size = (width, height)
        self._opened_bitrate = self._bitrate
        self._opened_at = self._clock()
        self._force_key = True
        self.opens += 1
        _log.debug(
            "opened {backend} {width}x{height} at {bitrate} b/s",
            backend=self.backend,
            width=width,
            height=height,
            bitrate=self._bitrate,
        )

    def _x264_bitrate(self) -> int:
        # libx264 budgets bit_rate/opened_fps per frame (force-cfr); scale so
        # that frames at the current rate add up to the bitrate per second.
        return int(self._bitrate * self._opened_fps / self._fps)

    def _needs_reopen(self, size: tuple[int, int]) -> bool:
        if (self._ctx is None and self._vpx is None) or size != self._size:
            return True
        if self._vpx is not None:
            return False  # rate and quantizers change in place (_apply_direct)
        if self._qmax != self._opened_qmax:
            return True
        if self._codec is Codec.H264 and self._qmax is not None:
            return False  # a constant quantizer: the bitrate is not libx264's
        if self._codec is Codec.H264:
            ratio = self._x264_bitrate() / self._opened_bitrate
            return not (self.X264_MIN_RATIO <= ratio <= self.X264_MAXRATE_HEADROOM)
        ratio = self._bitrate / self._opened_bitrate
        if 1 / self.VP9_REOPEN_RATIO < ratio < self.VP9_REOPEN_RATIO:
            return False
        return self._clock() - self._opened_at >= self.VP9_REOPEN_INTERVAL

    def _direct_qrange(self) -> tuple[int, int]:
        qmin, qmax = self._vp9_qrange()
        fixed_min, fixed_max = self._vpx_fixed_q
        return (
            qmin if fixed_min is None else fixed_min,
            qmax if fixed_max is None else fixed_max,
        )

    def _apply_direct(self, vpx: DirectVP9) -> None:
        qmin, qmax = self._direct_qrange()
        want = (self._bitrate, qmin, qmax)
        if want != self._vpx_applied:
            vpx.configure(bitrate=self._bitrate, qmin=qmin, qmax=qmax)
            self._vpx_applied = want

    # -- encoding --------------------------------------------------------------

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
        return self.encode_yuv(to_yuv(data, cw, ch), width, height, pts, keyframe=keyframe)

    def encode_yuv(
        self,
        frame: av.VideoFrame,
        width: int,
        height: int,
        pts: int,
        *,
        keyframe: bool = False,
        changed: Sequence[Rect] | None = None,
    ) -> EncodedFrame:
        """Encode a C{yuv420p} frame already converted (a C{YuvCanvas}' frame).

        The frame's size is the coded size (even); C{width} and C{height} are
        the picture's, which the viewer crops to.  The frame is not kept: the
        caller may change it once this returns.

        @param changed: the rectangles of C{frame} that differ from the frame
            this encoder was given last, if the caller knows (everything
            outside them must be identical); libx264 and libvpx then skip
            the rest without analysis (L{litedesk.screen.video_hint},
            L{litedesk.screen.vpx_active_map}).  C{None}: unknown.
        """
        if self._needs_reopen((frame.width, frame.height)):
            self._open(frame.width, frame.height)
        pts = max(int(pts), self._last_pts + 1)
        self._last_pts = pts
        want_key = keyframe or self._force_key
        self._force_key = False
        if self._vpx is not None:
            self._apply_direct(self._vpx)
            duration = max(1, round(1000 / self._fps))
            out, key = self._vpx.encode(frame, pts, duration, want_key, changed)
        else:
            out, key = self._encode_ffmpeg(frame, pts, want_key, changed)
        if want_key and not key:
            # Never observed with these settings; make the next one key rather
            # than claim a key frame we did not get.
            self._force_key = True
        return EncodedFrame(out, key, pts, str(self._codec), width, height)

    def _encode_ffmpeg(
        self, frame: av.VideoFrame, pts: int, want_key: bool, changed: Sequence[Rect] | None
    ) -> tuple[bytes, bool]:
        ctx = self._ctx
        if self._codec is Codec.H264:
            if self._opened_qmax is None and ctx.bit_rate != self._x264_bitrate():
                # Picked up by libx264's reconfig before the next frame.
                ctx.bit_rate = self._x264_bitrate()
            self._hints.attach(frame, None if want_key else changed)
        frame.pts = pts
        frame.time_base = TIME_BASE
        _pt = av.video.frame.PictureType
        frame.pict_type = _pt.I if want_key else _pt.NONE
        packets = ctx.encode(frame)
        return b"".join(bytes(p) for p in packets), any(p.is_keyframe for p in packets)

    def _close_ctx(self) -> None:
        if self._vpx is not None:
            self._vpx.close()
        self._vpx = None
        self._ctx = None
        self._size = None

    def close(self) -> None:
        """Drop the codec context (the next frame reopens it with a key frame)."""
        self._close_ctx()
        self._force_key = True
