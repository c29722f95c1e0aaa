"""Converted pictures into a Tk photo image with one copy, Tk's own.

C{ImageTk.PhotoImage.paste} first copies every picture into a Pillow
memory block of the photo's mode (Pillow 10+ images are not single blocks,
and the window's pictures are libswscale's buffers, read in place), then
hands that block to C{Tk_PhotoPutBlock}, which copies it again into the
photo.  At 1200x675 the first copy cost the viewer about 1.8 ms a frame,
some 5 % of a core at 30 fps (bench/viewer_window.py, bench/README.rst).

L{PhotoWriter} calls C{Tk_PhotoPutBlock} itself on the converted frame's
buffer, as Pillow's C{_imagingtk} does on its block: libtk is already
loaded by C{_tkinter} (L{litedesk.viewer.tk_native}), and the interpreter
is the one of the window's C{Tk}.  The block says "4 bytes a pixel, R G B,
no alpha" (the alpha offset equal to the red one, as Pillow does for RGB),
so Tk takes every pixel as opaque and keeps no transparency region.  And
only the rows that changed since the picture the photo holds are put
(L{changed_rows}): Tk's own work is per pixel put.  Where libtk cannot be
found (a Python whose Tk is linked in statically), C{available} is false
and the frame view keeps Pillow's way.  Tk thread only, as every Tk call.
"""

from __future__ import annotations

import ctypes
from typing import Any

from twisted.logger import Logger

from litedesk.screen.change import memcmp
from litedesk.viewer.tk_native import loaded_library

__all__ = ["PhotoWriter", "changed_rows"]

_log = Logger()

#: C{TK_PHOTO_COMPOSITE_SET} (tk.h): the block replaces the photo's pixels.
_COMPOSITE_SET = 1


class _PhotoImageBlock(ctypes.Structure):
    """C{Tk_PhotoImageBlock} (tk.h, unchanged since Tk 8.3)."""

    _fields_ = (
        ("pixelPtr", ctypes.c_void_p),
        ("width", ctypes.c_int),
        ("height", ctypes.c_int),
        ("pitch", ctypes.c_int),
        ("pixelSize", ctypes.c_int),
        ("offset", ctypes.c_int * 4),
    )


class PhotoWriter:
    """Puts RGBA frames (PyAV C{VideoFrame}s, one plane) into Tk photo images.

    @ivar available: C{Tk_PhotoPutBlock} was found; when false, L{put}
        must not be called (use C{ImageTk.PhotoImage.paste}).
    """

    def __init__(self, widget: Any) -> None:
        """
        @param widget: any widget of the window (its Tcl interpreter is used).
        """
        import _tkinter  # noqa: F401 (libtk is loaded with it)

        self._interp = ctypes.c_void_p(widget.tk.interpaddr())
        lib = loaded_library("libtk", "Tk_PhotoPutBlock", "Tk_FindPhoto")
        self.available = lib is not None
        if lib is None:
            _log.info("libtk not found in this process: pictures go through Pillow")
            return
        find = lib.Tk_FindPhoto
        find.restype = ctypes.c_void_p
        find.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        put = lib.Tk_PhotoPutBlock
        put.restype = ctypes.c_int
        put.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.POINTER(_PhotoImageBlock),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
        )
        self._find = find
        self._put = put

    def put(self, photo: object, frame: Any, rows: tuple[int, int] | None = None) -> bool:
        """Copy C{frame}'s pixels into the photo named C{str(photo)} at 0,0.

        @param frame: an RGBA (or RGB0) C{av.VideoFrame} no larger than the
            photo is meant to be shown; Tk grows the photo to its size.
        @param rows: only rows C{top} to C{bottom} (exclusive), the rest of
            the photo being the same already (see L{changed_rows}): Tk then
            converts, sends to the X server and redraws only those.
        @return: C{False} if Tk has no such photo or refused the block
            (out of memory); nothing was changed then.
        """
        handle = self._find(self._interp, str(photo).encode())
        if not handle:
            return False
        plane = frame.planes[0]
        width, height, pitch = frame.width, frame.height, plane.line_size
        if pitch < 4 * width or plane.buffer_size < pitch * height:
            raise ValueError(f"not a packed 4-byte picture: {frame.format.name}")
        top, bottom = (0, height) if rows is None else rows
        if not 0 <= top < bottom <= height:
            raise ValueError(f"rows {rows!r} of a picture {height} high")
        block = _PhotoImageBlock(
            plane.buffer_ptr + top * pitch,
            width,
            bottom - top,
            pitch,
            4,
            (ctypes.c_int * 4)(0, 1, 2, 0),
        )
        ok: int = self._put(
            self._interp, handle, ctypes.byref(block), 0, top, width, bottom - top, _COMPOSITE_SET
        )
        return ok == 0


def changed_rows(new: Any, old: Any) -> tuple[int, int] | None:
    """The band of rows in which two pictures of the same layout differ.

    A desktop mostly changes in a part of the screen (a line typed, a
    window moved), and Tk's cost of a put is per pixel (it converts the
    block for the X visual and sends it to the X server, then the canvas
    redraws it): putting only the changed band saves that for the rest.
    Found with C{memcmp} (which stops at the first difference) bisecting
    from the top and from the bottom: at most about one pass over the
    picture, with the GIL released.

    @param new: an RGBA C{av.VideoFrame} (one plane).
    @param old: the picture the photo holds now, or C{None}.
    @return: C{(top, bottom)}, bottom exclusive; the whole height when the
        pictures cannot be compared (no old one, another size or layout);
        C{None} when they are the same.
    """
    height = new.height
    whole = (0, height)
    if old is None or (old.width, old.height) != (new.width, height):
        return whole
    a, b = new.planes[0], old.planes[0]
    pitch = a.line_size
    if b.line_size != pitch or min(a.buffer_size, b.buffer_size) < pitch * height:
        return whole
    pa, pb = a.buffer_ptr, b.buffer_ptr

    def same(first: int, last: int) -> bool:
        # Rows first..last-1 equal in both pictures.
        n = (last - first) * pitch
        return n == 0 or int(memcmp(pa + first * pitch, pb + first * pitch, n)) == 0

    if same(0, height):
        return None
    lo, hi = 0, height - 1  # the first changed row is in lo..hi
    while lo < hi:
        mid = (lo + hi) // 2
        if same(lo, mid + 1):
            lo = mid + 1
        else:
            hi = mid
    top = lo
    lo, hi = top, height - 1  # the last changed row is in lo..hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if same(mid, hi + 1):
            hi = mid - 1
        else:
            lo = mid
    return top, lo + 1
