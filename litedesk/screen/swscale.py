"""BGRA straight into the encoder's yuv420p planes: libswscale through ctypes.

PyAV converts whole frames: to put a changed box into the persistent
picture (L{litedesk.screen.yuv_canvas.YuvCanvas}) it took three copies, the
box's rows from the grab into a BGRA frame, PyAV's conversion into a new
yuv420p frame, and that frame's rows into the picture's planes, each row a
Python slice assignment (about 1,000 of them for a window moving over the
desktop).  libswscale itself reads from any pointer and stride: one
C{sws_scale} call reads the box where the grab holds it.  It does not write
to any: its vector code writes rows in blocks of 16 pixels, past the box's
right edge (measured: a 232-pixel row wrote 240), which in the picture
would overwrite pixels beside the box.  So it writes into planes of its own
with room to spare, and libavutil's C{av_image_copy_plane} copies the box
into the picture, one call a plane.  It may read past the box's right edge
in the same way: the caller keeps 64 bytes after the box's last pixel inside
the source (L{DirectConverter.READ_SLACK}).

Same conversion as PyAV's C{reformat(format="yuv420p",
interpolation="POINT")} with its default colour settings (libswscale's
defaults: BT.601, limited range), byte for byte (tests/
test_screen_swscale.py).  L{DirectConverter.get} returns C{None} when the
library or its functions cannot be found; callers then convert through PyAV.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import av  # noqa: F401 - maps PyAV's libswscale and libavutil, looked up below

from .loaded_libs import loaded_library, typed

__all__ = ["DirectConverter"]

# libavutil/pixfmt.h
_AV_PIX_FMT_YUV420P = 0
_AV_PIX_FMT_BGRA = 28
# libswscale/swscale.h
_SWS_POINT = 0x10

_Ptrs = ctypes.c_void_p * 4
_Ints = ctypes.c_int * 4


@functools.cache
def _functions() -> tuple[ctypes.CDLL, Any] | None:
    """libswscale, and libavutil's C{av_image_copy_plane}, typed; looked up once."""
    lib = loaded_library("libswscale", "sws_getCachedContext", "sws_scale")
    util = loaded_library("libavutil", "av_image_copy_plane")
    if lib is None or util is None:
        return None
    v, i = ctypes.c_void_p, ctypes.c_int
    vp, ip = ctypes.POINTER(v), ctypes.POINTER(i)
    typed(lib, "sws_getCachedContext", v, v, *(i,) * 7, v, v, v)
    typed(lib, "sws_scale", i, v, vp, ip, i, i, vp, ip)
    typed(lib, "sws_freeContext", None, v)
    copy = typed(util, "av_image_copy_plane", None, v, i, v, i, i, i)
    return lib, copy


class DirectConverter:
    """BGRA to yuv420p between caller-given pointers; one per thread.

    Keeps one libswscale context, remade (C{sws_getCachedContext}) when the
    size changes.
    """

    @classmethod
    def get(cls) -> DirectConverter | None:
        """A converter, or C{None} if libswscale cannot be called here."""
        found = _functions()
        return None if found is None else cls(*found)

    # Bytes past the box's last source pixel libswscale may read.
    READ_SLACK = 64
    # libswscale's planes: rows padded to this many bytes, plus as many spare.
    _ALIGN = 64

    def __init__(self, lib: ctypes.CDLL, copy_plane: Any) -> None:
        self._sws = lib
        self._copy_plane = copy_plane
        self._ctx: int | None = None
        self._size = (0, 0)
        self._scratch = ctypes.create_string_buffer(0)
        self._layout: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 0, 0), (0, 0, 0))

    def _planes(self, width: int, height: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Addresses and strides of libswscale's own output planes."""
        a = self._ALIGN
        ys = (width + 2 * a - 1) // a * a
        cs = (width // 2 + 2 * a - 1) // a * a
        need = ys * height + 2 * cs * (height // 2) + a
        if len(self._scratch) < need:
            self._scratch = ctypes.create_string_buffer(need)
        base = (ctypes.addressof(self._scratch) + a - 1) // a * a
        u = base + ys * height
        v = u + cs * (height // 2)
        return (base, u, v), (ys, cs, cs)

    def convert(
        self,
        src: int,
        src_stride: int,
        width: int,
        height: int,
        dst: tuple[int, int, int],
        dst_strides: tuple[int, int, int],
    ) -> None:
        """Convert C{width x height} BGRA pixels at address C{src} into the
        three planes at C{dst} (each already offset to the box's corner).

        The caller guarantees every address: C{src} and C{dst} must hold the
        box at those strides, with L{READ_SLACK} bytes readable after the
        source's last pixel, and C{width} and C{height} must be even.

        @raise RuntimeError: libswscale refused the size.
        """
        lib = self._sws
        if (width, height) != self._size or self._ctx is None:
            ctx = lib.sws_getCachedContext(
                self._ctx,
                width,
                height,
                _AV_PIX_FMT_BGRA,
                width,
                height,
                _AV_PIX_FMT_YUV420P,
                _SWS_POINT,
                None,
                None,
                None,
            )
            if not ctx:
                self._ctx, self._size = None, (0, 0)
                raise RuntimeError(f"libswscale has no context for {width}x{height}")
            self._ctx, self._size = ctx, (width, height)
        out, strides = self._planes(width, height)
        done = lib.sws_scale(
            self._ctx,
            _Ptrs(src, None, None, None),
            _Ints(src_stride, 0, 0, 0),
            0,
            height,
            _Ptrs(*out, None),
            _Ints(*strides, 0),
        )
        if done != height:
            raise RuntimeError(f"libswscale converted {done} of {height} rows")
        copy = self._copy_plane
        copy(dst[0], dst_strides[0], out[0], strides[0], width, height)
        for p in (1, 2):
            copy(dst[p], dst_strides[p], out[p], strides[p], width // 2, height // 2)

    def close(self) -> None:
        if self._ctx is not None:
            self._sws.sws_freeContext(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
