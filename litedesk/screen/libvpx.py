"""libvpx's VP9 encoder called directly, for the host's VP9 path.

FFmpeg's libvpx-vp9 wrapper (what PyAV offers) cannot do three things the
host's VP9 needs (measured, bench/screen_pipeline.py): speed 9 (it caps at
8), the loop filter off, and a bitrate or quantizer change on a running
encoder (it ignores later C{bit_rate} changes, so each change cost a reopen
and a key frame).  RustDesk's host drives libvpx directly too
(libs/scrap/src/common/vpxcodec.rs).  This module binds the few entry points
it needs with ctypes, on the libvpx PyAV ships; L{DirectVP9} is one encoder.
When the library or its ABI is not the one described here, L{Libvpx.get}
returns None and L{litedesk.screen.encode.VideoEncoder} uses FFmpeg's
wrapper instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import av
from twisted.logger import Logger

from litedesk.screen.change import Rect
from litedesk.screen.codec import TIME_BASE
from litedesk.screen.vpx_active_map import VP8E_SET_ACTIVEMAP, ActiveMap, VpxActiveMap

__all__ = [
    "CONFIG",
    "CONTROLS",
    "DIRECT_ONLY",
    "DirectVP9",
    "Libvpx",
    "VpxError",
    "VpxUnusable",
    "libvpx_version",
    "parse_vp9_value",
]

_log = Logger()


# -- libvpx, called directly ---------------------------------------------------
#
# The structures below are vpx/vpx_encoder.h and vpx/vpx_image.h of libvpx
# 1.16, encoder ABI 39, on LP64.  libvpx refuses to initialise an encoder
# when the ABI version it is given is not its own, so a libvpx whose layout
# differs is never driven with these: the encoder falls back to FFmpeg's.
# Only the leading fields this module sets are named; every buffer handed to
# libvpx is far larger than its own structure, so even a libvpx with a larger
# configuration cannot write past one before the ABI check turns it down.

_VPX_ENCODER_ABI = 39
_VPX_IMG_FMT_I420 = 0x102
_VPX_DL_REALTIME = 1
_VPX_EFLAG_FORCE_KF = 1
_VPX_FRAME_IS_KEY = 1
_VPX_CODEC_CX_FRAME_PKT = 0
_VPX_KF_DISABLED = 0
_RC_MODES = {"vbr": 0, "cbr": 1, "cq": 2, "q": 3}
_TUNE_CONTENT = {"default": 0, "screen": 1, "film": 2}
_SLACK = 4096  # bytes after every structure libvpx writes
_VPX_UNUSABLE = frozenset({3, 4})  # VPX_CODEC_ABI_MISMATCH, VPX_CODEC_INCAPABLE


class _Rational(ctypes.Structure):
    _fields_: ClassVar = [("num", ctypes.c_int), ("den", ctypes.c_int)]


class _FixedBuf(ctypes.Structure):
    _fields_: ClassVar = [("buf", ctypes.c_void_p), ("sz", ctypes.c_size_t)]


class _EncCfg(ctypes.Structure):
    """The head of C{vpx_codec_enc_cfg_t} (the layer settings follow)."""

    _fields_: ClassVar = [
        ("g_usage", ctypes.c_uint),
        ("g_threads", ctypes.c_uint),
        ("g_profile", ctypes.c_uint),
        ("g_w", ctypes.c_uint),
        ("g_h", ctypes.c_uint),
        ("g_bit_depth", ctypes.c_int),
        ("g_input_bit_depth", ctypes.c_uint),
        ("g_timebase", _Rational),
        ("g_error_resilient", ctypes.c_uint32),
        ("g_pass", ctypes.c_int),
        ("g_lag_in_frames", ctypes.c_uint),
        ("rc_dropframe_thresh", ctypes.c_uint),
        ("rc_resize_allowed", ctypes.c_uint),
        ("rc_scaled_width", ctypes.c_uint),
        ("rc_scaled_height", ctypes.c_uint),
        ("rc_resize_up_thresh", ctypes.c_uint),
        ("rc_resize_down_thresh", ctypes.c_uint),
        ("rc_end_usage", ctypes.c_int),
        ("rc_twopass_stats_in", _FixedBuf),
        ("rc_firstpass_mb_stats_in", _FixedBuf),
        ("rc_target_bitrate", ctypes.c_uint),
        ("rc_min_quantizer", ctypes.c_uint),
        ("rc_max_quantizer", ctypes.c_uint),
        ("rc_undershoot_pct", ctypes.c_uint),
        ("rc_overshoot_pct", ctypes.c_uint),
        ("rc_buf_sz", ctypes.c_uint),
        ("rc_buf_initial_sz", ctypes.c_uint),
        ("rc_buf_optimal_sz", ctypes.c_uint),
        ("rc_2pass_vbr_bias_pct", ctypes.c_uint),
        ("rc_2pass_vbr_minsection_pct", ctypes.c_uint),
        ("rc_2pass_vbr_maxsection_pct", ctypes.c_uint),
        ("rc_2pass_vbr_corpus_complexity", ctypes.c_uint),
        ("kf_mode", ctypes.c_int),
        ("kf_min_dist", ctypes.c_uint),
        ("kf_max_dist", ctypes.c_uint),
        ("_rest", ctypes.c_uint8 * _SLACK),
    ]


class _Image(ctypes.Structure):
    """The head of C{vpx_image_t}: up to the plane pointers and strides."""

    _fields_: ClassVar = [
        ("fmt", ctypes.c_int),
        ("cs", ctypes.c_int),
        ("range", ctypes.c_int),
        ("w", ctypes.c_uint),
        ("h", ctypes.c_uint),
        ("bit_depth", ctypes.c_uint),
        ("d_w", ctypes.c_uint),
        ("d_h", ctypes.c_uint),
        ("r_w", ctypes.c_uint),
        ("r_h", ctypes.c_uint),
        ("x_chroma_shift", ctypes.c_uint),
        ("y_chroma_shift", ctypes.c_uint),
        ("planes", ctypes.c_void_p * 4),
        ("stride", ctypes.c_int * 4),
        ("_rest", ctypes.c_uint8 * _SLACK),
    ]


class _FramePacket(ctypes.Structure):
    """C{vpx_codec_cx_pkt_t} as a frame packet (C{kind} 0), read only."""

    _fields_: ClassVar = [
        ("kind", ctypes.c_int),
        ("buf", ctypes.c_void_p),
        ("sz", ctypes.c_size_t),
        ("pts", ctypes.c_int64),
        ("duration", ctypes.c_ulong),
        ("flags", ctypes.c_uint32),
    ]


# vp8e_enc_control_id values (vpx/vp8cx.h), under the FFmpeg option names
# they correspond to, so that one vocabulary serves both backends.
CONTROLS = {
    "cpu-used": 13,
    "static-thresh": 17,
    "max-intra-rate": 26,
    "tile-columns": 33,
    "frame-parallel": 35,
    "aq-mode": 36,
    "noise-sensitivity": 38,
    "tune-content": 43,
    "row-mt": 55,
    "disable-loopfilter": 69,  # not an FFmpeg option: 0 on, 1 off on non-reference, 2 off
}
CONFIG = {
    "qmin": "rc_min_quantizer",
    "qmax": "rc_max_quantizer",
    "undershoot-pct": "rc_undershoot_pct",
    "overshoot-pct": "rc_overshoot_pct",
    "drop-threshold": "rc_dropframe_thresh",
    "error-resilient": "g_error_resilient",
    "end-usage": "rc_end_usage",  # not an FFmpeg option (it infers CBR from minrate/maxrate)
    # The rate control's buffer model, in milliseconds of the bitrate (not
    # FFmpeg options: its bufsize is in bits and sets the first alone).
    "buffer-ms": "rc_buf_sz",
    "buffer-initial-ms": "rc_buf_initial_sz",
    "buffer-optimal-ms": "rc_buf_optimal_sz",
}


DIRECT_ONLY = ("disable-loopfilter", "end-usage")


class Libvpx:
    """libvpx's encoder API, loaded once per process (or found missing)."""

    _loaded: ClassVar[Libvpx | bool | None] = False

    def __init__(self, lib: ctypes.CDLL) -> None:
        c = ctypes
        self.lib = lib
        lib.vpx_codec_vp9_cx.restype = c.c_void_p
        lib.vpx_codec_vp9_cx.argtypes = []
        lib.vpx_codec_enc_config_default.argtypes = [c.c_void_p, c.c_void_p, c.c_uint]
        lib.vpx_codec_enc_init_ver.argtypes = [
            c.c_void_p,
            c.c_void_p,
            c.c_void_p,
            c.c_long,
            c.c_int,
        ]
        lib.vpx_codec_enc_config_set.argtypes = [c.c_void_p, c.c_void_p]
        # Variadic in C; on LP64 an int passes the same way either side.
        lib.vpx_codec_control_.argtypes = [c.c_void_p, c.c_int, c.c_int]
        # The same function for the controls that take a pointer; indexing
        # makes a second function object, with its own argtypes.
        self.control_ptr = lib["vpx_codec_control_"]
        self.control_ptr.argtypes = [c.c_void_p, c.c_int, c.POINTER(VpxActiveMap)]
        # False once libvpx refused an active map (logged once per process).
        self.active_maps = True
        lib.vpx_codec_encode.argtypes = [
            c.c_void_p,
            c.c_void_p,
            c.c_int64,
            c.c_ulong,
            c.c_long,
            c.c_ulong,
        ]
        lib.vpx_codec_get_cx_data.argtypes = [c.c_void_p, c.POINTER(c.c_void_p)]
        lib.vpx_codec_get_cx_data.restype = c.c_void_p
        lib.vpx_img_wrap.argtypes = [
            c.c_void_p,
            c.c_int,
            c.c_uint,
            c.c_uint,
            c.c_uint,
            c.c_void_p,
        ]
        lib.vpx_img_wrap.restype = c.c_void_p
        lib.vpx_codec_destroy.argtypes = [c.c_void_p]
        lib.vpx_codec_error_detail.argtypes = [c.c_void_p]
        lib.vpx_codec_error_detail.restype = c.c_char_p
        lib.vpx_codec_err_to_string.argtypes = [c.c_int]
        lib.vpx_codec_err_to_string.restype = c.c_char_p
        lib.vpx_codec_version_str.restype = c.c_char_p
        self.version = (lib.vpx_codec_version_str() or b"").decode("ascii", "replace")

    @classmethod
    def get(cls) -> Libvpx | None:
        if cls._loaded is False:
            cls._loaded = cls._load()
        return cls._loaded if isinstance(cls._loaded, Libvpx) else None

    @classmethod
    def disable(cls) -> None:
        """Use FFmpeg's VP9 from now on (this libvpx cannot run an encoder)."""
        cls._loaded = None

    @classmethod
    def _load(cls) -> Libvpx | None:
        if sys.platform == "win32" or ctypes.sizeof(ctypes.c_long) != 8:
            return None  # the structures above are LP64
        # The copy bundled with PyAV's wheels first: it is the one known to
        # work with the FFmpeg the rest of this module uses.
        wheel_libs = Path(av.__file__).resolve().parent.parent / "av.libs"
        candidates = [str(p) for p in sorted(wheel_libs.glob("libvpx*.so*"))]
        system = ctypes.util.find_library("vpx")
        if system:
            candidates.append(system)
        for path in candidates:
            try:
                return cls(ctypes.CDLL(path))
            except (OSError, AttributeError) as e:
                _log.info("libvpx at {path} not usable: {error}", path=path, error=str(e))
        return None

    def error(self, ctx: Any, err: int) -> str:
        text = (self.lib.vpx_codec_err_to_string(err) or b"").decode("utf-8", "replace")
        detail = self.lib.vpx_codec_error_detail(ctypes.byref(ctx))
        return f"{text}: {detail.decode('utf-8', 'replace')}" if detail else text


