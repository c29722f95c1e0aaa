"""Tell libx264 which macroblocks did not change: FFmpeg's video hint side data.

The damage path knows exactly which boxes of the picture differ from the
frame the encoder saw last (memcmp, row by row).  libx264 does not: it
analyses all 8,160 macroblocks of a 1080p frame every time, motion search
and all, to find that most of them are the same.  libx264 can be told
(C{x264_image_properties_t.mb_info}, C{X264_MBINFO_CONSTANT}): a macroblock
marked constant is coded as skipped without analysis.  FFmpeg's wrapper
passes that on when the context is opened with its C{mb_info} option and
the frame carries C{AV_FRAME_DATA_VIDEO_HINT} side data (libavutil's
C{AVVideoHint}: the changed rectangles; every macroblock outside them is
constant).

PyAV reads side data but cannot attach it, so this module does, through
libavutil's C{av_video_hint_create_side_data} called with ctypes on the
C{AVFrame} behind the PyAV frame.  PyAV does not expose that pointer
either; it is the first field of its C{Frame} object after the object
header and the Cython method table.  L{VideoHints} reads it there and
trusts it only after checking that the C{AVFrame} it points to has the
frame's size, pixel format, first plane pointer and stride; if anything
does not match, or libavutil has no such function, hints are off (logged
once) and frames are encoded as before.  PyAV's own view of a frame's side
data (C{frame.side_data}) is a list made on first use that does not see
what is added here; nothing in LiteDesk reads it on the encoder's frames.

The hint must cover every change since the frame the encoder coded last,
or a changed macroblock would be skipped and stay wrong on the viewer
until the next key frame: the caller passes the union of the boxes that
differ (L{litedesk.screen.damage_frames.DamagePath}) since then, and
C{None} when it does not know, which removes the hint.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Sequence

import av
from twisted.logger import Logger

from .change import Rect, bounding_box
from .loaded_libs import loaded_library, typed

__all__ = ["VideoHints", "avframe_address", "libavutil"]

_log = Logger()

# libavutil/frame.h: enum AVFrameSideDataType (stable since FFmpeg 7.0).
_AV_FRAME_DATA_VIDEO_HINT = 27
# libavutil/video_hint.h: AVVideoHintType.
_AV_VIDEO_HINT_TYPE_CHANGED = 1
# The AVFrame pointer's place in PyAV's Frame object: PyObject_HEAD (two
# pointers), then Cython's vtable pointer, then C{cdef lib.AVFrame *ptr}.
_PTR_OFFSET = 3 * ctypes.sizeof(ctypes.c_void_p)


class _FrameHead(ctypes.Structure):
    # The first fields of AVFrame (libavutil/frame.h), unchanged since FFmpeg 1.
    _fields_ = [
        ("data", ctypes.c_void_p * 8),
        ("linesize", ctypes.c_int * 8),
        ("extended_data", ctypes.c_void_p),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("nb_samples", ctypes.c_int),
        ("format", ctypes.c_int),
    ]


class _Hint(ctypes.Structure):
    # libavutil/video_hint.h: AVVideoHint; the AVVideoRect array follows at
    # rect_offset, each rect_size bytes.
    _fields_ = [
        ("nb_rects", ctypes.c_size_t),
        ("rect_offset", ctypes.c_size_t),
        ("rect_size", ctypes.c_size_t),
        ("type", ctypes.c_int),
    ]


class _VideoRect(ctypes.Structure):
    _fields_ = [
        ("x", ctypes.c_uint32),
        ("y", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
    ]


def avframe_address(frame: av.VideoFrame) -> int | None:
    """The C{AVFrame *} behind a C{yuv420p} PyAV frame, or C{None} if what is
    found there is not that frame's (see the module docstring)."""
    ptr = ctypes.c_void_p.from_address(id(frame) + _PTR_OFFSET).value
    if not ptr:
        return None
    head = _FrameHead.from_address(ptr)
    plane = frame.planes[0]
    ok = (
        head.width == frame.width
        and head.height == frame.height
        and head.data[0] == plane.buffer_ptr
        and head.linesize[0] == plane.line_size
        and frame.format.name == "yuv420p"
        and head.format == 0  # AV_PIX_FMT_YUV420P
    )
    return ptr if ok else None


@functools.cache
def libavutil() -> ctypes.CDLL | None:
    """The libavutil PyAV loaded, if it can create video hints (looked up once)."""
    return loaded_library("libavutil", "av_video_hint_create_side_data")


class VideoHints:
    """Attaches the changed rectangles to PyAV frames as C{AVVideoHint} side data.

    @ivar usable: C{False} once hints are found impossible here; L{attach}
        then does nothing and returns C{False}.
    """

    # More rectangles than this go as their bounding box: a hint is advice
    # for the encoder, and libx264's wrapper walks each one.
    MAX_RECTS = 64

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._loaded = False
        self.usable = True

    def _load(self) -> ctypes.CDLL | None:
        if not self._loaded:
            self._loaded = True
            lib = libavutil()
            if lib is None:
                self._off("libavutil has no av_video_hint_create_side_data")
            else:
                v = ctypes.c_void_p
                typed(lib, "av_video_hint_create_side_data", v, v, ctypes.c_size_t)
                typed(lib, "av_frame_remove_side_data", None, v, ctypes.c_int)
                self._lib = lib
        return self._lib

    def _off(self, why: str) -> None:
        if self.usable:
            _log.warn("Encoder hints off, every macroblock is analysed: {why}", why=why)
        self.usable = False
        self._lib = None

    def attach(self, frame: av.VideoFrame, changed: Sequence[Rect] | None) -> bool:
        """Give C{frame} a hint that only C{changed} differs; C{None}: no hint.

        Any hint the frame carried before is removed first (the streamer
        encodes one persistent frame).  Returns whether a hint is attached.
        """
        lib = self._load() if self.usable else None
        if lib is None:
            return False
        ptr = avframe_address(frame)
        if ptr is None:
            self._off("the PyAV frame's AVFrame did not check out")
            return False
        lib.av_frame_remove_side_data(ptr, _AV_FRAME_DATA_VIDEO_HINT)
        if changed is None:
            return False
        rects = list(changed)
        if len(rects) > self.MAX_RECTS:
            rects = [bounding_box(rects)]
        hint_ptr = lib.av_video_hint_create_side_data(ptr, len(rects))
        if not hint_ptr:
            return False  # out of memory: encode without
        hint = _Hint.from_address(hint_ptr)
        hint.type = _AV_VIDEO_HINT_TYPE_CHANGED
        if hint.rect_size < ctypes.sizeof(_VideoRect):
            lib.av_frame_remove_side_data(ptr, _AV_FRAME_DATA_VIDEO_HINT)
            self._off(f"AVVideoRect is {hint.rect_size} bytes")
            return False
        base = hint_ptr + hint.rect_offset
        for i, r in enumerate(rects):
            vr = _VideoRect.from_address(base + i * hint.rect_size)
            vr.x, vr.y, vr.width, vr.height = r.x, r.y, r.width, r.height
        return True