def libvpx_version() -> str | None:
    """The version of the libvpx VP9 encodes with directly, or C{None} (FFmpeg's)."""
    vpx = Libvpx.get()
    return vpx.version if vpx is not None else None


class VpxError(Exception):
    """libvpx refused a setting or a frame."""


class VpxUnusable(VpxError):
    """libvpx cannot run an encoder at all here (e.g. another ABI)."""


class DirectVP9:
    """One libvpx VP9 encoder for one frame size."""

    def __init__(
        self,
        vpx: Libvpx,
        width: int,
        height: int,
        *,
        bitrate: int,
        qmin: int,
        qmax: int,
        threads: int,
        controls: Mapping[str, int],
        config: Mapping[str, int],
    ) -> None:
        self._vpx = vpx
        lib = vpx.lib
        iface = lib.vpx_codec_vp9_cx()
        cfg = _EncCfg()
        err = lib.vpx_codec_enc_config_default(iface, ctypes.byref(cfg), 0)
        if err:
            raise VpxUnusable(f"no default configuration: error {err}")
        cfg.g_w, cfg.g_h = width, height
        cfg.g_threads = threads
        cfg.g_timebase = _Rational(TIME_BASE.numerator, TIME_BASE.denominator)
        cfg.g_lag_in_frames = 0  # libvpx would otherwise hold back 25 frames
        cfg.g_error_resilient = 0
        cfg.rc_dropframe_thresh = 0  # a dropped frame would reach the viewer as nothing
        cfg.rc_end_usage = _RC_MODES["vbr"]
        cfg.kf_mode = _VPX_KF_DISABLED  # key frames on request only
        cfg.rc_target_bitrate = max(1, bitrate // 1000)
        cfg.rc_min_quantizer, cfg.rc_max_quantizer = qmin, qmax
        for key, value in config.items():
            setattr(cfg, CONFIG[key], value)
        self._cfg = cfg
        # vpx_codec_ctx_t is 56 bytes; the slack keeps a larger one in bounds.
        self._ctx = (ctypes.c_uint8 * (64 + _SLACK))()
        err = lib.vpx_codec_enc_init_ver(
            ctypes.byref(self._ctx), iface, ctypes.byref(cfg), 0, _VPX_ENCODER_ABI
        )
        if err:
            # Another ABI, or a build without the VP9 encoder, is this
            # library for good; anything else is these settings.
            kind = VpxUnusable if err in _VPX_UNUSABLE else VpxError
            raise kind(f"encoder refused to start: {vpx.error(self._ctx, err)}")
        # Destroyed when this object goes, whether or not close() ran; not at
        # interpreter exit, when a worker thread might still be encoding.
        self._finalizer = weakref.finalize(self, lib.vpx_codec_destroy, ctypes.byref(self._ctx))
        self._finalizer.atexit = False
        for name, value in controls.items():
            err = lib.vpx_codec_control_(ctypes.byref(self._ctx), CONTROLS[name], value)
            if err:
                self.close()
                raise VpxError(f"{name}={value} refused: {vpx.error(self._ctx, err)}")
        self._img = _Image()
        self._size = (width, height)
        self._map = ActiveMap(width, height)
        self._map_on = False  # whether libvpx holds a map of changed blocks

    def configure(self, *, bitrate: int, qmin: int, qmax: int) -> None:
        """New rate and quantizer range for the next frame, without a key frame."""
        cfg = self._cfg
        cfg.rc_target_bitrate = max(1, bitrate // 1000)
        cfg.rc_min_quantizer, cfg.rc_max_quantizer = qmin, qmax
        err = self._vpx.lib.vpx_codec_enc_config_set(ctypes.byref(self._ctx), ctypes.byref(cfg))
        if err:
            raise VpxError(f"reconfiguration refused: {self._vpx.error(self._ctx, err)}")

    def _set_active_map(self, changed: Sequence[Rect] | None, key: bool) -> bool:
        """Tell libvpx which blocks changed (L{litedesk.screen.vpx_active_map});
        whether the frame must be a key frame to be right."""
        vpx = self._vpx
        if not vpx.active_maps:
            return False
        if key or changed is None:
            if not self._map_on:
                return False  # off already: libvpx codes every block
            arg = self._map.everything
        else:
            arg = self._map.fill(changed)
        err = vpx.control_ptr(ctypes.byref(self._ctx), VP8E_SET_ACTIVEMAP, ctypes.byref(arg))
        if err:
            vpx.active_maps = False
            _log.warn(
                "libvpx refused an active map, every block is analysed: {error}",
                error=vpx.error(self._ctx, err),
            )
            # A map libvpx still holds would skip blocks that changed; a key
            # frame turns it off.
            must_key, self._map_on = self._map_on, False
            return must_key
        self._map_on = arg is self._map.changed
        return False

    def encode(
        self,
        frame: av.VideoFrame,
        pts: int,
        duration: int,
        key: bool,
        changed: Sequence[Rect] | None = None,
    ) -> tuple[bytes, bool]:
        """Encode one yuv420p frame of this encoder's size; (data, is key frame).

        @param changed: the rectangles that differ from the frame this
            encoder was given last; the blocks wholly outside them are coded
            as unchanged without analysis.  C{None}: unknown, every block
            is analysed.
        """
        lib = self._vpx.lib
        key = self._set_active_map(changed, key) or key
        img = self._img
        planes = frame.planes
        w, h = self._size
        # vpx_img_wrap fills in format, sizes and chroma shifts; the plane
        # pointers it derives for a packed buffer are then replaced by
        # PyAV's, which are padded per row.  Nothing is copied here.
        lib.vpx_img_wrap(ctypes.byref(img), _VPX_IMG_FMT_I420, w, h, 1, planes[0].buffer_ptr)
        for i in range(3):
            img.planes[i] = planes[i].buffer_ptr
            img.stride[i] = planes[i].line_size
        ctx = ctypes.byref(self._ctx)
        flags = _VPX_EFLAG_FORCE_KF if key else 0
        err = lib.vpx_codec_encode(ctx, ctypes.byref(img), pts, duration, flags, _VPX_DL_REALTIME)
        if err:
            raise VpxError(f"encoding failed: {self._vpx.error(self._ctx, err)}")
        chunks: list[bytes] = []
        is_key = False
        it = ctypes.c_void_p()
        while pkt := lib.vpx_codec_get_cx_data(ctx, ctypes.byref(it)):
            packet = _FramePacket.from_address(pkt)
            if packet.kind == _VPX_CODEC_CX_FRAME_PKT:
                chunks.append(ctypes.string_at(packet.buf, packet.sz))
                is_key = is_key or bool(packet.flags & _VPX_FRAME_IS_KEY)
        return b"".join(chunks), is_key

    def close(self) -> None:
        self._finalizer()


def parse_vp9_value(name: str, value: str) -> int | None:
    """A VP9 option's value as libvpx takes it, or C{None} if it is not one.

    Numbers are decimal integers; C{tune-content} and C{end-usage} also take
    FFmpeg's names (C{screen}, C{cbr}, ...).
    """
    table = {"tune-content": _TUNE_CONTENT, "end-usage": _RC_MODES}.get(name, {})
    if value in table:
        return table[value]
    text = value.strip()
    digits = text[1:] if text[:1] in "+-" else text
    if not digits.isascii() or not digits.isdigit():
        return None
    return int(text)
